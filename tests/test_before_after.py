"""Before and after: base vs tuned replies, the tokens that moved most, held-out perplexity.

A tiny Llama and a LoRA trained in the test on "What is 7 plus 8?" -> "7 + 8 = 15".
"""

from __future__ import annotations

import pytest

from chat.backends.transformers_backend import TransformersBackend
from chat.errors import InputError
from tests.helpers.tiny_export import ANSWER, PROMPT, tiny_adapter
from training.before_after import (
    changed_tokens,
    compare_replies,
    perplexity_before_after,
    reply_logprobs,
)

# Trains or runs torch models for seconds each: outside the one-minute tier.
pytestmark = pytest.mark.slow


ROW = {"messages": [*PROMPT, {"role": "assistant", "content": ANSWER}]}
OTHER = {"messages": [{"role": "user", "content": "Hello there"},
                      {"role": "assistant", "content": "how are you today?"}]}  # fmt: skip


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    base_dir, adapter = tiny_adapter(tmp_path_factory.mktemp("tiny"))
    base = TransformersBackend(str(base_dir), device="cpu")
    tuned = TransformersBackend(str(base_dir), device="cpu", adapter=str(adapter))
    return base, tuned


class LengthReward:
    """A stand-in reward model: longer replies score higher."""

    def score(self, prompt_messages, reply):
        assert prompt_messages[-1]["role"] == "user"
        return len(reply)


def test_replies_side_by_side_with_the_same_seed(models):
    base, tuned = models
    greedy = {"strategy": "greedy", "max_new_tokens": 12}
    rows = compare_replies(base, tuned, [ROW, "Hello there"], greedy, reward=LengthReward())
    first = rows[0]
    assert first["prompt"] == "What is 7 plus 8?" and first["reference"] == ANSWER
    assert first["tuned"] == ANSWER and first["base"] != ANSWER and not first["same"]
    assert first["seed"] == 0 and rows[1]["reference"] is None
    assert first["tuned_reward"] == len(ANSWER) and first["base_reward"] == len(first["base"])
    # Sampling: the same seed and settings give each model's own reply reproducibly.
    sample = {"strategy": "sample", "temperature": 1.0, "max_new_tokens": 8, "seed": 7}
    again = compare_replies(base, tuned, ["Hello there"], sample)
    assert again == compare_replies(base, tuned, ["Hello there"], sample)
    assert again[0]["seed"] == 7


def test_the_trained_answer_is_what_moved_most(models):
    base, tuned = models
    out = changed_tokens(base, tuned, PROMPT, ANSWER, k=3)
    assert "".join(t["text"] for t in out["tokens"]) == ANSWER
    assert out["tuned_logprob"] > out["base_logprob"]
    top = out["most_changed"]
    assert len(top) == 3 and abs(top[0]["change"]) >= abs(top[-1]["change"])
    assert all(t["tuned"] > t["base"] for t in top)
    # The probabilities are those the chat's per-token view shows for each model.
    ids = tuned.tokenize(tuned.render(PROMPT))
    first = next(t for t in out["tokens"] if t["index"] == 0)
    from chat.probs import log_softmax

    assert log_softmax(tuned.next_logits(ids))[first["id"]] == pytest.approx(
        first["tuned_logprob"], abs=1e-4
    )
    with pytest.raises(InputError, match="empty"):
        changed_tokens(base, tuned, PROMPT, "")


def test_held_out_perplexity_falls_on_the_trained_answer(models):
    base, tuned = models
    out = perplexity_before_after(base, tuned, [ROW, OTHER, {"messages": PROMPT}])
    assert len(out["rows"]) == 2  # the row without an answer has nothing to score
    assert out["rows"][0]["tuned"] < out["rows"][0]["base"]
    assert out["tokens"] > 8 and out["change"] == pytest.approx(out["tuned"] - out["base"])
    with pytest.raises(InputError, match="No held-out rows"):
        perplexity_before_after(base, tuned, [{"messages": PROMPT}])


def test_a_reply_longer_than_the_window_is_scored_as_far_as_it_fits(models):
    """Before/after on a long reply compares the tokens that fit, instead of failing the view."""
    base, _ = models
    long_reply = " ".join(["again"] * (base.info.n_ctx + 50))
    ids, lps = reply_logprobs(base, PROMPT, long_reply)
    prompt_ids = base.tokenize(base.render(PROMPT))
    assert len(prompt_ids) + len(ids) == base.info.n_ctx
    assert len(lps) == len(ids) and all(lp <= 0 for lp in lps)
