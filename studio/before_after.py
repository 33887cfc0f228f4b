"""Before and after training, for the Train tab: the base model and a tuned one side by side.

Both run on transformers (the base as trained, the tuned one with the adapter merged),
with the same seed and settings, so the adapter is the only difference. The two models
are loaded once and kept until another adapter is asked for; one comparison runs at a
time. Only the caller's own adapters are compared (``Training.adapter``).
"""

from __future__ import annotations

import threading
from pathlib import Path

from pydantic import Field

from studio.access import Caller
from studio.requests import Name, Text, _Request, parse_request
from studio.training import Training

MAX_PROMPTS = 6


class BeforeAfterRequest(_Request):
    """``/before_after``: an adapter of yours and, optionally, prompts of your own."""

    adapter: Name = Field(min_length=1, description="An adapter id of yours (see /adapters).")
    prompts: list[Text] = Field(
        default_factory=list, max_length=MAX_PROMPTS,
        description="Prompts to answer (default: the held-out prompts of your last job).",
    )  # fmt: skip
    max_new_tokens: int = Field(48, ge=1, le=256, description="Reply length, both models.")


class BeforeAfter:
    """Base versus tuned replies, the tokens that changed most, perplexity, reward."""

    def __init__(self, training: Training):
        self.training = training
        self._lock = threading.Lock()
        self._base = None
        self._tuned: tuple[str, object] | None = None

    def _backends(self, adapter_dir: Path):
        from chat.backends.transformers_backend import TransformersBackend

        base = self.training.base_model
        path = Path(base)
        where, gguf = (str(path.parent), path.name) if path.suffix == ".gguf" else (base, None)
        if self._base is None:
            self._base = TransformersBackend(where, gguf_file=gguf, device="cpu")
        if self._tuned is None or self._tuned[0] != str(adapter_dir):
            self._tuned = None  # free the previous tuned model first
            tuned = TransformersBackend(where, gguf_file=gguf, device="cpu",
                                        adapter=str(adapter_dir))  # fmt: skip
            self._tuned = (str(adapter_dir), tuned)
        return self._base, self._tuned[1]

    def compare(self, caller: Caller, values: dict) -> dict:
        """``{"rows": [{prompt, base, tuned, same, base_reward?, tuned_reward?}], "changed":
        the first reply's most changed tokens, "perplexity": held-out before/after or None}``."""
        from chat.settings import DecodingSettings
        from training import before_after as ba

        self.training.check(caller)
        req = parse_request(BeforeAfterRequest, **values)
        meta = self.training.adapter(caller, req.adapter)
        held, trained = self.training.held_out(caller)
        # Your prompts; else the held-out ones; else (nothing held out) the trained ones.
        rows = [r for r in (held or trained) if "messages" in r]
        prompts = [p for p in req.prompts if p.strip()] or rows[:MAX_PROMPTS]
        if not prompts:
            from chat.errors import InputError

            raise InputError("Type a prompt to compare the two models on (one per line).")
        reward = None
        if any(a.get("kind") == "reward" for a in self.training.adapters(caller)):
            reward, _ = self.training.reward_model(caller, None)
        settings = DecodingSettings(strategy="greedy", max_new_tokens=req.max_new_tokens, seed=0)
        with self._lock:
            base, tuned = self._backends(self.training.adapters_dir / meta["id"])
            rows = ba.compare_replies(base, tuned, prompts, settings, reward)
            first = rows[0]
            changed = None
            if first["tuned"].strip():
                changed = ba.changed_tokens(base, tuned, first["messages"], first["tuned"], 8)
            sft_rows = [r for r in held if "messages" in r]
            ppl = ba.perplexity_before_after(base, tuned, sft_rows) if sft_rows else None
        return {"adapter": meta["id"], "rows": rows, "changed": changed, "perplexity": ppl}
