"""Stop strings applied to streamed text, in one place for every backend."""

from __future__ import annotations


class StopFilter:
    """Accumulates streamed text, cuts it at the first stop string.

    While streaming, a tail that could be the start of a stop string is held
    back, so ``"\\nUser"`` never flashes on screen before ``":"`` arrives.
    """

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self._text = ""
        self.stopped = False

    def feed(self, piece: str) -> bool:
        """Add text; return True when a stop string has just been reached."""
        if self.stopped or not piece:
            return False
        self._text += piece
        cut = min((i for s in self.stops if (i := self._text.find(s)) >= 0), default=-1)
        if cut >= 0:
            self._text = self._text[:cut]
            self.stopped = True
            return True
        return False

    def text(self, final: bool = False) -> str:
        """The text so far; unless ``final``, minus a tail that may begin a stop string."""
        if final or self.stopped:
            return self._text
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self._text)), hold, -1):
                if self._text.endswith(s[:k]):
                    hold = k
                    break
        return self._text[: len(self._text) - hold] if hold else self._text
