"""One line, not a traceback, for requests Gradio itself refuses.

Gradio prints a full traceback when a request has too few values for an
event, or a value outside a component's choices: mistakes of the caller, not
faults of the app. This filter on standard error turns exactly those into one
``refused:`` line; every other traceback passes through whole. Gradio's
wording of them is ``server.gradio_internals.USER_ERRORS``, checked at start.
"""

from __future__ import annotations

import io
import sys
import threading

from server.gradio_internals import USER_ERRORS


class OneLineRefusals(io.TextIOBase):
    """Wraps a text stream; holds a traceback back until its last line says what it was."""

    def __init__(self, stream):
        self.stream = stream
        self._held: list[str] = []
        self._partial = ""
        self._ended = False  # the held traceback's exception line came; a chained one may follow
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            self._partial += text
            *lines, self._partial = self._partial.split("\n")
            for line in lines:
                self._line(line)
        return len(text)

    def _line(self, line: str) -> None:
        if self._ended:
            if not line or line.startswith(("The above exception", "During handling")):
                self._held.append(line)  # a chained traceback: its last line decides
                self._ended = not line
                return
            self._release()
        if not self._held:
            if line.startswith("Traceback (most recent call last):"):
                self._held.append(line)
            else:
                self.stream.write(line + "\n")
            return
        self._held.append(line)
        if line[:1] in (" ", "\t") or line.startswith(("Traceback", "During handling", "The ")):
            return
        if not line:
            return
        # The exception line: a user's mistake becomes one line; anything else is kept whole
        # (once it is clear that no chained traceback follows).
        if USER_ERRORS.match(line):
            self.stream.write("refused: " + line.split(": ", 1)[1] + "\n")
            self._held = []
            return
        self._ended = True
        if self._timer is not None:
            self._timer.cancel()
        self._timer = threading.Timer(0.5, self._release_later)
        self._timer.daemon = True
        self._timer.start()

    def _release(self) -> None:
        """Write the held traceback whole."""
        if self._held:
            self.stream.write("\n".join(self._held) + "\n")
        self._held, self._ended = [], False

    def _release_later(self) -> None:
        with self._lock:
            if self._ended:
                self._release()

    def flush(self) -> None:
        self.stream.flush()


def install() -> None:
    """Filter ``sys.stderr`` for the rest of the process."""
    if not isinstance(sys.stderr, OneLineRefusals):
        sys.stderr = OneLineRefusals(sys.stderr)
