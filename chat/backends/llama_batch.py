"""Continuous batching for llama.cpp: concurrent conversations decode in one step.

One thread owns a llama.cpp context made for ``parallel`` sequences, each
with its own KV cache (``kv_unified`` off: a shared one changed outputs and
was no faster). Each step puts the next token of every active sequence into
one ``llama_batch``, decodes once, and samples each sequence with its own
sampler chain (built by llama-cpp-python's ``Llama._init_sampler``, so the
sampler order and seeded results are those of ``Llama.generate``). A request
joins at the next step: its prompt is evaluated alone (so its logits are
exactly those of a solo run), reusing the longest prefix a free sequence
still holds. A finished or cancelled sequence frees its slot at once.
Jobs that need the model to themselves (perplexity, the next-token explorer)
run between steps on the ``Llama`` object's own context.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from chat.backends import llama_internals as internals
from chat.backends.base import Delta, GenerationRequest
from chat.backends.threads import ThreadTuner
from chat.errors import ChatStudioError
from chat.stops import StopFilter

_DONE = object()
# A caller's thread wakes at most this often (seconds) to take the tokens decoded since.
# Woken at every token, it took a core from llama.cpp's decoding threads each time, and
# they wait for each other at every operation: on a quiet 2-core machine the app decoded at
# 0.84 of raw llama-cpp-python, 0.87 with 20 ms, 0.94 with 50 ms (bench_chat --neighbour).
# The first token is passed on at once; later ones reach the page in batches of a few.
RELAY_EVERY_S = 0.05


class DecodeError(ChatStudioError):
    """llama.cpp could not decode a step (out of KV space)."""


@dataclass(eq=False)
class _Seq:
    """One candidate of one request, from joining to its last delta."""

    request: GenerationRequest
    index: int  # candidate number
    cancel: threading.Event
    prompt: list[int]
    out: queue.Queue = field(default_factory=queue.Queue)
    abandoned: bool = False  # the consumer went away
    seq_id: int = -1
    sampler: object = None
    decoder: object = None
    stops: StopFilter | None = None
    seen: list[int] = field(default_factory=list)
    count: int = 0
    next_token: int = -1

    def stopped(self) -> bool:
        return self.abandoned or self.cancel.is_set()


class BatchScheduler:
    """The thread that decodes every active sequence of one model together."""

    def __init__(self, backend, parallel: int, n_ctx: int, tuner: ThreadTuner):
        import llama_cpp

        self.backend = backend
        self.llm = llm = backend.llm
        self.parallel = parallel
        self.tuner = tuner
        params = type(llm.context_params).from_buffer_copy(llm.context_params)
        params.n_ctx = n_ctx * parallel  # each sequence gets n_ctx of its own
        params.n_seq_max = parallel
        params.kv_unified = False
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        params.n_threads = tuner.fixed or tuner.current
        params.n_threads_batch = tuner.batch_threads()
        self._context = internals.new_context(llm, params)
        self.ctx = self._context.ctx
        self.n_batch = llm.n_batch
        self._batch = internals.new_batch(max(self.n_batch, parallel))
        self._mem = llama_cpp.llama_get_memory(self.ctx)
        self._n_vocab = llm.n_vocab()
        self._threads = (params.n_threads, params.n_threads_batch)
        self._cached: dict[int, list[int]] = {s: [] for s in range(parallel)}  # tokens in KV
        self._free = list(range(parallel))
        self._active: list[_Seq] = []
        self._joining: queue.Queue = queue.Queue()
        self._waiting: list[_Seq] = []
        self._jobs: queue.Queue = queue.Queue()
        self._wake = threading.Event()
        self._closed = False
        self.steps = 0
        self._thread = threading.Thread(target=self._run, daemon=True, name="llama-batch")
        self._thread.start()

    # -- the callers' side -----------------------------------------------------------------

    def stream(self, request: GenerationRequest, index: int, prompt: list[int], cancel):
        """Yield candidate ``index``'s deltas; the last has ``finish_reason`` set."""
        seq = _Seq(request, index, cancel, prompt)
        self._joining.put(seq)
        self._wake.set()
        finished = False
        woke = None
        try:
            while True:
                if woke is not None:  # after the first token, wake at most every RELAY_EVERY_S
                    wait = RELAY_EVERY_S - (time.perf_counter() - woke)
                    if wait > 0:
                        time.sleep(wait)
                items = [seq.out.get()]
                woke = time.perf_counter()
                while True:
                    try:
                        items.append(seq.out.get_nowait())
                    except queue.Empty:
                        break
                for item in items:
                    if item is _DONE:
                        finished = True
                        return
                    if isinstance(item, BaseException):
                        finished = True
                        raise item
                    yield item
        finally:
            if not finished:
                seq.abandoned = True
                self._wake.set()

    def exclusive(self, job: Callable):
        """Run ``job()`` on the scheduler thread between two steps; return its result."""
        if threading.current_thread() is self._thread:
            return job()
        done: queue.Queue = queue.Queue()
        self._jobs.put((job, done))
        self._wake.set()
        ok, value = done.get()
        if not ok:
            raise value
        return value

    def close(self) -> None:
        """Stop the thread and free the context."""
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=30)
        self._batch.close()
        self._context.close()

    # -- the scheduler thread --------------------------------------------------------------

    def _run(self) -> None:
        while not self._closed:
            self._run_jobs()
            self._admit()
            if not self._active:
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            try:
                self._step()
            except Exception as exc:  # every sequence of the failed step gets the error
                for seq in list(self._active):
                    seq.out.put(exc)
                    self._release(seq)

    def _run_jobs(self) -> None:
        while True:
            try:
                job, done = self._jobs.get_nowait()
            except queue.Empty:
                return
            try:
                done.put((True, job()))
            except BaseException as exc:
                done.put((False, exc))

    def _admit(self) -> None:
        while True:
            try:
                self._waiting.append(self._joining.get_nowait())
            except queue.Empty:
                break
        for seq in list(self._waiting):
            if seq.stopped():
                self._waiting.remove(seq)
                seq.out.put(Delta(seq.index, "", finish_reason="cancelled"))
                seq.out.put(_DONE)
            elif self._free:
                self._waiting.remove(seq)
                try:
                    self._start(seq)
                except Exception as exc:
                    seq.out.put(exc)
                    self._release(seq)

    def _start(self, seq: _Seq) -> None:
        """Evaluate the prompt (and forced tokens) of a joining sequence; sample its first token."""
        from chat.backends.llama_cpp_backend import _Utf8Pieces

        request, s = seq.request, seq.request.settings
        seq.seq_id = self._take_slot(seq.prompt)
        self._active.append(seq)
        self.llm.set_seed((request.seed + seq.index) % 2**32)
        temp = 0.0 if s.strategy == "greedy" else s.temperature
        seq.sampler = internals.new_sampler(
            self.llm, s.top_k, s.top_p, temp, s.repetition_penalty
        )
        seq.decoder = _Utf8Pieces(self.llm)
        seq.stops = StopFilter(request.stop)
        seq.seen = list(seq.prompt)
        cached = self._cached[seq.seq_id]
        self._eval(seq.seq_id, seq.prompt[len(cached) :], len(cached))
        k = max(request.top_logprobs, 1)
        for token in request.forced:
            piece = seq.decoder.add(token)
            row = self._row(self._last_index)
            info = self.backend._info(token, piece, request, seq.seen, row, k)
            seq.seen.append(token)
            seq.out.put(Delta(seq.index, piece, tokens=1, token=info))
            self._eval(seq.seq_id, [token], len(self._cached[seq.seq_id]))
        seq.count = len(request.forced)
        self._take(seq, self._last_index)

    def _take_slot(self, prompt: list[int]) -> int:
        """The free sequence whose cached tokens share the longest prefix with ``prompt``."""
        import llama_cpp

        def shared(seq_id: int) -> int:
            n = 0
            for a, b in zip(self._cached[seq_id], prompt, strict=False):
                if a != b:
                    break
                n += 1
            return min(n, len(prompt) - 1)  # the last prompt token is evaluated again for logits

        seq_id = max(self._free, key=shared)
        self._free.remove(seq_id)
        keep = shared(seq_id)
        llama_cpp.llama_memory_seq_rm(self._mem, seq_id, keep, -1)
        del self._cached[seq_id][keep:]
        return seq_id

    def _eval(self, seq_id: int, tokens: list[int], pos: int) -> None:
        """Decode ``tokens`` of one sequence from position ``pos``, logits for the last."""
        self._set_threads(self.tuner.fixed or self.tuner.current, self.tuner.batch_threads())
        for start in range(0, len(tokens), self.n_batch):
            chunk = tokens[start : start + self.n_batch]
            entries = [(t, pos + start + i, seq_id) for i, t in enumerate(chunk)]
            self._decode(entries, last_only=True)
            self._cached[seq_id].extend(chunk)

    def _step(self) -> None:
        """One token for every active sequence, in one decode."""
        for seq in [s for s in self._active if s.stopped()]:
            self._finish(seq, "cancelled")
        seqs = list(self._active)
        if not seqs:
            return
        n = self.tuner.threads(len(seqs))
        self._set_threads(n, n)  # llama.cpp uses the batch count for a step of several tokens
        entries = [(s.next_token, len(self._cached[s.seq_id]), s.seq_id) for s in seqs]
        t0 = time.perf_counter()
        self._decode(entries, last_only=False)
        self.tuner.record(n, len(seqs), time.perf_counter() - t0)
        self.steps += 1
        for i, seq in enumerate(seqs):
            self._cached[seq.seq_id].append(seq.next_token)
            self._take(seq, i)

    def _take(self, seq: _Seq, idx: int) -> None:
        """Sample ``seq``'s next token from batch row ``idx`` and hand it on (as Llama.generate)."""
        request = seq.request
        row = self._row(idx) if request.top_logprobs else None  # before sampling changes nothing
        token = internals.sample(seq.sampler, self.ctx, idx)
        if seq.stopped():
            return self._finish(seq, "cancelled")
        if internals.is_end(self.llm, token):
            return self._finish(seq, "stop")
        if seq.count >= request.max_new_tokens:
            return self._finish(seq, "length")
        seq.count += 1
        piece = seq.decoder.add(token)
        info = self.backend._info(token, piece, request, seq.seen, row) if row is not None else None
        seq.seen.append(token)
        seq.out.put(Delta(seq.index, piece, tokens=1, token=info))
        if seq.stops.feed(piece):
            return self._finish(seq, "stop")
        if seq.count >= request.max_new_tokens:
            return self._finish(seq, "length")
        seq.next_token = token

    def _finish(self, seq: _Seq, reason: str) -> None:
        seq.out.put(Delta(seq.index, seq.decoder.rest(), finish_reason=reason))
        seq.out.put(_DONE)
        self._release(seq)

    def _release(self, seq: _Seq) -> None:
        """Free ``seq``'s slot (its KV stays, as a prefix the next request may reuse)."""
        if seq in self._active:
            self._active.remove(seq)
        if seq.seq_id >= 0 and seq.seq_id not in self._free:
            self._free.append(seq.seq_id)
        if seq.sampler is not None:
            seq.sampler.close()
            seq.sampler = None

    # -- llama.cpp -------------------------------------------------------------------------

    def _set_threads(self, n: int, n_batch: int) -> None:
        import llama_cpp

        if (n, n_batch) != self._threads:
            llama_cpp.llama_set_n_threads(self.ctx, n, n_batch)
            self._threads = (n, n_batch)

    def _decode(self, entries: list[tuple[int, int, int]], last_only: bool) -> None:
        """Decode (token, position, sequence) entries; logits for each, or for the last only."""
        import llama_cpp

        batch = self._batch.batch
        for i, (token, pos, seq_id) in enumerate(entries):
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq_id
            batch.logits[i] = not last_only or i == len(entries) - 1
        batch.n_tokens = len(entries)
        self._last_index = len(entries) - 1
        code = llama_cpp.llama_decode(self.ctx, batch)
        if code != 0:
            for _, _, seq_id in entries:  # what was half-written is unusable
                llama_cpp.llama_memory_seq_rm(self._mem, seq_id, -1, -1)
                self._cached[seq_id] = []
            raise DecodeError(
                f"llama.cpp could not decode (code {code}): the conversation is longer than "
                "its context window. Start a new chat, or restart with a larger --n-ctx."
            )

    def _row(self, idx: int):
        """A copy of the logits of batch row ``idx``."""
        import llama_cpp
        import numpy as np

        ptr = llama_cpp.llama_get_logits_ith(self.ctx, idx)
        return np.ctypeslib.as_array(ptr, shape=(self._n_vocab,)).copy()

