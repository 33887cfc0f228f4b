"""Probability arithmetic on logits (pure NumPy)."""

import numpy as np
import pytest

from chat.probs import (
    LLAMA_CPP_ORDER,
    TRANSFORMERS_ORDER,
    apply_sampler,
    batch_stats,
    entropy,
    log_softmax,
    top_k,
)

LOGITS = np.log(np.array([0.5, 0.2, 0.15, 0.1, 0.05]))


def test_log_softmax_and_top_k():
    lp = log_softmax(LOGITS + 3.0)  # shifting logits changes nothing
    assert np.allclose(np.exp(lp), [0.5, 0.2, 0.15, 0.1, 0.05])
    assert top_k(lp, 3).tolist() == [0, 1, 2]
    big = np.random.default_rng(0).normal(size=50_000)
    assert top_k(big, 5).tolist() == np.argsort(big)[::-1][:5].tolist()
    assert entropy(np.log(np.full(4, 0.25))) == pytest.approx(np.log(4))


def test_greedy_keeps_the_argmax():
    ids, probs = apply_sampler(LOGITS, "greedy", 1.0, 0, 1.0)
    assert ids.tolist() == [0] and probs.tolist() == [1.0]


def test_top_k_then_renormalise():
    ids, probs = apply_sampler(LOGITS, "sample", 1.0, 2, 1.0)
    assert ids.tolist() == [0, 1] and probs == pytest.approx([0.5 / 0.7, 0.2 / 0.7])


def test_top_p_keeps_the_smallest_set_reaching_p():
    ids, _ = apply_sampler(LOGITS, "sample", 1.0, 0, 0.7)
    assert ids.tolist() == [0, 1]  # 0.5 + 0.2 reaches 0.7
    ids, _ = apply_sampler(LOGITS, "sample", 1.0, 0, 0.71)
    assert ids.tolist() == [0, 1, 2]


def test_the_order_of_temperature_and_top_p_matters():
    # A cold temperature first (transformers) sharpens the distribution, so top-p keeps fewer.
    hf, _ = apply_sampler(LOGITS, "sample", 0.3, 0, 0.8, order=TRANSFORMERS_ORDER)
    llama, _ = apply_sampler(LOGITS, "sample", 0.3, 0, 0.8, order=LLAMA_CPP_ORDER)
    assert len(hf) < len(llama)


def test_repetition_penalty_lowers_seen_tokens():
    logits = np.array([2.0, 1.9, -1.0])
    ids, _ = apply_sampler(logits, "greedy", 1.0, 0, 1.0, repetition_penalty=1.5, recent=[0])
    assert ids.tolist() == [1]  # 2.0 / 1.5 < 1.9


def test_nucleus_on_a_large_vocabulary_sorts_only_what_it_needs():
    logits = np.random.default_rng(1).normal(size=49_152) * 3
    ids, probs = apply_sampler(logits, "sample", 1.0, 0, 0.9)
    p = np.exp(log_softmax(logits))
    order = np.argsort(p)[::-1]
    expected = int(np.searchsorted(np.cumsum(p[order]), 0.9)) + 1
    assert len(ids) == expected and probs.sum() == pytest.approx(1.0)


def test_batch_stats_match_row_by_row():
    rows = np.random.default_rng(2).normal(size=(4, 100)).astype(np.float32)
    lp, ent = batch_stats(rows, [3, 5, 7, 9])
    for i, t in enumerate([3, 5, 7, 9]):
        full = log_softmax(rows[i])
        assert lp[i] == pytest.approx(full[t], abs=1e-4)
        assert ent[i] == pytest.approx(entropy(full), abs=1e-4)
