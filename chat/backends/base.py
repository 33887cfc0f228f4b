"""The small protocol every model backend implements.

A backend renders role/content messages into a prompt, counts tokens, and
yields ``Delta`` pieces of text. Accumulating, stop strings, statistics and
locking live outside the backend (``chat.engine``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from chat.errors import UnsupportedSettingError
from chat.settings import DecodingSettings


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do; the UI greys out the rest and the API rejects it."""

    strategies: frozenset[str]
    max_candidates: int

    def check(self, settings: DecodingSettings, backend: str) -> None:
        """Raise ``UnsupportedSettingError`` for settings this backend cannot honour."""
        if settings.strategy not in self.strategies:
            supported = ", ".join(sorted(self.strategies))
            raise UnsupportedSettingError(
                f"strategy: the {backend} backend does not support {settings.strategy!r}; "
                f"choose one of: {supported} (beam search needs the transformers backend)"
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


@dataclass(frozen=True)
class GenerationRequest:
    """Everything a backend needs for one generation."""

    prompt: str
    settings: DecodingSettings
    seed: int
    max_new_tokens: int
    stop: list[str] = field(default_factory=list)


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
