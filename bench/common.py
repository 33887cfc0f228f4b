"""What the chat benchmarks share: the chat they time, and how a reply's speed is read."""

from __future__ import annotations

import os
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROMPT = "Write a story about a cat who goes on an adventure."
SYSTEM = "You are a helpful, concise assistant. Answer clearly and truthfully."
MESSAGES = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}]


def offline_env() -> dict:
    """The environment for the bench's child processes: nothing fetched from a hub."""
    return {**os.environ, "HF_HUB_OFFLINE": "1"}


def speed(stamps: list[float], t0: float) -> tuple[float, float]:
    """(decode tokens/s, time to first token) from per-token arrival times."""
    return (len(stamps) - 1) / (stamps[-1] - stamps[0]), stamps[0] - t0


def median_of(runs: int, once, warm_up: bool = False) -> dict:
    """Run ``once()`` -> (tokens/s, ttft) several times (after one unmeasured run when
    ``warm_up``); medians."""
    if warm_up:
        once()
    out = [once() for _ in range(runs)]
    return {
        "tps": statistics.median(o[0] for o in out),
        "ttft": statistics.median(o[1] for o in out),
    }
