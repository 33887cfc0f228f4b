"""How many threads llama.cpp decodes with, chosen from measured step times.

One thread per physical core is fastest on an idle machine, and collapses as
soon as another process takes a core: llama.cpp's threads meet at a barrier
after every operation of the graph, so one descheduled thread stalls all the
others for a whole time slice, dozens of times per token (measured on 2
cores with one busy process: 2 threads 25 tokens/s, 1 thread 75). Which count
is best depends on what else runs (other programs, the app's own document
ingest), and that changes while the app runs. So ``ThreadTuner`` measures:
it keeps the step time of the count in use, now and then tries one thread
fewer or more for a few steps, and keeps whichever is faster. A try that goes
badly is abandoned after one step, and an idea that lost is tried less and
less often, so the cost of looking is a few percent. When the count in use
suddenly gets slower (its last few steps against the ones before), what
was learnt is stale: the waits of the smaller counts start
over, so they are tried at once and measured against the new step times. Without
that, a try of one thread when a busy process arrived was compared with the
two-thread times of the quiet machine before, lost, and the app decoded on
two contended threads for up to 8 s (0.58 of raw in bench_chat --neighbour).
One step four times slower than usual moves to one thread fewer at once:
when a core was taken while the app waited for its next visitor, the first
steps on two threads beside an ingest took 750 ms each.

More threads are only tried when the machine has a core to spare for them:
idle, or running niced work that gives way (``cpu_spare``, read from the
system's CPU times). When another program kept the other core busy, one try
of two threads cost a step of 300 ms against 18 ms on one (a try every 4 s:
a quarter of the chat's decoding). The app's own ingest embeds at nice 10
(retrieval.turns), so its core counts as spare, and two threads decode
beside it faster than one.
"""

from __future__ import annotations

import os
import statistics
import time

TRIAL_STEPS = 4  # steps measured at the other thread count
FIRST_WAIT_S = 0.5  # before the first try of a count; doubled each time it loses
MAX_WAIT_S = 4.0
RECENT = 4  # steps that say how fast the count in use is now
CHANGED = 1.3  # the recent steps this much slower than before: conditions changed
BETTER = 0.92  # a try must be this much faster (step time ratio) to switch
ABORT = 1.8  # a try step this much slower than usual ends the try at once
JOLT = 4.0  # one step of the count in use this much slower than usual: conditions changed
SPARE_EVERY_S = 0.25  # how often the machine's CPU times are read
SPARE = 0.5  # spare cores needed per extra thread before more threads are tried


def system_spare_seconds() -> float | None:
    """Seconds all CPUs together have been idle, or running niced work, since boot (None
    when that cannot be read). Niced work (the app's own ingest, a training job) gives way
    to a decoding thread, so its cores count as spare."""
    try:
        import psutil

        times = psutil.cpu_times()
        return float(times.idle + getattr(times, "nice", 0.0))
    except Exception:  # no psutil, or a platform without the figure
        return None


def physical_cores() -> int:
    """Physical CPU cores (logical ones when that cannot be told)."""
    try:
        import psutil

        return psutil.cpu_count(logical=False) or os.cpu_count() or 1
    except ImportError:
        return os.cpu_count() or 1


class ThreadTuner:
    """Decode thread count for the next llama.cpp step, from the step times seen so far.

    ``fixed`` (``--n-threads``) turns the tuning off. Step times are kept per
    number of sequences in the step (a batch of 4 takes longer than one).
    """

    def __init__(
        self,
        max_threads: int | None = None,
        fixed: int | None = None,
        clock=time.monotonic,
        cpu_spare=system_spare_seconds,
    ):
        self.clock = clock
        self.cpu_spare = cpu_spare
        self._spare_at: tuple[float, float] | None = None  # (clock, spare seconds) last read
        self.spare_cores: float | None = None  # spare cores between the last two reads
        self.max_threads = fixed or max_threads or physical_cores()
        self.fixed = fixed
        self.current = self.max_threads
        self._times: dict[tuple[int, int], list[float]] = {}
        self._wait = {n: FIRST_WAIT_S for n in range(1, self.max_threads + 1)}
        self._next_try = {n: 0.0 for n in self._wait}
        self._trial: int | None = None
        self._trial_times: list[float] = []
        self.switches = 0

    def threads(self, rows: int) -> int:
        """Threads for the next decode step of ``rows`` sequences."""
        if self.fixed:
            return self.fixed
        if self._trial is None:
            self._maybe_start_trial(rows)
        return self._trial or self.current

    def batch_threads(self) -> int:
        """Threads for prompt evaluation: every core when the machine is free, else as decoding."""
        if self.current < self.max_threads and not self.fixed:
            return self.current
        return max(self.current, os.cpu_count() or 1)

    def record(self, n_threads: int, rows: int, seconds: float) -> None:
        """Note how long a decode step of ``rows`` sequences took on ``n_threads``."""
        if self.fixed:
            return
        usual = self._usual(self.current, rows)
        if self._trial is not None and n_threads == self._trial:
            self._trial_times.append(seconds)
            if usual is not None and seconds > ABORT * usual:
                self._end_trial(rows, won=False)
            elif len(self._trial_times) >= TRIAL_STEPS:
                trial = statistics.median(self._trial_times)
                self._end_trial(rows, won=usual is not None and trial < BETTER * usual)
            return
        times = self._times.setdefault((n_threads, rows), [])
        times.append(seconds)
        del times[:-16]
        if n_threads != self.current or len(times) < 2 * RECENT:
            return
        before = statistics.median(times[:-RECENT])
        if seconds > JOLT * before and self.current > 1:
            self._step_down(rows)
        elif statistics.median(times[-RECENT:]) > CHANGED * before:
            self._start_over(times)

    def _step_down(self, rows: int) -> None:
        """One step took JOLT times the usual: one thread fewer at once, both counts measured
        afresh. The count left is tried again soon, when a core is spare (a hiccup costs a
        few slower steps; a taken core would have cost JOLT times a step, every step).

        Soon is SPARE_EVERY_S when the spare cores can be read: the figure is read afresh
        from now, on fewer threads, so a core still taken is seen and not tried (on a quiet
        machine a hiccup cost 0.5 s on one thread, 4% of a reply; now a quarter of that)."""
        left, self.current = self.current, self.current - 1
        self.switches += 1
        for n in (left, self.current):
            self._times.pop((n, rows), None)
        now = self.clock()
        self._spare_at = self.spare_cores = None  # what the cores did on more threads
        self._read_spare(now)
        soon = FIRST_WAIT_S if self.cpu_spare is None else SPARE_EVERY_S
        self._wait[left], self._next_try[left] = FIRST_WAIT_S, now + soon

    def _start_over(self, times: list[float]) -> None:
        """Conditions changed: keep only the recent step times, and try fewer threads now.

        Only fewer: a slower step means something took a core, and more threads then
        cost most (during an ingest a step on 2 threads took 300 ms against 16 on 1)."""
        del times[:-RECENT]
        for n in self._wait:
            if n < self.current:
                self._wait[n], self._next_try[n] = FIRST_WAIT_S, 0.0

    def _usual(self, n: int, rows: int) -> float | None:
        times = self._times.get((n, rows))
        return statistics.median(times) if times and len(times) >= TRIAL_STEPS else None

    def _maybe_start_trial(self, rows: int) -> None:
        if self._usual(self.current, rows) is None:
            return
        now = self.clock()
        self._read_spare(now)
        for n in (self.current - 1, self.current + 1):
            if 1 <= n <= self.max_threads and now >= self._next_try[n]:
                if n > self.current and not self._has_spare(n - self.current):
                    continue
                self._trial, self._trial_times = n, []
                return

    def _read_spare(self, now: float) -> None:
        """Update ``spare_cores`` from the system's CPU times, at most every SPARE_EVERY_S.

        A window that spans a pause in decoding (between two requests) says nothing
        about the cores beside a decoding step, so after one the figure is unknown again."""
        last = self._spare_at
        if self.cpu_spare is None or (last is not None and now - last[0] < SPARE_EVERY_S):
            return
        spare = self.cpu_spare()
        if spare is None:  # cannot be read here: more threads are tried on step times alone
            self.cpu_spare = None
            return
        fresh = last is not None and now - last[0] <= 4 * SPARE_EVERY_S
        self.spare_cores = (spare - last[1]) / (now - last[0]) if fresh else None
        self._spare_at = (now, spare)

    def _has_spare(self, extra: int) -> bool:
        """Whether the machine had spare cores for ``extra`` more threads lately."""
        if self.cpu_spare is None:
            return True
        return self.spare_cores is not None and self.spare_cores >= SPARE * extra

    def _end_trial(self, rows: int, won: bool) -> None:
        n, self._trial = self._trial, None
        if won:
            self._times[(n, rows)] = list(self._trial_times)
            self.current = n
            self.switches += 1
            self._wait = dict.fromkeys(self._wait, FIRST_WAIT_S)
            self._next_try = dict.fromkeys(self._next_try, self.clock() + FIRST_WAIT_S)
        else:
            self._wait[n] = min(self._wait[n] * 2, MAX_WAIT_S)
            self._next_try[n] = self.clock() + self._wait[n]
