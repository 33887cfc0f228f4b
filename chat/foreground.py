"""Who is waiting on the model's first token: the chat tells, higher layers listen.

A prompt evaluation (llama.cpp prefill, a transformers forward pass) uses every core; work
beside it, such as a training job, makes the first token come later. The engine holds
``Foreground.prompt()`` from taking a generation slot until the backend yields its first
delta. Listeners hear ``True`` when the first chat begins its prompt and ``False`` when the
last one in flight has its first token (or ends): concurrent chats are counted, so a
listener sees one pause and one resume however the chats overlap. The chat layer knows
nothing of who listens; the app wires them (a training job pauses its child, ``training.jobs``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)
Listener = Callable[[bool], None]


class Foreground:
    """A count of chats in their prompt evaluation, and listeners told when it leaves 0 or
    returns to 0. Thread-safe; listeners run under the lock, so they must be quick."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0
        self._listeners: list[Listener] = []

    @property
    def active(self) -> int:
        """How many chats are evaluating their prompt now."""
        return self._count

    def listen(self, listener: Listener) -> None:
        """Call ``listener(True)`` when a chat's prompt evaluation begins with none other under
        way, ``listener(False)`` when the last one ends. Told at once if one is under way."""
        with self._lock:
            self._listeners.append(listener)
            if self._count:
                _tell(listener, True)

    def unlisten(self, listener: Listener) -> None:
        """Stop telling ``listener`` (no-op if it was not listening)."""
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def enter(self) -> None:
        """A chat begins its prompt evaluation; pair with ``leave``."""
        with self._lock:
            self._count += 1
            if self._count == 1:
                for listener in self._listeners:
                    _tell(listener, True)

    def leave(self) -> None:
        """A chat has its first token (or ended before it)."""
        with self._lock:
            if self._count == 0:
                return
            self._count -= 1
            if self._count == 0:
                for listener in self._listeners:
                    _tell(listener, False)

    @contextmanager
    def prompt(self) -> Iterator[None]:
        """Held while one chat evaluates its prompt."""
        self.enter()
        try:
            yield
        finally:
            self.leave()

    def until_first(self, deltas: Iterator) -> Iterator:
        """``deltas`` unchanged, held in the foreground until the first one arrives."""
        it = iter(deltas)
        with self.prompt():
            try:
                first = next(it)
            except StopIteration:
                return
        yield first
        yield from it


def _tell(listener: Listener, busy: bool) -> None:
    try:
        listener(busy)
    except Exception:  # noqa: BLE001 - a listener's failure must never fail a chat
        log.exception("foreground listener failed")
