"""Embedding in turns: several ingests at once share the CPU slice by slice, first come first,
on one thread of lower priority than the chat.

Embedding is CPU-bound and uses every core, so two ingests embedding at
the same moment only slow each other down (and oversubscribe the cores).
Each ingest instead embeds one slice at a time, waiting its turn: a small
upload that arrives while a large one runs waits for one slice, not for the
whole of the large one.

The slices run on one thread of the store's, niced (``BACKGROUND_NICE``, on
Linux, where a thread has its own priority and the threads it starts, torch's
OpenMP workers, inherit it). A chat decoding beside an ingest then gets its
core first, as the training job's child (nice 19) lets it, and an ingest
still has every core the chat leaves. Retrieval queries are embedded on the
caller's thread at normal priority: a visitor's question waits for no ingest.
"""

from __future__ import annotations

import os
import sys
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

SLICE = 256  # chunks embedded per turn: big enough to run at the model's full speed
BACKGROUND_NICE = 10  # a chat thread at nice 0 weighs about 9 times an embedding thread


class Turns:
    """A first-in, first-out lock (whoever waits longest goes next), and the niced thread
    the turns' work runs on."""

    def __init__(self, nice: int = BACKGROUND_NICE):
        self._cond = threading.Condition()
        self._queue: deque[object] = deque()
        self._nice = nice
        self._worker: ThreadPoolExecutor | None = None

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

    def run(self, fn, *args):
        """``fn(*args)`` on the background thread (started on first use); its result."""
        with self._cond:
            if self._worker is None:
                self._worker = ThreadPoolExecutor(
                    1, "embed-background", initializer=lower_priority, initargs=(self._nice,)
                )
        return self._worker.submit(fn, *args).result()


def lower_priority(nice: int) -> bool:
    """Lower the calling thread's CPU priority by ``nice``; whether it was done.

    Linux only: there a thread's nice value is its own. Elsewhere the call would
    lower the whole process, chat included, so nothing is done."""
    if nice <= 0 or not sys.platform.startswith("linux"):
        return False
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError:
        return False
    return True


def encode_in_turns(embedder, texts: list[str], turns: Turns):
    """``embedder.encode(texts)``, one slice per turn on the background thread; one array."""
    import numpy as np

    parts = []
    for start in range(0, len(texts), SLICE):
        with turns.turn():
            parts.append(turns.run(embedder.encode, texts[start : start + SLICE]))
    if not parts:
        return embedder.encode([])
    return np.concatenate(parts)
