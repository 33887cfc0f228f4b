"""The same prompt under several decoding strategies, side by side.

Each strategy's reply comes with its sequence log-probability (the sum of its
tokens' log-probabilities under the model: how likely the model finds the
whole reply) and its speed, so a learner sees why greedy, beam search and
sampling at different temperatures pick differently.
"""

from __future__ import annotations

from chat.errors import UnsupportedSettingError
from chat.settings import DecodingSettings, parse_settings

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


def compare(
    engine,
    message: str,
    history: list[dict],
    prefix: list[dict],
    strategies: list[tuple[str, dict]] | None = None,
    max_new_tokens: int = 48,
    seed: int = 42,
    cancel=None,
) -> list[dict]:
    """One row per strategy: label, settings, text, logprob, mean_logprob, tokens, tokens_per_s.

    A strategy the backend cannot run gives ``{label, unavailable: reason}``.
    """
    rows = []
    logprobs = engine.backend.capabilities.logprobs
    for label, overrides in strategies or STANDARD:
        settings = parse_settings(
            {"max_new_tokens": max_new_tokens, "seed": seed, **overrides}, DecodingSettings()
        )
        try:
            *_, last = engine.stream_turn(
                message, history, prefix, settings, cancel, top_logprobs=1 if logprobs else 0
            )
        except UnsupportedSettingError as exc:
            caps = engine.backend.capabilities
            why = None  # a strategy the backend lacks: its own reason, which says what to do
            if settings.strategy not in caps.strategies:
                why = caps.missing.get(settings.strategy)
            rows.append({"label": label, "unavailable": why or str(exc)})
            continue
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
            }
        )
    return rows
