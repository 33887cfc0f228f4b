"""The small protocol every model backend implements, and what each can show of its insides.

A backend renders role/content messages into a prompt, counts tokens, and
yields ``Delta`` pieces of text. Accumulating, stop strings, statistics and
locking live outside the backend (``chat.engine``).

Seeing inside the model is optional and declared in ``Capabilities``:
token log-probabilities while generating (``logprobs``), the sampler's view
of them (``sampler_probs``), continuing a reply from chosen tokens
(``force_prefix``), the next-token distribution for any text
(``next_token``), log-probabilities of every token of a text (``scoring``,
for perplexity) and attention weights (``attention``). A backend that lacks
one says why in ``Capabilities.missing``; the UI and the API show that reason.
The methods behind them are in ``Inspectable``.

How a backend runs is declared there too, so that no caller branches on a
backend's name or probes its attributes: ``remote`` (an engine elsewhere,
which batches itself), ``parallel`` (generations decoded together) and
``startup_error``. Backends are chosen by name in ``chat.backends.registry``;
``close()`` frees what each holds.
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from chat.errors import InputError, UnsupportedSettingError
from chat.probs import TokenInfo
from chat.settings import DecodingSettings

FEATURES = (
    "logprobs", "sampler_probs", "force_prefix", "next_token", "scoring", "attention", "internals",
)  # fmt: skip
DEFAULT_REASONS = {
    "internals": "this backend does not expose hidden states or gradients (logit lens, neurons, "
    "token-level attribution); load the model on the transformers backend in the Model tab",
}


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do; the UI greys out the rest and the API rejects it."""

    strategies: frozenset[str]
    max_candidates: int
    logprobs: bool = False
    sampler_probs: bool = False
    force_prefix: bool = False
    next_token: bool = False
    scoring: bool = False
    attention: bool = False
    internals: bool = False  # hidden states, MLP activations and gradients (``explain``)
    missing: Mapping[str, str] = field(default_factory=dict)  # feature -> why it is missing
    # How it runs, for whoever schedules it (not features a visitor picks):
    remote: bool = False  # runs elsewhere (an engine's ``Remote`` methods); it batches itself
    parallel: int = 1  # generations it decodes together (llama.cpp's batching slots)
    startup_error: str | None = None  # loaded, but not ready yet: why (an engine still down)

    def why_not(self, feature: str) -> str | None:
        """None when ``feature`` is available, else the reason it is not."""
        if getattr(self, feature, False):
            return None
        default = DEFAULT_REASONS.get(feature, f"{feature} is not available on this backend")
        return self.missing.get(feature, default)

    def require(self, feature: str) -> None:
        """Raise ``UnsupportedSettingError`` (with the reason) unless ``feature`` is available."""
        reason = self.why_not(feature)
        if reason:
            raise UnsupportedSettingError(f"Not available on this backend: {reason}")

    def to_api(self) -> dict:
        """``{strategies, max_candidates, features: {name: true | reason}}`` for the UI and API."""
        return {
            "strategies": sorted(self.strategies),
            "max_candidates": self.max_candidates,
            "features": {f: self.why_not(f) or True for f in FEATURES},
        }

    def check(self, settings: DecodingSettings, backend: str) -> None:
        """Raise ``UnsupportedSettingError`` for settings this backend cannot honour."""
        if settings.strategy not in self.strategies:
            from chat.backends import registry

            supported = ", ".join(sorted(self.strategies))
            offered = " or ".join(registry.offering(settings.strategy))
            what = "beam search" if settings.strategy == "beam" else settings.strategy
            hint = f" ({what} needs the {offered} backend)" if offered else ""
            raise UnsupportedSettingError(
                f"strategy: the {backend} backend does not support {settings.strategy!r}; "
                f"choose one of: {supported}{hint}"
            )
        if settings.num_return_sequences > self.max_candidates:
            raise UnsupportedSettingError(
                f"num_return_sequences: the {backend} backend returns at most "
                f"{self.max_candidates} candidates"
            )


@dataclass(frozen=True)
class ModelInfo:
    """What is loaded and where it runs, shown at start and in the UI."""

    model: str
    backend: str
    device: str
    n_ctx: int
    chat_template: bool
    n_vocab: int = 0  # token ids run 0..n_vocab-1 (0: the backend shares no token ids)

    def check_token_ids(self, ids: object, field: str = "token id") -> list[int]:
        """``ids`` as a list of ints, each a token of this model; else one clear sentence.

        Native code (llama.cpp above all) aborts the whole process on an id
        outside the vocabulary, so every id from a caller passes here first.
        """
        if not isinstance(ids, (list, tuple)):
            ids = [ids]
        out = []
        for i in ids:
            try:
                if isinstance(i, bool):
                    raise TypeError
                i = operator.index(i)  # ints, numpy's too; never floats or text
            except TypeError:
                raise InputError(
                    f"{field}: send whole-number token ids, not {str(i)[:40]!r}."
                ) from None
            if self.n_vocab <= 0:
                raise InputError(f"{field}: the {self.backend} backend takes no token ids.")
            if not 0 <= i < self.n_vocab:
                raise InputError(
                    f"{field}: {i} is not a token of this model; its token ids run from 0 "
                    f"to {self.n_vocab - 1}."
                )
            out.append(i)
        return out


@dataclass
class Delta:
    """A piece of generated text for candidate ``index``.

    ``tokens`` is how many tokens this piece stands for. The last delta of a
    candidate has ``finish_reason`` set ("stop", "length" or "cancelled").
    """

    index: int
    text: str
    tokens: int = 0
    finish_reason: str | None = None
    token: TokenInfo | None = None  # with ``top_logprobs``: the token this piece is


@dataclass(frozen=True)
class GenerationRequest:
    """Everything a backend needs for one generation."""

    prompt: str
    settings: DecodingSettings
    seed: int
    max_new_tokens: int
    stop: list[str] = field(default_factory=list)
    top_logprobs: int = 0  # > 0: attach a TokenInfo with this many alternatives to each delta
    forced: list[int] = field(default_factory=list)  # the reply starts with these token ids
    messages: list[dict] = field(default_factory=list)  # what ``prompt`` renders (remote engines)


class Backend(Protocol):
    """A loaded model that can render prompts and generate text."""

    info: ModelInfo
    capabilities: Capabilities

    def render(self, messages: list[dict]) -> str:
        """Turn role/content messages into the prompt text the model sees."""

    def stop_strings(self) -> list[str]:
        """Stop strings the prompt format needs (e.g. ``\\nUser:`` for a transcript)."""

    def count_tokens(self, prompt: str) -> int:
        """Number of tokens ``generate`` will feed for this prompt."""

    def truncate(self, text: str, max_tokens: int) -> str:
        """Keep the first ``max_tokens`` tokens of ``text``."""

    def generate(self, request: GenerationRequest, cancel: threading.Event) -> Iterator[Delta]:
        """Yield deltas until done, or soon after ``cancel`` is set."""

    def close(self) -> None:
        """Free what the backend holds (model, context, client, process); calling twice is fine."""


class Remote(Protocol):
    """What a backend declaring ``remote`` adds: its engine's address and the models it serves."""

    base_url: str

    def models(self) -> list[str]:
        """The names of the models the engine serves."""


class Inspectable(Protocol):
    """The methods behind the inspection capabilities (only those declared are called)."""

    sampler_order: tuple[str, ...]  # e.g. chat.probs.LLAMA_CPP_ORDER

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        """Token ids of ``text`` as the model reads it (a rendered prompt gets its BOS)."""

    def piece(self, token_id: int) -> str:
        """How one token reads (special tokens spelled out)."""

    def next_logits(self, ids: list[int]):
        """Raw logits (a float array over the vocabulary) for the position after ``ids``."""

    def score(self, ids: list[int], first: int = 1):
        """``(logprobs, entropies)``: for each position ``i >= first``, log P(ids[i] | ids[:i])
        and the entropy of that next-token distribution (``ids`` fits the window)."""

    def attention(self, ids: list[int], layer: int):
        """Attention weights of ``layer``: an array of heads x positions x positions."""

    def internals(self):
        """``(torch model, torch module, device)`` for hooks and gradients (``internals``)."""
