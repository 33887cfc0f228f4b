"""What the candidates of one turn have produced so far: text, token counts, tokens, timing.

``ChatEngine.stream_turn`` feeds it the backend's deltas and reads its texts,
finish reasons and figures into each snapshot.
"""

from __future__ import annotations

import time

from chat.backends.base import Delta
from chat.probs import TokenInfo
from chat.stops import StopFilter


class TurnProgress:
    """What the candidates of one turn have produced so far: text, counts, tokens, timing."""

    def __init__(self, n: int, stops: list[str], t_start: float):
        self.filters = [StopFilter(stops) for _ in range(n)]
        self.counts = [0] * n
        self.finish: list[str | None] = [None] * n
        self.infos: list[list[TokenInfo]] = [[] for _ in range(n)]
        self.t_start = t_start
        self.t_first = self.t_last = None
        self.spans: list[list[float]] = [[] for _ in range(n)]  # each candidate's first, last
        self.cancelled = False  # Stop, or the time limit: the backend was halted

    def add(self, d: Delta, cancelled: bool) -> bool:
        """Take one delta; True once every candidate has met a stop string."""
        now = time.perf_counter()
        if d.tokens:
            self.counts[d.index] += d.tokens
            self.t_last = now
            self.t_first = self.t_first or now
            span = self.spans[d.index]
            self.spans[d.index] = [span[0] if span else now, now]
        if d.token is not None:
            self.infos[d.index].append(d.token)
        elif d.text and self.infos[d.index]:  # trailing text held back by the backend
            self.infos[d.index][-1].text += d.text
        stopped = self.filters[d.index].feed(d.text) and all(f.stopped for f in self.filters)
        if self.filters[d.index].stopped and self.finish[d.index] is None:
            self.finish[d.index] = "stop"
        if d.finish_reason and self.finish[d.index] is None:
            self.finish[d.index] = "cancelled" if cancelled else d.finish_reason
        return stopped

    def texts(self, done: bool) -> list[str]:
        """Each candidate's text: stripped when done, else without a possible stop-string start."""
        return [f.text(final=done).strip() if done else f.text().lstrip() for f in self.filters]

    def close(self, ended_by: str, cancelled: bool) -> None:
        """Settle each candidate's finish reason once generation is over."""
        self.finish = [ended_by if f == "cancelled" else f for f in self.finish]
        self.finish = [f or (ended_by if cancelled else "length") for f in self.finish]

    def fill(self, stats: dict, done: bool) -> None:
        """Counts, speed and (when done) finish reasons into ``stats``."""
        stats["completion_tokens"] = done_tokens = sum(self.counts)
        if self.t_first is not None:
            stats["ttft_s"] = round(self.t_first - self.t_start, 4)
            if done_tokens > 1:
                if self.t_last - self.t_first > 1e-3:  # streamed: decode speed after the first
                    speed = (done_tokens - 1) / (self.t_last - self.t_first)
                else:  # everything arrived at once (beam search): the whole turn counts
                    speed = done_tokens / (self.t_last - self.t_start)
                stats["tokens_per_s"] = round(speed, 2)
        stats["elapsed_s"] = round(time.perf_counter() - self.t_start, 4)
        if done:
            n = len(self.counts)
            stats["finish_reason"] = self.finish[0] if n == 1 else list(self.finish)
            if n > 1:
                stats["candidates"] = [self._candidate(i) for i in range(n)]

    def _candidate(self, i: int) -> dict:
        """One candidate's own figures: tokens, finish, speed, and summed and mean log-probability
        (the sum favours the shortest reply; the mean per token does not)."""
        infos, span = self.infos[i], self.spans[i]
        total = sum(t.logprob for t in infos) if infos else None
        speed = None
        if self.counts[i] > 1 and span and span[1] - span[0] > 1e-3:
            speed = round((self.counts[i] - 1) / (span[1] - span[0]), 2)
        elif self.counts[i] and span:  # arrived at once (beam search): the whole turn counts
            speed = round(self.counts[i] / max(span[-1] - self.t_start, 1e-3), 2)
        return {
            "completion_tokens": self.counts[i],
            "finish_reason": self.finish[i],
            "logprob": round(total, 4) if infos else None,
            "mean_logprob": round(total / len(infos), 4) if infos else None,
            "tokens_per_s": speed,
        }

    def token_dicts(self) -> list[list[dict]]:
        """Every candidate's tokens as the API returns them."""
        return [[t.to_api() for t in infos] for infos in self.infos]
