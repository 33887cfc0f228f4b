"""Perplexity of a text under the loaded model, and a teaching gauge of "AI-written?".

Perplexity is exp(mean surprisal): how surprised the model is, token by token.
Texts longer than the window are scored with a strided sliding window (the
Hugging Face recipe): each window re-reads some context, and only its new
tokens are scored, so every token is predicted with plenty of context.

The gauge combines three statistics of one model, the way GPTZero describes:
low perplexity (the model finds the text predictable), low burstiness (every
sentence about as predictable as the next; people vary more) and low
predictive entropy. It is uncalibrated: a teaching aid, never a verdict.
"""

from __future__ import annotations

import math
import re

import numpy as np

from chat.errors import Cancelled, InputError

WINDOW = 1024
STRIDE = 512
CAVEATS = (
    "An uncalibrated teaching gauge from one small model's statistics, never a verdict. "
    "Detectors like this misjudge non-native writing (Liang et al. 2023 found 61% of TOEFL "
    "essays flagged as AI-written), short texts, famous texts the model has memorised, and "
    "text from models unlike the one loaded."
)
_SENTENCE_END = re.compile(r"[.!?。！？]+[\"')\]]?\s*$")


def sliding_windows(n: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """``(begin, end, first)`` per window: score positions ``first..end-1`` from ``begin``."""
    spans, prev_end = [], 0
    for begin in range(0, max(n, 1), stride):
        end = min(begin + window, n)
        first = max(prev_end, 1)  # position 0 has no context to predict it from
        if end > first or begin == 0:
            spans.append((begin, end, first))
        prev_end = end
        if end >= n:
            break
    return spans


def perplexity(
    backend, ids: list[int], window: int | None = None, stride: int | None = None, cancel=None
):
    """Per-token log-probabilities and entropies of ``ids`` (position 1 on), by sliding window.

    A set ``cancel`` (a ``threading.Event``) stops it before the next window."""
    window = min(window or WINDOW, backend.info.n_ctx)
    stride = min(stride or STRIDE, window)
    logprobs, entropies = [], []
    for begin, end, first in sliding_windows(len(ids), window, stride):
        if cancel is not None and cancel.is_set():
            raise Cancelled("The scoring was cancelled.")
        lp, ent = backend.score(ids[begin:end], first - begin)
        logprobs.append(lp)
        entropies.append(ent)
    return np.concatenate(logprobs), np.concatenate(entropies), window, stride


def report(backend, ids: list[int], cancel=None) -> dict:
    """The ``/perplexity`` result for the tokens ``ids`` (BOS first if the model uses one);
    a set ``cancel`` stops the scoring."""
    if len(ids) < 3:
        raise InputError("text: give at least a few words to score")
    lp, ent, window, stride = perplexity(backend, ids, cancel=cancel)
    offset = len(ids) - len(lp)  # the first token(s) have no prediction
    pieces = [backend.piece(i) for i in ids]
    tokens = [{"text": pieces[0], "id": int(ids[0]), "logprob": None}] * offset
    tokens = [dict(t) for t in tokens]
    tokens += [
        {"text": pieces[offset + j], "id": int(ids[offset + j]), "logprob": round(float(x), 5)}
        for j, x in enumerate(lp)
    ]
    mean_lp = float(lp.mean())
    per_sentence = _sentence_perplexities(tokens)
    burstiness = float(np.std(np.log(per_sentence))) if len(per_sentence) > 1 else 0.0
    mean_entropy = float(ent.mean())
    surprising = sorted(
        (t for t in tokens if t["logprob"] is not None), key=lambda t: t["logprob"]
    )[:10]
    return {
        "perplexity": round(math.exp(-mean_lp), 4),
        "tokens": tokens,
        "mean_logprob": round(mean_lp, 5),
        "burstiness": round(burstiness, 5),
        "entropy": round(mean_entropy, 5),
        "ai_score": ai_score(-mean_lp, burstiness, mean_entropy),
        "most_surprising": surprising,
        "sentences": [round(p, 3) for p in per_sentence],
        "method": (
            f"Sliding window of {window} tokens with stride {stride}: each token is predicted "
            f"from up to {window} tokens before it; {len(lp)} of {len(ids)} tokens scored "
            "(the first has nothing before it)."
        ),
        "caveats": CAVEATS,
    }


def _sentence_perplexities(tokens: list[dict]) -> list[float]:
    """Perplexity of each sentence (split after ., !, ? and their CJK forms)."""
    out, current = [], []
    for t in tokens:
        if t["logprob"] is None:
            continue
        current.append(t["logprob"])
        if _SENTENCE_END.search(t["text"]) and len(current) >= 3:
            out.append(math.exp(-sum(current) / len(current)))
            current = []
    if len(current) >= 3:
        out.append(math.exp(-sum(current) / len(current)))
    return out


def ai_score(mean_surprisal: float, burstiness: float, mean_entropy: float) -> float:
    """0 (reads human) to 1 (reads machine-like): low perplexity, burstiness and entropy.

    Each statistic is mapped through a logistic around a midpoint typical of
    this app's small model on ordinary English prose; the three are averaged.
    """

    def low(x: float, mid: float, scale: float) -> float:
        return 1.0 / (1.0 + math.exp((x - mid) / scale))

    parts = [
        low(mean_surprisal, 2.6, 0.5),  # log-perplexity; about e^2.6 = 13 perplexity
        low(burstiness, 0.35, 0.12),
        low(mean_entropy, 2.6, 0.5),
    ]
    return round(sum(parts) / len(parts), 4)
