"""Explain views on the real bundled model: attribution, logit lens, neurons, calibration.

Part-level attribution runs on llama.cpp (it only needs scores); the views that
need hidden states and gradients run on the same GGUF dequantized by
transformers.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from chat.errors import Cancelled, InputError, UnsupportedSettingError
from explain import attribution, calibration, neurons, segments
from explain.logit_lens import last_position_logprobs, lens

pytestmark = pytest.mark.model

FACT = "Mira's cat is named Pumpkin."
QUESTION = (
    f"The weather was cold that week. {FACT} Mira drinks tea every morning. "
    "What is the name of Mira's cat?"
)
MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": QUESTION},
]
REPLY = "Mira's cat is named Pumpkin."
TEXT = f"{QUESTION}\nAnswer: Mira's cat is named"


def _sentences(backend):
    parts = segments.from_messages(backend.render, MESSAGES, ["system", "message"])
    return segments.at_level(parts, "sentences")


def _pumpkin(backend) -> attribution.Target:
    """The reply's token " Pump" (the first that needs the fact)."""
    reply = backend.tokenize(REPLY, special=False)
    index = [backend.piece(i) for i in reply].index(" Pump")
    return attribution.Target(reply, index)


def test_ablating_the_fact_lowers_the_answer_and_gets_the_largest_attribution(gguf_backend):
    segs = _sentences(gguf_backend)
    target = _pumpkin(gguf_backend)
    out = attribution.attribute_parts(gguf_backend, segs, target, "ablation")
    rows = [r for r in out["segments"] if r["attribution"] is not None]
    best = max(rows, key=lambda r: r["attribution"])
    assert best["text"].strip() == FACT
    assert best["attribution"] > 0
    # Each ablation attribution is exactly the change when that part alone is removed.
    fact = next(i for i, s in enumerate(segs) if s.text.strip() == FACT)
    without = gguf_backend.tokenize(segments.join(segs, lambda i: i != fact), special=True)
    dropped = attribution.target_logprob(gguf_backend, without, target)
    assert dropped < out["target_logprob"]
    assert best["attribution"] == pytest.approx(out["target_logprob"] - dropped, abs=1e-3)


def test_kernel_shap_sums_to_the_total_change(gguf_backend):
    out = attribution.attribute_parts(
        gguf_backend, _sentences(gguf_backend), _pumpkin(gguf_backend), "kernel_shap", n_samples=40
    )
    assert out["sum_of_attributions"] == pytest.approx(
        out["total_change"], abs=0.05 * abs(out["total_change"]) + 0.05
    )
    assert out["model_calls"] >= 40


def test_parts_of_a_chat_turn_and_passage_reliance(gguf_backend):
    passage = "The Lindqvist lighthouse was painted green in 1931."
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": f"Reference:\n{passage}\n\nWhat colour is the lighthouse?"},
    ]
    segs = segments.from_messages(gguf_backend.render, messages, ["system", "message"], [passage])
    kinds = [s.kind for s in segs if not s.fixed]
    assert kinds == ["system", "message", "passage", "message"]
    reply = gguf_backend.tokenize("The lighthouse is green.", special=False)
    target = attribution.Target(reply)
    out = attribution.passage_reliance(gguf_backend, segs, target)
    assert out["with_passages"] > out["without_passages"]
    assert isinstance(out["answered_from_memory"], bool) and out["verdict"]


def test_cancel_stops_attribution(gguf_backend):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        attribution.attribute_parts(
            gguf_backend, _sentences(gguf_backend), _pumpkin(gguf_backend), cancel=cancel
        )


def test_out_of_vocabulary_target_is_one_sentence(gguf_backend):
    with pytest.raises(InputError, match="is not a token of this model"):
        attribution.attribute_parts(
            gguf_backend, _sentences(gguf_backend), attribution.Target([10**9], 0)
        )


def test_gradients_and_integrated_gradients(smol_transformers):
    b = smol_transformers
    model, torch, device = b.internals()
    ids = b.tokenize(b.render(MESSAGES), special=True)
    target = _pumpkin(b)
    grad = attribution.attribute_tokens(model, torch, ids, len(ids), target, "input_x_gradient")
    assert len(grad["attributions"]) == len(ids) + target.index + 1
    # The fact's tokens matter more to " Pump" than the weather's do.
    pieces = [b.piece(i) for i in ids]
    fact = _span(pieces, FACT)
    weather = _span(pieces, "The weather was cold that week.")
    size = [abs(v) for v in grad["attributions"]]
    assert sum(size[i] for i in fact) > sum(size[i] for i in weather)
    ig = attribution.attribute_tokens(
        model, torch, ids, len(ids), target, "integrated_gradients", steps=8, baseline_id=2
    )
    change = ig["target_logprob"] - ig["baseline_logprob"]
    # The completeness gap is reported as it is: attributions minus the change they explain.
    assert ig["completeness_gap"] is not None
    assert ig["sum_of_attributions"] - change == pytest.approx(ig["completeness_gap"], abs=0.05)


def _span(pieces: list[str], text: str) -> list[int]:
    """Indices of the tokens that spell ``text`` inside the joined pieces."""
    joined = "".join(pieces)
    start = joined.index(text)
    out, at = [], 0
    for i, p in enumerate(pieces):
        if start <= at < start + len(text):
            out.append(i)
        at += len(p)
    return out


def test_logit_lens_last_layer_is_the_real_distribution(smol_transformers):
    b = smol_transformers
    model, torch, device = b.internals()
    ids = b.tokenize("The capital of France is", special=False)
    per_layer = last_position_logprobs(model, torch, ids, device)
    real = np.asarray(b.next_logits(ids), dtype=np.float64)
    real = real - (real.max() + np.log(np.exp(real - real.max()).sum()))
    assert len(per_layer) == model.config.num_hidden_layers
    assert np.allclose(per_layer[-1], real, atol=1e-3)
    out = lens(model, torch, b.piece, ids, device)
    assert out["layers"] == model.config.num_hidden_layers
    assert out["answer"]["id"] == int(np.argmax(real))
    assert out["answer"]["by_layer"][-1] == pytest.approx(math.exp(real.max()), abs=1e-3)


def test_neuron_top_activations_are_reproduced(smol_transformers):
    b = smol_transformers
    model, torch, device = b.internals()
    texts = ["Paris is the capital of France. Rome is the capital of Italy.", "7 plus 8 is 15."]
    idx = neurons.build_index(
        model, torch, lambda t: b.tokenize(t, special=False), texts, device, "smol"
    )
    layer, neuron = 10, int(np.argmax(idx.values[10, :, 0]))
    top = neurons.top_examples(idx, layer, neuron, b.piece)
    assert top and top[0]["position"] >= neurons.SKIP_FIRST
    fresh = neurons.activations(model, torch, idx.chunks[top[0]["chunk"]], device)
    assert fresh[layer, top[0]["position"], neuron] == pytest.approx(
        top[0]["activation"], rel=1e-3, abs=1e-3
    )
    with pytest.raises(InputError, match="layer"):
        neurons.check_neuron(30, 1536, 99, 0)
    acts = neurons.activations(
        model, torch, b.tokenize("Hello there, friend.", special=False), device
    )
    view = neurons.text_neurons(acts, ["x"] * acts.shape[1])
    assert view["tokens"][0]["position"] == 1 and len(view["layers"]) == acts.shape[0]


def test_calibration_beats_chance_with_cloze_scoring(gguf_backend):
    questions = calibration.load_questions("capitals")[::4]
    out = calibration.run(gguf_backend, questions, "cloze")
    assert out["accuracy"] > out["chance"] + 0.15
    assert 0.0 <= out["ece"] <= 1.0
    assert sum(b["count"] for b in out["bins"]) == len(questions)
    letter = calibration.run(gguf_backend, questions[:12], "letter")
    assert 0.0 <= letter["ece"] <= 1.0


def test_internals_missing_on_llama_cpp_says_why(gguf_backend):
    with pytest.raises(UnsupportedSettingError, match="transformers backend"):
        gguf_backend.capabilities.require("internals")
