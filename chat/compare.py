"""The same prompt under several decoding strategies, side by side.

Each strategy's reply comes with its sequence log-probability (the sum of its
tokens' log-probabilities under the model: how likely the model finds the
whole reply) and its speed, so a learner sees why greedy, beam search and
sampling at different temperatures pick differently.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chat.engine import TurnRequest
from chat.errors import Cancelled, SettingsError, UnsupportedSettingError
from chat.settings import DecodingSettings, parse_settings
from chat.validation import describe

MAX_STRATEGIES = 4  # what the page offers; each one is a whole generation

STANDARD = [
    ("greedy", {"strategy": "greedy", "repetition_penalty": 1.0}),
    ("beam search (4 beams)", {"strategy": "beam", "num_beams": 4, "repetition_penalty": 1.0}),
    ("sample, temperature 0.7", {"strategy": "sample", "temperature": 0.7, "top_p": 1.0,
                                 "top_k": 0, "repetition_penalty": 1.0}),
    ("sample, temperature 1.3", {"strategy": "sample", "temperature": 1.3, "top_p": 1.0,
                                 "top_k": 0, "repetition_penalty": 1.0}),
]  # fmt: skip
# The comparison from Hugging Face's "How to generate text" blog post.
CLASSIC = [
    ("greedy", {"strategy": "greedy", "repetition_penalty": 1.0}),
    ("beam_width 5, repetition_penalty 1.2", {"beam_width": 5, "repetition_penalty": 1.2}),
]


class Strategy(BaseModel):
    """One column of a comparison: a label and the decoding settings it runs with."""

    model_config = ConfigDict(extra="forbid")

    label: str = Field("", max_length=120, description="What the row is called.")
    settings: dict = Field(
        default_factory=dict, description="Decoding settings (field: value) over the defaults."
    )


class CompareOptions(BaseModel):
    """What a comparison runs: up to ``MAX_STRATEGIES`` strategies, each this many tokens."""

    model_config = ConfigDict(extra="forbid")

    strategies: list[Strategy] | None = Field(
        None,
        min_length=1,
        max_length=MAX_STRATEGIES,
        description=f"a list of 1 to {MAX_STRATEGIES} {{label, settings}} objects, or null "
        "for the standard four",
    )
    max_new_tokens: int = Field(
        48, ge=1, le=32768, description="a whole number of tokens per reply, such as 48"
    )


def compare_options(**values) -> CompareOptions:
    """Validated options; the error names the field and says what to send."""
    try:
        return CompareOptions(**values)
    except ValidationError as exc:
        hints = {name: f"send {f.description}" for name, f in CompareOptions.model_fields.items()}
        raise SettingsError(describe(exc, CompareOptions, noun="option", hints=hints)) from None


def plan(options: CompareOptions, seed: int = 42) -> list[tuple[str, DecodingSettings]]:
    """The strategies to run, each with its validated settings (before any model work)."""
    if options.strategies is None:
        pairs = STANDARD
    else:
        pairs = [(s.label or str(s.settings), s.settings) for s in options.strategies]
    out = []
    for label, overrides in pairs:
        raw = {"max_new_tokens": options.max_new_tokens, "seed": seed, **overrides}
        out.append((label, parse_settings(raw, DecodingSettings())))
    return out


def compare(
    engine,
    message: str,
    history: list[dict],
    prefix: list[dict],
    strategies: list[tuple[str, DecodingSettings]],
    cancel=None,
    max_seconds: float | None = None,
) -> list[dict]:
    """One row per strategy: label, settings, text, logprob, mean_logprob, tokens, tokens_per_s.

    A strategy the backend cannot run gives ``{label, unavailable: reason}``.
    ``max_seconds`` stops each generation that runs longer; a set ``cancel``
    stops the comparison (``Cancelled``).
    """
    rows = []
    logprobs = engine.backend.capabilities.logprobs
    for label, settings in strategies:
        if cancel is not None and cancel.is_set():
            raise Cancelled("The comparison was cancelled.")
        try:
            turn = TurnRequest(
                message,
                history,
                prefix,
                settings,
                max_seconds=max_seconds,
                top_logprobs=1 if logprobs else 0,
            )
            *_, last = engine.stream_turn(turn, cancel)
        except UnsupportedSettingError as exc:
            caps = engine.backend.capabilities
            why = None  # a strategy the backend lacks: its own reason, which says what to do
            if settings.strategy not in caps.strategies:
                why = caps.missing.get(settings.strategy)
            rows.append({"label": label, "unavailable": why or str(exc)})
            continue
        if cancel is not None and cancel.is_set():
            raise Cancelled("The comparison was cancelled.")
        tokens = (last.tokens or [[]])[0]
        total = sum(t["logprob"] for t in tokens) if tokens else None
        rows.append(
            {
                "label": label,
                "settings": {  # what this strategy used, never an ignored temperature
                    k: v
                    for k, v in settings.applied().items()
                    if k in {"strategy", "temperature", "num_beams", "repetition_penalty", "seed"}
                },
                "text": last.reply,
                "logprob": round(total, 3) if total is not None else None,
                "mean_logprob": round(total / len(tokens), 4) if tokens else None,
                "tokens": last.stats["completion_tokens"],
                "tokens_per_s": last.stats["tokens_per_s"],
                "finish_reason": last.stats.get("finish_reason"),
            }
        )
    return rows
