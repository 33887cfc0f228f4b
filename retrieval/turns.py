"""Embedding in turns: several ingests at once share the CPU slice by slice, first come first.

Embedding is CPU-bound and uses every core, so two ingests embedding at
the same moment only slow each other down (and oversubscribe the cores).
Each ingest instead embeds one slice at a time, waiting its turn: a small
upload that arrives while a large one runs waits for one slice, not for the
whole of the large one.
"""

from __future__ import annotations

import threading
from collections import deque
from contextlib import contextmanager

SLICE = 256  # chunks embedded per turn: big enough to run at the model's full speed


class Turns:
    """A first-in, first-out lock: whoever waits longest goes next."""

    def __init__(self):
        self._cond = threading.Condition()
        self._queue: deque[object] = deque()

    @contextmanager
    def turn(self):
        """Hold the turn for the block; waits behind everyone who asked earlier."""
        me = object()
        with self._cond:
            self._queue.append(me)
            while self._queue[0] is not me:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._queue.popleft()
                self._cond.notify_all()

    def waiting(self) -> int:
        """How many are waiting or embedding now."""
        with self._cond:
            return len(self._queue)


def encode_in_turns(embedder, texts: list[str], turns: Turns):
    """``embedder.encode(texts)``, one slice per turn; one array of vectors."""
    import numpy as np

    parts = []
    for start in range(0, len(texts), SLICE):
        with turns.turn():
            parts.append(embedder.encode(texts[start : start + SLICE]))
    if not parts:
        return embedder.encode([])
    return np.concatenate(parts)
