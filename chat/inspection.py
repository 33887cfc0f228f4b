"""Seeing inside the model: tokens, the next-token distribution, attention, prompt anatomy.

``Inspector`` runs on the engine's backend, one call at a time in a generation
slot (so it never races a chat reply), and returns plain dicts. What a backend
cannot show raises ``UnsupportedSettingError`` with the backend's own reason.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np

from chat.errors import Cancelled, InputError
from chat.probs import apply_sampler, log_softmax, top_k
from chat.settings import DecodingSettings
from chat.text import clean_text

DEFAULT_CONFIDENCE = 0.35  # mean token probability under which a reply is "low confidence"
MAX_INSPECT_CHARS = 20_000
MAX_ATTENTION_TOKENS = 96  # a heatmap of more tokens is unreadable (and slow to draw)


def confidence(tokens: list, threshold: float = DEFAULT_CONFIDENCE) -> dict | None:
    """Reply-level confidence from its tokens: mean log-probability and the least likely token."""
    if not tokens:
        return None
    lps = [t.logprob for t in tokens]
    mean = sum(lps) / len(lps)
    worst = min(range(len(tokens)), key=lambda i: tokens[i].logprob)
    return {
        "mean_logprob": round(mean, 4),
        "mean_prob": round(math.exp(mean), 4),
        "least_likely": {
            "index": worst,
            "text": tokens[worst].text,
            "prob": round(math.exp(tokens[worst].logprob), 4),
        },
        "threshold": threshold,
        "low": math.exp(mean) < threshold,
    }


class Inspector:
    """Inspection calls on the engine's model, each in a generation slot."""

    def __init__(self, engine):
        self.engine = engine

    @property
    def backend(self):
        """The engine's current backend."""
        return self.engine.backend

    @contextmanager
    def slot(self, feature: str, cancel=None):
        """The backend, held in a generation slot, once ``feature`` is known to be available."""
        self.backend.capabilities.require(feature)
        if not self.engine.acquire(cancel):
            raise Cancelled("Cancelled while waiting for the model.")
        try:
            yield self.backend
        finally:
            self.engine.release()

    def _ids(self, text: str, special: bool = True) -> list[int]:
        if not isinstance(text, str) or not text:
            raise InputError("text is empty: type or paste some text first")
        if len(text) > MAX_INSPECT_CHARS:
            raise InputError(
                f"text: {len(text):,} characters; inspect at most {MAX_INSPECT_CHARS:,} at a time"
            )
        return self.backend.tokenize(clean_text(text), special=special)

    def tokens(self, text: str, special: bool = True) -> list[dict]:
        """``[{text, id}]``: how the model splits ``text`` into tokens."""
        b = self.backend
        return [{"text": b.piece(i), "id": int(i)} for i in self._ids(text, special)]

    def next_token(
        self,
        text: str,
        k: int = 10,
        settings: DecodingSettings | None = None,
        special: bool = False,
        cancel=None,
    ) -> dict:
        """The next-token distribution after ``text``, before and after the sampler.

        ``candidates`` are the ``k`` likeliest tokens under the model, each
        with ``kept`` (does the sampler keep it?) and ``sampler_prob`` (its
        probability in what the sampler draws from, renormalised).
        ``special`` parses special-token text (a rendered chat template).
        """
        k = max(1, min(int(k), 50))
        settings = settings or DecodingSettings()
        ids = self._ids(text, special)
        with self.slot("next_token", cancel) as b:
            logits = b.next_logits(ids)
        lp = log_softmax(logits)
        kept_ids, kept_probs = apply_sampler(
            logits,
            settings.strategy,
            settings.temperature,
            settings.top_k,
            settings.top_p,
            settings.repetition_penalty,
            ids,
            b.sampler_order,
            b.penalty_last_n,
        )
        sampler = dict(zip(kept_ids.tolist(), kept_probs.tolist(), strict=True))
        candidates = []
        for i in top_k(lp, k):
            i = int(i)
            candidates.append(
                {
                    "text": b.piece(i),
                    "id": i,
                    "prob": round(float(math.exp(lp[i])), 6),
                    "logprob": round(float(lp[i]), 5),
                    "kept": i in sampler,
                    "sampler_prob": round(sampler[i], 6) if i in sampler else None,
                }
            )
        shown = sum(c["prob"] for c in candidates)
        return {
            "tokens": [{"text": b.piece(i), "id": int(i)} for i in ids],
            "candidates": candidates,
            "rest_prob": round(max(0.0, 1.0 - shown), 6),
            "kept_count": len(kept_ids),
            "sampler": {
                "order": list(b.sampler_order),
                "settings": settings.model_dump(
                    include={"strategy", "temperature", "top_k", "top_p", "repetition_penalty"}
                ),
            },
            "sampled": _sample(kept_ids, kept_probs, settings.seed),
            "backend": b.info.backend,
        }

    def perplexity(self, text: str, cancel=None) -> dict:
        """Perplexity, per-token surprisal and the "AI-written?" gauge of ``text``."""
        from chat import perplexity

        ids = self._ids(text, special=False)
        with self.slot("scoring", cancel) as b:
            return perplexity.report(b, ids, cancel)

    def attention(self, text: str, layer: int = -1, head: int | None = None, cancel=None) -> dict:
        """Attention weights of one layer: one head, or the average over heads."""
        ids = self._ids(text, special=True)
        notices = []
        if len(ids) > MAX_ATTENTION_TOKENS:
            notices.append(
                f"The text has {len(ids)} tokens; the heatmap shows the first "
                f"{MAX_ATTENTION_TOKENS}."
            )
            ids = ids[:MAX_ATTENTION_TOKENS]
        with self.slot("attention", cancel) as b:
            weights, n_layers = b.attention(ids, layer)
        heads = weights.shape[0]
        if head is None:
            chosen = weights.mean(axis=0)
        else:
            if not 0 <= head < heads:
                raise InputError(f"head: choose 0 to {heads - 1}, or None for the average")
            chosen = weights[head]
        return {
            "tokens": [b.piece(i) for i in ids],
            "layers": n_layers,
            "heads": heads,
            "layer": layer if layer >= 0 else n_layers + layer,
            "head": head,
            "weights": np.round(chosen, 5).tolist(),
            "notices": notices,
        }


def _sample(ids: np.ndarray, probs: np.ndarray, seed: int | None) -> dict:
    """One token drawn from the sampler's distribution (seeded when a seed is given)."""
    rng = np.random.default_rng(seed)
    i = int(rng.choice(len(ids), p=probs / probs.sum()))
    return {"id": int(ids[i]), "prob": round(float(probs[i]), 6)}


def anatomy(backend, messages: list[dict], parts: dict, prompt: str) -> dict:
    """Where the prompt's tokens go: system prompt, examples, history, passages, message, reply.

    Counts come from rendering growing prefixes of the conversation, so the
    chat template's own tokens are counted with the part they wrap.
    """
    n_prefix, n_history = parts["prefix"], parts["history"]
    has_system = bool(messages) and messages[0]["role"] == "system"
    user = messages[-1]
    bare = {"role": "user", "content": parts["message"]}

    def count(msgs: list[dict]) -> int:
        return backend.count_tokens(backend.render(msgs)) if msgs else 0

    steps = [
        ("system prompt", messages[: 1 if has_system else 0]),
        ("persona examples", messages[:n_prefix]),
        ("earlier turns kept", messages[: n_prefix + n_history]),
        ("your message", messages[: n_prefix + n_history] + [bare]),
    ]
    sizes, before = [], 0
    for name, msgs in steps:
        total = count(msgs)
        sizes.append({"part": name, "tokens": max(0, total - before)})
        before = max(before, total)
    full = backend.count_tokens(prompt)
    if user["content"] != parts["message"]:  # retrieved passages wrap the message
        sizes.insert(3, {"part": "retrieved passages", "tokens": max(0, full - before)})
    else:
        sizes[-1]["tokens"] += max(0, full - before)
    sizes.append({"part": "reply budget", "tokens": parts["max_new_tokens"]})
    used = full + parts["max_new_tokens"]
    sizes.append({"part": "free", "tokens": max(0, parts["n_ctx"] - used)})
    ids = backend.tokenize(prompt, special=True)
    return {
        "parts": sizes,
        "prompt_tokens": full,
        "n_ctx": parts["n_ctx"],
        "prompt": prompt,
        "tokens": [{"text": backend.piece(i), "id": int(i)} for i in ids],
    }
