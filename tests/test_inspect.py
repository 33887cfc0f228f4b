"""Inspect on the real bundled model, through llama.cpp and through transformers.

Token probabilities on replies, the next-token distribution, perplexity,
attention, forced branches and prompt anatomy.
"""

from __future__ import annotations

import math
import random

import pytest

from chat.engine import ChatEngine, TurnRequest
from chat.errors import UnsupportedSettingError
from chat.inspection import Inspector, anatomy
from chat.settings import DecodingSettings

SYSTEM = [{"role": "system", "content": "You are a helpful assistant."}]
GREEDY = {"strategy": "greedy", "max_new_tokens": 24, "repetition_penalty": 1.0}
NATURAL = (
    "The quick brown fox jumps over the lazy dog. It was a sunny day, and the children "
    "played in the park until their parents called them home for dinner."
)


@pytest.fixture(params=["llama-cpp", "transformers"])
def backend(request, gguf_backend, smol_transformers):
    return gguf_backend if request.param == "llama-cpp" else smol_transformers


def final(engine, message, **kw):
    settings = DecodingSettings(**kw.pop("settings", GREEDY))
    *_, last = engine.stream_turn(TurnRequest(message, [], SYSTEM, settings, **kw))
    return last


def test_greedy_tokens_carry_probabilities_and_alternatives(backend):
    result = final(ChatEngine(backend), "What is the capital of France?", top_logprobs=10)
    tokens = result.tokens[0]
    assert tokens and "".join(t["text"] for t in tokens).strip() == result.reply
    for t in tokens:
        top = t["top"]
        assert len(top) == 10
        assert t["id"] == top[0]["id"]  # greedy, no repetition penalty: the likeliest token
        probs = [math.exp(a["logprob"]) for a in top]
        assert probs == sorted(probs, reverse=True)
        assert all(0 <= p <= 1 for p in probs) and sum(probs) <= 1 + 1e-6
        assert t["sampler_logprob"] == 0.0  # greedy keeps one token: probability 1
    conf = result.stats["confidence"]
    assert 0 < conf["mean_prob"] <= 1 and conf["least_likely"]["text"] in result.reply


def test_sampled_tokens_report_the_samplers_view(backend):
    settings = {"strategy": "sample", "temperature": 0.7, "top_k": 20, "top_p": 0.9, "seed": 4,
                "max_new_tokens": 16}  # fmt: skip
    result = final(ChatEngine(backend), "Name three fruits.", settings=settings, top_logprobs=5)
    for t in result.tokens[0]:
        # Every token the real sampler drew is among those our replay of it keeps
        # (penalty, top-k, top-p, temperature, in the backend's own order).
        assert t["sampler_logprob"] is not None and t["sampler_logprob"] <= 0


def test_a_forced_alternative_starts_the_branch(backend):
    engine = ChatEngine(backend)
    first = final(engine, "What is the capital of France?", top_logprobs=5)
    tokens = first.tokens[0]
    alternative = tokens[1]["top"][1]  # the runner-up at the second position
    forced = [tokens[0]["id"], alternative["id"]]
    branch = final(engine, "What is the capital of France?", top_logprobs=5, forced=forced)
    btokens = branch.tokens[0]
    assert [t["id"] for t in btokens[:2]] == forced
    assert btokens[1]["logprob"] == pytest.approx(alternative["logprob"], abs=1e-3)
    assert branch.reply.startswith((tokens[0]["text"] + alternative["text"]).strip())


def test_next_token_after_a_raw_text(backend):
    inspector = Inspector(ChatEngine(backend))
    out = inspector.next_token("The capital of France is", 10, DecodingSettings(**GREEDY))
    top = out["candidates"]
    assert top[0]["text"] == " Paris"
    assert [c["prob"] for c in top] == sorted((c["prob"] for c in top), reverse=True)
    assert top[0]["kept"] and top[0]["sampler_prob"] == 1.0 and not top[1]["kept"]
    assert "".join(t["text"] for t in out["tokens"]).endswith("The capital of France is")
    # Greedy generation from the same text picks that same first token.
    ids = backend.tokenize("The capital of France is", special=False)
    assert int(backend.next_logits(ids).argmax()) == top[0]["id"]


def test_next_token_shows_what_the_sampler_keeps(backend):
    inspector = Inspector(ChatEngine(backend))
    settings = DecodingSettings(strategy="sample", temperature=1.0, top_k=3, top_p=1.0)
    out = inspector.next_token("My favourite colour is", 10, settings)
    kept = [c for c in out["candidates"] if c["kept"]]
    assert len(kept) == 3 == out["kept_count"]
    assert sum(c["sampler_prob"] for c in kept) == pytest.approx(1.0, abs=1e-4)
    assert out["sampler"]["order"] == list(backend.sampler_order)


def test_perplexity_of_natural_text_is_far_below_shuffled(backend):
    inspector = Inspector(ChatEngine(backend))
    words = NATURAL.split()
    random.Random(0).shuffle(words)
    natural, shuffled = inspector.perplexity(NATURAL), inspector.perplexity(" ".join(words))
    assert shuffled["perplexity"] > 5 * natural["perplexity"]
    assert natural["tokens"][-1]["logprob"] is not None
    assert "".join(t["text"] for t in natural["tokens"]).endswith(NATURAL)
    assert 0 <= natural["ai_score"] <= 1 and "Sliding window" in natural["method"]
    assert "TOEFL" in natural["caveats"]


def test_perplexity_slides_over_texts_longer_than_the_window(gguf_backend, monkeypatch):
    from chat import perplexity

    monkeypatch.setattr(perplexity, "WINDOW", 64)
    monkeypatch.setattr(perplexity, "STRIDE", 32)
    out = Inspector(ChatEngine(gguf_backend)).perplexity(NATURAL * 4)
    scored = [t for t in out["tokens"] if t["logprob"] is not None]
    assert len(scored) == len(out["tokens"]) - 1 and "window of 64" in out["method"]


def test_a_cancelled_scoring_stops_before_its_next_window(gguf_backend, monkeypatch):
    """Stop (or a departed client) sets the event mid-text: no further window is scored."""
    import threading

    from chat import perplexity
    from chat.errors import Cancelled

    monkeypatch.setattr(perplexity, "WINDOW", 64)
    monkeypatch.setattr(perplexity, "STRIDE", 32)
    cancel, windows = threading.Event(), []
    score = gguf_backend.score

    def score_then_stop(ids, first=1):
        windows.append(len(ids))
        cancel.set()  # as if Stop were pressed while the first window is scored
        return score(ids, first)

    monkeypatch.setattr(gguf_backend, "score", score_then_stop)
    with pytest.raises(Cancelled):
        Inspector(ChatEngine(gguf_backend)).perplexity(NATURAL * 4, cancel)
    assert len(windows) == 1  # of the text's several windows


def test_attention_on_transformers(smol_transformers):
    out = Inspector(ChatEngine(smol_transformers)).attention("The cat sat on the mat.", layer=-1)
    n = len(out["tokens"])
    assert out["layers"] == 30 and out["heads"] > 1 and len(out["weights"]) == n
    for i, row in enumerate(out["weights"]):
        assert len(row) == n and sum(row) == pytest.approx(1.0, abs=1e-3)
        assert all(w == 0 for w in row[i + 1 :])  # causal: nothing attends to the future
    one = Inspector(ChatEngine(smol_transformers)).attention("The cat sat.", layer=0, head=2)
    assert one["head"] == 2 and one["layer"] == 0


def test_attention_is_explained_on_llama_cpp(gguf_backend):
    with pytest.raises(UnsupportedSettingError, match="--backend transformers"):
        Inspector(ChatEngine(gguf_backend)).attention("Hello there.")


def test_beam_candidates_carry_token_probabilities(smol_transformers):
    settings = {"strategy": "beam", "num_beams": 3, "num_return_sequences": 2,
                "max_new_tokens": 12, "repetition_penalty": 1.2}  # fmt: skip
    result = final(ChatEngine(smol_transformers), "Say hello.", settings=settings, top_logprobs=3)
    assert len(result.tokens) == 2 and all(result.tokens)
    for cand, text in zip(result.tokens, result.candidates, strict=True):
        assert "".join(t["text"] for t in cand).strip() == text
    assert result.stats["candidates"][0]["logprob"] < 0


def test_prompt_anatomy_adds_up(backend):
    engine = ChatEngine(backend)
    examples = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    history = [
        {"role": "user", "content": "I like tea."},
        {"role": "assistant", "content": "Nice."},
    ]
    *_, last = engine.stream_turn(
        TurnRequest("And coffee?", history, SYSTEM + examples, DecodingSettings(**GREEDY))
    )
    out = anatomy(backend, last.prompt_messages, last.parts, last.prompt)
    parts = {p["part"]: p["tokens"] for p in out["parts"]}
    assert all(parts[k] > 0 for k in ("system prompt", "persona examples", "earlier turns kept",
                                      "your message"))  # fmt: skip
    used = sum(v for k, v in parts.items() if k not in ("reply budget", "free"))
    assert used == out["prompt_tokens"] == last.stats["prompt_tokens"]
    assert used + parts["reply budget"] + parts["free"] == backend.info.n_ctx
    assert len(out["tokens"]) == out["prompt_tokens"]
