"""The stand-in backend: deterministic, every capability, every method of the protocol.

It is what the fast tests of wiring, access and orchestration run on; these
tests hold it to the same contracts the real backends meet in test_inspect.py.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from chat.backends.standin import EOS, VOCAB, StandinBackend, reply_for
from chat.engine import ChatEngine
from chat.errors import InputError
from chat.inspection import Inspector
from chat.models import load_backend, resolve_model
from chat.settings import DecodingSettings

SYSTEM = [{"role": "system", "content": "Be brief."}]
GREEDY = {"strategy": "greedy", "max_new_tokens": 40, "repetition_penalty": 1.0}


@pytest.fixture(scope="module")
def standin():
    return StandinBackend()


def final(backend, message, **kw):
    settings = DecodingSettings(**kw.pop("settings", GREEDY))
    *_, last = ChatEngine(backend).stream_turn(message, [], SYSTEM, settings, **kw)
    return last


def test_it_loads_by_name_and_declares_every_capability():
    backend = load_backend(resolve_model(None, "standin"), parallel=3)
    caps = backend.capabilities.to_api()
    assert all(v is True for v in caps["features"].values())
    assert caps["strategies"] == ["beam", "greedy", "sample"] and caps["max_candidates"] > 1
    assert backend.capabilities.parallel == 3 and not backend.capabilities.remote
    assert backend.capabilities.startup_error is None
    backend.close()
    backend.close()  # twice is fine
    assert backend.closed


def test_greedy_replies_follow_the_rule_and_stream(standin):
    result = final(standin, "Hi there")
    assert result.reply == "echo: Hi there" == reply_for("User: Hi there\nAssistant:")
    assert result.stats["finish_reason"] == "stop"
    assert result.stats["backend"] == "standin" and result.stats["remote"] is False
    deltas = list(standin.generate(_request(standin, "Hi"), threading.Event()))
    assert [d.text for d in deltas] == [*"echo: Hi", ""]  # one token a delta, then the end
    assert deltas[-1].finish_reason == "stop" and all(d.tokens == 1 for d in deltas[:-1])


def test_same_seed_same_sample_and_another_seed_differs(standin):
    settings = {"strategy": "sample", "temperature": 1.5, "top_k": 50, "top_p": 1.0,
                "max_new_tokens": 30, "seed": 3}  # fmt: skip
    a = final(standin, "Hello", settings=settings).reply
    assert final(standin, "Hello", settings=settings).reply == a
    assert final(standin, "Hello", settings=settings | {"seed": 4}).reply != a


def test_length_stop_strings_and_cancel(standin):
    short = final(standin, "Hello world", settings=GREEDY | {"max_new_tokens": 4})
    assert short.reply == "echo" and short.stats["finish_reason"] == "length"
    cut = final(standin, "Hello world", settings=GREEDY | {"stop": ["wor"]})
    assert cut.reply == "echo: Hello"
    cancel = threading.Event()
    cancel.set()
    deltas = list(standin.generate(_request(standin, "Hi"), cancel))
    assert [(d.text, d.finish_reason) for d in deltas] == [("", "cancelled")]


def _request(backend, message):
    from chat.backends.base import GenerationRequest

    prompt = backend.render([{"role": "user", "content": message}])
    return GenerationRequest(prompt, DecodingSettings(**GREEDY), 0, 10)


def test_tokens_carry_probabilities_and_a_forced_branch(standin):
    first = final(standin, "Paris", top_logprobs=5)
    tokens = first.tokens[0]
    assert "".join(t["text"] for t in tokens) == first.reply == "echo: Paris"
    for t in tokens:
        assert t["id"] == t["top"][0]["id"] and t["sampler_logprob"] == 0.0
        probs = [math.exp(a["logprob"]) for a in t["top"]]
        assert probs == sorted(probs, reverse=True) and len(probs) == 5
    alternative = tokens[1]["top"][1]
    forced = [tokens[0]["id"], alternative["id"]]
    branch = final(standin, "Paris", top_logprobs=5, forced=forced)
    assert [t["id"] for t in branch.tokens[0][:2]] == forced
    assert branch.tokens[0][1]["logprob"] == pytest.approx(alternative["logprob"], abs=1e-6)


def test_candidates_and_beams(standin):
    sampled = final(standin, "Hi", settings={"strategy": "sample", "temperature": 1.5, "top_p": 1.0,
                                             "num_return_sequences": 3, "seed": 1,
                                             "max_new_tokens": 12})  # fmt: skip
    assert len(sampled.candidates) == 3 and len(set(sampled.candidates)) > 1
    beams = final(standin, "Hi", top_logprobs=2, settings={"strategy": "beam", "num_beams": 3,
                                                           "num_return_sequences": 2,
                                                           "max_new_tokens": 20})  # fmt: skip
    assert beams.candidates[0] == "echo: Hi" and len(beams.candidates) == 2
    assert beams.candidates[1] != beams.candidates[0] and all(beams.tokens)


def test_next_token_scoring_attention_and_anatomy(standin):
    inspector = Inspector(ChatEngine(standin))
    out = inspector.next_token("User: Hi\nAssistant:", 5, DecodingSettings(**GREEDY))
    assert out["candidates"][0]["text"] == "e" and out["candidates"][0]["kept"]
    ids = standin.tokenize("User: Hi\nAssistant: echo: Hi")
    logprobs, entropies = standin.score(ids)
    assert len(logprobs) == len(ids) - 1 and np.all(logprobs <= 0) and np.all(entropies >= 0)
    assert logprobs[-8:].mean() > logprobs[:8].mean()  # the reply follows the rule
    att = inspector.attention("The cat sat.", layer=-1)
    n = len(att["tokens"])
    assert att["layers"] == 2 and len(att["weights"]) == n
    for i, row in enumerate(att["weights"]):
        assert sum(row) == pytest.approx(1.0, abs=1e-3) and all(w == 0 for w in row[i + 1 :])
    ppl = inspector.perplexity("The quick brown fox.")
    assert ppl["perplexity"] > 1


def test_token_ids_are_checked(standin):
    assert standin.piece(EOS) == "</s>" and len(VOCAB) == standin.info.n_vocab
    with pytest.raises(InputError, match="is not a token of this model"):
        standin.piece(len(VOCAB))
    with pytest.raises(InputError):
        standin.next_logits([0, 999])


@pytest.mark.slow  # imports torch and transformers (a tiny model of fixed random weights)
def test_internals_are_a_tiny_torch_model_over_the_same_vocabulary(standin):
    from explain.logit_lens import lens

    model, torch, device = standin.internals()
    assert model.config.vocab_size == standin.info.n_vocab and standin.internals()[0] is model
    ids = standin.tokenize("User: Hi\nAssistant:")
    out = lens(model, torch, standin.piece, ids, device)
    assert len(out["tokens"]) == len(ids)
    again = lens(StandinBackend().internals()[0], torch, standin.piece, ids, device)
    assert again["cells"] == out["cells"]  # fixed weights: the same every time


def test_the_reply_line_names_a_remote_engine_by_its_declared_capability(standin):
    import dataclasses

    from ui.render import stats_line

    local = final(standin, "Hi").stats
    assert "answered by" not in stats_line(local)
    engine = StandinBackend("engine-model")
    engine.capabilities = dataclasses.replace(engine.capabilities, remote=True)
    remote = final(engine, "Hi").stats
    assert stats_line(remote).startswith("answered by engine-model (cpu)")
