"""Wait for a condition, not for a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 30, what: str = "", every=0.05) -> T:
    """Poll ``predicate`` until it returns something truthy (returned) or ``timeout`` seconds
    pass (an ``AssertionError`` naming ``what`` and the last value)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:g} s for {what or predicate}: still {value!r}")
        time.sleep(every)


def stays(value: Callable[[], T], seconds: float, every: float = 0.1) -> T:
    """Read ``value`` for ``seconds`` and assert it never changes; returns it.

    For what must *not* happen (text that keeps growing after Stop): the only wait that
    cannot be a condition, so it is one named helper with its duration at the call site."""
    first = value()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(every)
        now = value()
        assert now == first, f"changed within {seconds:g} s: {first!r} -> {now!r}"
    return first


def settled(value: Callable[[], T], quiet: float, timeout: float = 30, every=0.1) -> T:
    """Wait until ``value()`` has stayed the same for ``quiet`` seconds; returns it (an
    ``AssertionError`` if it still changes after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    last, since = value(), time.monotonic()
    while time.monotonic() - since < quiet:
        if time.monotonic() > deadline:
            raise AssertionError(f"still changing after {timeout:g} s: {last!r}")
        time.sleep(every)
        now = value()
        if now != last:
            last, since = now, time.monotonic()
    return last
