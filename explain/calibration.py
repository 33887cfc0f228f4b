"""Does confidence track accuracy? Multiple-choice questions scored two ways, and calibration.

*Cloze* scoring reads the model's own likelihoods: each option is appended to
``Question: ...\\nAnswer:`` and scored by its mean token log-probability; the
softmax over the options is the confidence. *Letter* scoring asks through the
chat template, with the options labelled A-D, and reads the next-token
probabilities of the four letters. The same model can know the answer (cloze)
and still fail the format (letter): that gap is part of the lesson.

Works on any backend that can score text and give next-token logits
(``scoring`` and ``next_token``), llama.cpp included. Plain data out.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib import resources

import numpy as np

from chat.errors import Cancelled, InputError
from chat.probs import log_softmax

LETTERS = ("A", "B", "C", "D")
SCORINGS = ("cloze", "letter")
BINS = 10


@dataclass(frozen=True)
class Question:
    """One multiple-choice question: ``answer`` is the index of the right option."""

    set: str
    question: str
    options: tuple[str, ...]
    answer: int


def load_questions(name: str = "all") -> list[Question]:
    """The shipped questions (``capitals``, ``arithmetic`` or ``all``)."""
    text = resources.files("explain.data").joinpath("calibration.jsonl").read_text("utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    sets = sorted({r["set"] for r in rows})
    if name != "all" and name not in sets:
        raise InputError(
            f"set: unknown question set {name!r}; choose one of: all, {', '.join(sets)}"
        )
    return [
        Question(r["set"], r["question"], tuple(r["options"]), int(r["answer"]))
        for r in rows
        if name in ("all", r["set"])
    ]


def cloze_probs(backend, q: Question) -> np.ndarray:
    """Confidence over the options from each option's mean token log-probability."""
    context = backend.tokenize(f"Question: {q.question}\nAnswer:", special=False)
    means = []
    for option in q.options:
        ids = backend.tokenize(f"Question: {q.question}\nAnswer: {option}", special=False)
        # The option's tokens are what follows the shared context (tokenizers merge the space).
        start = _common_prefix(context, ids)
        lps, _ = backend.score(ids, first=max(1, start))
        means.append(float(np.mean(lps)) if len(lps) else -math.inf)
    return np.exp(log_softmax(np.array(means)))


def letter_probs(backend, q: Question) -> np.ndarray:
    """Confidence over the options from the next-token probabilities of the letters A-D."""
    listing = "\n".join(f"{L}. {o}" for L, o in zip(LETTERS, q.options, strict=False))
    message = f"{q.question}\n{listing}\nAnswer with the letter only."
    prompt = backend.render([{"role": "user", "content": message}])
    logits = backend.next_logits(backend.tokenize(prompt, special=True))
    lp = log_softmax(logits)
    letter_ids = [_letter_id(backend, L) for L in LETTERS[: len(q.options)]]
    return np.exp(log_softmax(np.array([lp[i] for i in letter_ids])))


def _letter_id(backend, letter: str) -> int:
    ids = backend.tokenize(letter, special=False)
    return ids[-1]


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def run(
    backend,
    questions: list[Question],
    scoring: str = "cloze",
    progress=None,
    cancel=None,
) -> dict:
    """Score every question; accuracy, expected calibration error and the reliability bins."""
    if scoring not in SCORINGS:
        raise InputError(f"scoring: choose one of: {', '.join(SCORINGS)}")
    if not questions:
        raise InputError("No questions to score: choose a question set that has some.")
    score = cloze_probs if scoring == "cloze" else letter_probs
    items = []
    for n, q in enumerate(questions):
        if cancel is not None and cancel.is_set():
            raise Cancelled("Calibration stopped.")
        probs = score(backend, q)
        pick = int(np.argmax(probs))
        items.append(
            {
                "question": q.question,
                "set": q.set,
                "options": list(q.options),
                "answer": q.answer,
                "picked": pick,
                "confidence": round(float(probs[pick]), 5),
                "correct": pick == q.answer,
            }
        )
        if progress is not None:
            progress((n + 1) / len(questions), f"{n + 1}/{len(questions)} questions")
    return summarise(items, scoring)


def summarise(items: list[dict], scoring: str) -> dict:
    """Accuracy, ECE and reliability bins from scored items (``confidence``, ``correct``)."""
    conf = np.array([i["confidence"] for i in items])
    right = np.array([i["correct"] for i in items], dtype=float)
    bins = reliability(conf, right)
    n_options = max(len(i["options"]) for i in items)
    return {
        "scoring": scoring,
        "questions": len(items),
        "accuracy": round(float(right.mean()), 4),
        "chance": round(1 / n_options, 4),
        "mean_confidence": round(float(conf.mean()), 4),
        "ece": round(expected_calibration_error(bins, len(items)), 4),
        "bins": bins,
        "items": items,
    }


def reliability(conf: np.ndarray, right: np.ndarray, n_bins: int = BINS) -> list[dict]:
    """Equal-width confidence bins: ``{low, high, count, confidence, accuracy}`` each."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    out = []
    for b in range(n_bins):
        lo, hi = edges[b], edges[b + 1]
        mask = (conf >= lo) & ((conf < hi) if b < n_bins - 1 else (conf <= hi))
        count = int(mask.sum())
        out.append(
            {
                "low": round(float(lo), 2),
                "high": round(float(hi), 2),
                "count": count,
                "confidence": round(float(conf[mask].mean()), 4) if count else None,
                "accuracy": round(float(right[mask].mean()), 4) if count else None,
            }
        )
    return out


def expected_calibration_error(bins: list[dict], total: int) -> float:
    """Sum over bins of |accuracy - confidence| weighted by the bin's share of questions."""
    if total <= 0:
        return 0.0
    return sum(
        b["count"] / total * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"]
    )


def where_on_curve(bins: list[dict], confidence: float) -> dict | None:
    """The bin a confidence value (say the low-confidence threshold) falls in."""
    for b in bins:
        if b["low"] <= confidence <= b["high"] and b["count"]:
            return b
    return None
