"""Continuous batching for llama.cpp: concurrent conversations decode together.

The work is split into *lanes* (by default the smaller of ``parallel`` and the
number of cores; one on a GPU, where one batch is what is fast). Each lane
is a thread that owns a llama.cpp context for its share of the sequences,
each with its own KV cache (``kv_unified`` off: a shared one changed outputs
and was no faster). Each step puts the next token of every active sequence
of the lane into one ``llama_batch``, decodes once, and samples each sequence
with its own sampler chain (built by llama-cpp-python's ``Llama._init_sampler``,
so the sampler order and seeded results are those of ``Llama.generate``).

Why lanes: on a CPU a step of several sequences costs nearly as much per
sequence as one alone (the matrix kernels of Q4_1 weights do not reuse a
weight across rows), while llama.cpp's threads meet at a barrier after every
operation of the graph, so two threads decode one sequence only 1.4 x as fast
as one. Two lanes of one thread each on two cores decoded 2 x 2 sequences
1.42 x as fast as one sequence on two threads; one lane batching all four,
1.24 x. Only lane 0 ever runs several threads: a lone conversation goes there
and gets every thread the ``ThreadTuner`` picks, so one visitor is as fast as
before. (Lanes after the first stay on one thread for a build of llama.cpp with
OpenMP, pip's default: once OpenMP manages more threads than there are cores,
every barrier sleeps instead of spinning, and a step took 20.8 ms instead of
8.6. The shipped build has no OpenMP; see requirements.txt.)

A request joins at the next step of the least busy lane with a free slot
(ties: lane 0, then the lane holding the longest prefix of its prompt): its prompt is
evaluated alone (so its logits are exactly those of a solo run, whatever the
lane or thread count), reusing the longest prefix a free sequence of that lane
still holds. A finished or cancelled sequence frees its slot at once. Jobs
that need the model to themselves (perplexity, the next-token explorer) run
between steps, with every lane held (``exclusive``), on the ``Llama`` object's
own context.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager

from chat.backends.base import Delta, GenerationRequest
from chat.backends.llama_lane import DONE, DecodeError, Lane, Seq
from chat.backends.threads import ThreadTuner

__all__ = ["BatchScheduler", "DecodeError"]

# A caller's thread wakes at most this often (seconds) to take the tokens decoded since.
# Woken at every token, it took a core from llama.cpp's decoding threads each time, and
# they wait for each other at every operation: on a quiet 2-core machine the app decoded at
# 0.84 of raw llama-cpp-python, 0.87 with 20 ms, 0.94 with 50 ms (bench_chat --neighbour).
# Each burst then costs the server about 2 ms of a core to pass on (the engine's snapshot,
# Gradio's event, the page's redraw): at 100 ms the server's event loop used 36% less CPU
# per reply than at 50 ms. The first token and the end of a reply are passed on at once;
# the tokens between reach the page ten times a second.
RELAY_EVERY_S = 0.1


class _Gate:
    """Lanes step side by side (``shared``); an exclusive job waits for their steps to end
    and holds them all (``alone``). A waiting job goes before lanes that come back."""

    def __init__(self):
        self._cond = threading.Condition()
        self._stepping = 0
        self._alone = False
        self._wanted = 0

    @contextmanager
    def shared(self):
        with self._cond:
            self._cond.wait_for(lambda: not self._alone and not self._wanted)
            self._stepping += 1
        try:
            yield
        finally:
            with self._cond:
                self._stepping -= 1
                self._cond.notify_all()

    @contextmanager
    def alone(self):
        with self._cond:
            self._wanted += 1
            self._cond.wait_for(lambda: not self._alone and not self._stepping)
            self._wanted -= 1
            self._alone = True
        try:
            yield
        finally:
            with self._cond:
                self._alone = False
                self._cond.notify_all()


class BatchScheduler:
    """The lanes that decode every active sequence of one model, and who goes where."""

    def __init__(
        self, backend, parallel: int, n_ctx: int, tuner: ThreadTuner, lanes: int | None = None
    ):
        self.backend = backend
        self.llm = backend.llm
        self.parallel = parallel
        self.tuner = tuner
        if lanes is None:
            lanes = min(parallel, tuner.fixed or tuner.max_threads)
        lanes = max(1, min(lanes, parallel))
        self._joining: queue.Queue = queue.Queue()
        self._waiting: list[Seq] = []
        self._admitting = threading.Lock()  # the waiting list, and who takes what
        self._seeding = threading.Lock()  # Llama.set_seed, then the sampler that reads it
        self._tuning = threading.Lock()
        self._gate = _Gate()
        self._jobs: queue.Queue = queue.Queue()  # exclusive jobs, for lane 0
        self._closed = False
        sizes = [parallel // lanes + (i < parallel % lanes) for i in range(lanes)]
        self.lanes: list[Lane] = []
        first = 0
        for i, slots in enumerate(sizes):
            self.lanes.append(Lane(self, i, slots, first, n_ctx))
            first += slots
        for lane in self.lanes:
            lane.start()

    # -- the callers' side -----------------------------------------------------------------

    def stream(self, request: GenerationRequest, index: int, prompt: list[int], cancel):
        """Yield candidate ``index``'s deltas in the bursts they are passed on in (lists,
        at most one every RELAY_EVERY_S after the first); the last delta has
        ``finish_reason`` set."""
        seq = Seq(request, index, cancel, prompt)
        self._joining.put(seq)
        self._wake_all()
        finished = False
        woke = None
        try:
            while True:
                if woke is not None:  # after the first token, wake at most every RELAY_EVERY_S
                    wait = RELAY_EVERY_S - (time.perf_counter() - woke)
                    if wait > 0:
                        seq.ended.wait(wait)  # the end of a reply goes at once
                items = [seq.out.get()]
                woke = time.perf_counter()
                while True:
                    try:
                        items.append(seq.out.get_nowait())
                    except queue.Empty:
                        break
                burst = []
                for item in items:
                    if item is DONE or isinstance(item, BaseException):
                        finished = True
                        break
                    burst.append(item)
                if burst:
                    yield burst
                if finished:
                    if item is not DONE:
                        raise item
                    return
        finally:
            if not finished:
                seq.abandoned = True
                self._wake_all()

    def exclusive(self, job: Callable):
        """Run ``job()`` on lane 0's thread between steps, every lane held; its result.

        On lane 0's thread because llama.cpp's OpenMP keeps a team of threads for each
        thread that ran it on several: a job run on a caller's thread would add a team,
        and more OpenMP threads than cores make every barrier sleep (llama_batch above).
        """
        if any(threading.current_thread() is lane.thread for lane in self.lanes):
            return job()
        done: queue.Queue = queue.Queue()
        self._jobs.put((job, done))
        self.lanes[0].wake.set()
        ok, value = done.get()
        if not ok:
            raise value
        return value

    def _run_jobs(self) -> None:
        """Lane 0: run the waiting exclusive jobs, with the other lanes held."""
        if self._jobs.empty():
            return
        with self._gate.alone():
            while True:
                try:
                    job, done = self._jobs.get_nowait()
                except queue.Empty:
                    return
                try:
                    done.put((True, job()))
                except BaseException as exc:
                    done.put((False, exc))

    @property
    def steps(self) -> int:
        """Decode steps of the busiest lane so far."""
        return max(lane.steps for lane in self.lanes)

    def free_slots(self) -> list[int]:
        """The sequence slots no conversation uses now (numbered across the lanes)."""
        return sorted(lane.first + s for lane in self.lanes for s in lane.free)

    def close(self) -> None:
        """Stop the lanes and free their contexts."""
        self._closed = True
        self._wake_all()
        for lane in self.lanes:
            lane.close()
        while not self._jobs.empty():  # nobody will run them now
            _, done = self._jobs.get_nowait()
            done.put((False, DecodeError("The model was closed; load it again.")))

    def _wake_all(self) -> None:
        for lane in self.lanes:
            lane.wake.set()

    # -- the lanes' side -------------------------------------------------------------------

    def _admit(self, lane: Lane) -> list[Seq]:
        """The waiting sequences ``lane`` takes now, each with a slot of it reserved."""
        taken = []
        with self._admitting:
            while True:
                try:
                    self._waiting.append(self._joining.get_nowait())
                except queue.Empty:
                    break
            for seq in list(self._waiting):
                if seq.stopped():
                    self._waiting.remove(seq)
                    seq.end(Delta(seq.index, "", finish_reason="cancelled"), DONE)
                    continue
                open_lanes = [other for other in self.lanes if other.free]
                if not open_lanes:
                    break
                best = min(  # the least busy; lane 0 first (it alone decodes on every core)
                    open_lanes,
                    key=lambda other: (
                        len(other.active),
                        other.index > 0,
                        -other.shared(seq.prompt),
                    ),
                )
                if best is lane:
                    self._waiting.remove(seq)
                    lane.reserve(seq)
                    taken.append(seq)
                else:
                    best.wake.set()
        return taken

    def _threads(self, lane: Lane, rows: int | None) -> tuple[int, bool]:
        """Threads for ``lane``'s next step of ``rows`` sequences (None: a prompt), and
        whether to tell the tuner how long it took (only when lane 0 runs alone).

        Only lane 0 ever decodes on several threads; the others on one. llama.cpp's
        threads meet at an OpenMP barrier after every operation, and once OpenMP manages
        more threads than there are cores it stops spinning at barriers and sleeps
        instead: a lane of two threads beside another lane's idle two then took 20.8 ms
        a step instead of 8.6, slower than one thread (13.7 ms).
        """
        busy = sum(1 for other in self.lanes if other.active)
        with self._tuning:
            if lane.index:
                return 1, False
            if busy > 1:  # the other busy lanes have a core each
                return max(1, (self.tuner.fixed or self.tuner.current) - (busy - 1)), False
            if rows is None:
                return self.tuner.batch_threads(), False
            return self.tuner.threads(rows), True

    def _record(self, n: int, rows: int, seconds: float) -> None:
        with self._tuning:
            self.tuner.record(n, rows, seconds)
