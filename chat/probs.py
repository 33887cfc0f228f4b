"""Probability arithmetic on one row of logits, shared by every backend (NumPy only).

A model's output for the next position is a vector of logits, one per token in
the vocabulary. Here they become probabilities (log-softmax), the k likeliest
tokens (without sorting the whole vocabulary), and the distribution a sampler
actually draws from after repetition penalty, top-k, top-p and temperature,
applied in the order the backend applies them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# The order each runtime applies its sampler steps in (it changes what top-p keeps:
# llama.cpp cuts by top-p before the temperature, transformers after it).
LLAMA_CPP_ORDER = ("penalty", "top_k", "top_p", "temperature")
TRANSFORMERS_ORDER = ("penalty", "temperature", "top_k", "top_p")
PENALTY_LAST_N = 64  # llama.cpp looks back this many tokens for the repetition penalty


@dataclass
class TokenProb:
    """One token, its log-probability, and (when known) its log-probability after the sampler.

    ``sampler_logprob``: None where the sampler's view was not computed; ``-inf``
    when the sampler removed the token.
    """

    id: int
    text: str
    logprob: float
    sampler_logprob: float | None = None

    def to_api(self) -> dict:
        """The dict the API returns for one alternative (``kept`` only where known)."""
        out = {"text": self.text, "id": self.id, "logprob": round(self.logprob, 5)}
        if self.sampler_logprob is not None:
            out["kept"] = bool(np.isfinite(self.sampler_logprob))
            out["sampler_logprob"] = _round(self.sampler_logprob)
        return out


@dataclass
class TokenInfo:
    """A generated token: its log-probability under the model, and the top alternatives.

    ``logprob`` and ``top`` come from the model's own distribution (log-softmax
    of the raw logits); ``sampler_logprob`` is the token's log-probability in
    what the sampler drew from (None where it was not computed; ``-inf`` when
    the sampler had removed it, as a forced token may be).
    """

    id: int
    text: str
    logprob: float
    top: list[TokenProb] = field(default_factory=list)
    sampler_logprob: float | None = None

    def to_api(self) -> dict:
        """The dict the API returns for one token."""
        return {
            "text": self.text,
            "id": self.id,
            "logprob": round(self.logprob, 5),
            "sampler_logprob": _round(self.sampler_logprob),
            "top": [t.to_api() for t in self.top],
        }


def _round(x: float | None) -> float | None:
    if x is None:
        return None
    return round(x, 5) if np.isfinite(x) else None


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities from logits (float64, numerically stable)."""
    x = np.asarray(logits, dtype=np.float64)
    m = np.max(x[np.isfinite(x)]) if np.isfinite(x).any() else 0.0
    return x - (m + np.log(np.sum(np.exp(x - m))))


def top_k(logprobs: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest values, largest first (argpartition, then sort only k)."""
    k = max(0, min(int(k), logprobs.shape[-1]))
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    part = np.argpartition(logprobs, -k)[-k:]
    return part[np.argsort(logprobs[part])[::-1]]


def entropy(logprobs: np.ndarray) -> float:
    """Predictive entropy in nats: how spread out the distribution is."""
    p = np.exp(logprobs)
    finite = np.isfinite(logprobs)
    return float(-np.sum(p[finite] * logprobs[finite]))


def batch_stats(rows: np.ndarray, targets: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """For each row of logits: the log-probability of its target token, and the entropy."""
    z = np.asarray(rows, dtype=np.float32)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    total = e.sum(axis=1)
    lse = np.log(total)
    lp = z[np.arange(len(targets)), targets] - lse
    ent = lse - (e * z).sum(axis=1) / total
    return lp.astype(np.float64), ent.astype(np.float64)


def token_info(
    logits: np.ndarray,
    chosen: int,
    k: int,
    piece,
    text: str,
    sampler: tuple[np.ndarray, np.ndarray] | None = None,
) -> TokenInfo:
    """The ``TokenInfo`` of token ``chosen`` given the logits it was picked from.

    ``piece(id)`` names a token for display; ``sampler`` is ``(kept ids, their
    probabilities)`` when the sampler's view should be reported too.
    """
    lp = log_softmax(logits)
    after = _sampler_logprob(sampler, lp.shape[-1])
    top = [TokenProb(int(i), piece(int(i)), float(lp[i]), after(int(i))) for i in top_k(lp, k)]
    return TokenInfo(int(chosen), text, float(lp[chosen]), top, after(int(chosen)))


def _sampler_logprob(sampler: tuple[np.ndarray, np.ndarray] | None, n_vocab: int):
    """``id -> log-probability after the sampler`` (-inf: removed; None: not computed).

    Every alternative gets its own value, so the reply's tokens and the
    next-token explorer show the same distribution for the same step.
    """
    if sampler is None:
        return lambda _id: None
    dense = np.full(n_vocab, -np.inf)
    with np.errstate(divide="ignore"):
        dense[sampler[0]] = np.log(sampler[1])
    return lambda i: float(dense[i]) if 0 <= i < n_vocab else float("-inf")


def apply_sampler(
    logits: np.ndarray,
    strategy: str,
    temperature: float,
    top_k_: int,
    top_p: float,
    repetition_penalty: float = 1.0,
    recent: list[int] | tuple[int, ...] = (),
    order: tuple[str, ...] = TRANSFORMERS_ORDER,
    penalty_last_n: int | None = PENALTY_LAST_N,
) -> tuple[np.ndarray, np.ndarray]:
    """``(kept token ids, their probabilities)``, most likely first: what the sampler draws from.

    Greedy (or temperature 0) keeps one token. The repetition penalty divides
    positive logits (multiplies negative ones) of the tokens seen in the last
    ``penalty_last_n`` (None: all of ``recent``).
    """
    x = np.array(logits, dtype=np.float64)
    if "penalty" in order and repetition_penalty != 1.0 and len(recent):
        window = list(recent) if penalty_last_n is None else list(recent)[-penalty_last_n:]
        seen = np.unique(np.asarray(window, dtype=np.int64))
        seen = seen[(seen >= 0) & (seen < x.shape[0])]
        x[seen] = np.where(x[seen] > 0, x[seen] / repetition_penalty, x[seen] * repetition_penalty)
    if strategy == "greedy" or temperature <= 0:
        best = int(np.argmax(x))
        return np.array([best]), np.array([1.0])
    ids = np.arange(x.shape[0])
    temp = 1.0
    for step in order:
        if step == "temperature":
            temp = temperature
        elif step == "top_k" and 0 < top_k_ < len(ids):
            keep = top_k(x[ids], top_k_)
            ids = ids[keep]
        elif step == "top_p" and top_p < 1.0:
            ids = _nucleus(x, ids, temp, top_p)
    lp = log_softmax(x[ids] / temp)
    order_ = np.argsort(lp)[::-1]
    return ids[order_], np.exp(lp[order_])


def _nucleus(x: np.ndarray, ids: np.ndarray, temp: float, top_p: float) -> np.ndarray:
    """The smallest set of ``ids`` whose probabilities (at ``temp``) reach ``top_p``.

    Only the likeliest few hundred tokens are sorted unless they do not reach
    ``top_p``: sorting the whole vocabulary for every token would be slow.
    """
    lp = log_softmax(x[ids] / temp)
    k = min(256, len(ids))
    while True:
        best = top_k(lp, k)
        cum = np.cumsum(np.exp(lp[best]))
        reached = int(np.searchsorted(cum, top_p))  # the first position where cum >= top_p
        if reached < len(cum):
            return ids[best[: reached + 1]]
        if k == len(ids):
            return ids[best]
        k = min(len(ids), k * 8)
