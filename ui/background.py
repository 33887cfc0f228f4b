"""Slow work in a thread, so a handler can say how long it has taken while it waits."""

from __future__ import annotations

import threading
import time


class Background:
    """Run ``work`` in a thread; ``done`` is set when it has returned or raised."""

    def __init__(self, work):
        self.started = time.perf_counter()
        self.done = threading.Event()
        self.result = self.error = None

        def run():
            try:
                self.result = work()
            except BaseException as exc:  # handed to the handler, which raises it
                self.error = exc
            finally:
                self.done.set()

        threading.Thread(target=run, daemon=True, name="background").start()

    def elapsed(self) -> float:
        """Seconds since the work began."""
        return time.perf_counter() - self.started
