"""One lane of continuous batching: a thread and a llama.cpp context for its sequences.

``chat.backends.llama_batch`` says why there are lanes and who joins which;
this module decodes one lane's sequences together, a token each per step.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field

from chat.backends import llama_internals as internals
from chat.backends.base import Delta, GenerationRequest
from chat.errors import ChatStudioError
from chat.stops import StopFilter

DONE = object()  # the last item of a sequence's queue
IDLE_WAIT_S = 0.5  # a lane with nothing to do looks again this often, unless woken


class DecodeError(ChatStudioError):
    """llama.cpp could not decode a step (out of KV space)."""


@dataclass(eq=False)
class Seq:
    """One candidate of one request, from joining to its last delta."""

    request: GenerationRequest
    index: int  # candidate number
    cancel: threading.Event
    prompt: list[int]
    out: queue.Queue = field(default_factory=queue.Queue)
    ended: threading.Event = field(default_factory=threading.Event)  # its last item is out
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

    def end(self, *items) -> None:
        """Hand on the last ``items`` (a final delta and DONE, or an error), waking the relay."""
        for item in items:
            self.out.put(item)
        self.ended.set()


class Lane:
    """One thread and one llama.cpp context, decoding its share of the sequences together."""

    def __init__(self, scheduler, index: int, slots: int, first: int, n_ctx: int):
        import llama_cpp

        self.scheduler = scheduler
        self.backend = scheduler.backend
        self.llm = llm = scheduler.llm
        self.index, self.first = index, first
        params = type(llm.context_params).from_buffer_copy(llm.context_params)
        params.n_ctx = n_ctx * slots  # each sequence gets n_ctx of its own
        params.n_seq_max = slots
        params.kv_unified = False
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        tuner = scheduler.tuner
        # Lanes after the first always decode on one thread (BatchScheduler._threads).
        params.n_threads = (tuner.fixed or tuner.current) if index == 0 else 1
        params.n_threads_batch = tuner.batch_threads() if index == 0 else 1
        self._context = internals.new_context(llm, params)
        self.ctx = self._context.ctx
        self.n_batch = llm.n_batch
        self._batch = internals.new_batch(max(self.n_batch, slots))
        self._mem = llama_cpp.llama_get_memory(self.ctx)
        self._n_vocab = llm.n_vocab()
        self._threads = (params.n_threads, params.n_threads_batch)
        self._cached: dict[int, list[int]] = {s: [] for s in range(slots)}  # tokens in KV
        self.free = list(range(slots))
        self.active: list[Seq] = []
        self.wake = threading.Event()
        self.steps = 0
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"llama-lane-{index}")

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.thread.join(timeout=30)
        self._batch.close()
        self._context.close()

    def shared(self, prompt: list[int]) -> int:
        """The longest prefix of ``prompt`` one of this lane's free sequences still holds."""
        return max((self._shared(s, prompt) for s in self.free), default=0)

    def _shared(self, seq_id: int, prompt: list[int]) -> int:
        n = 0
        for a, b in zip(self._cached[seq_id], prompt, strict=False):
            if a != b:
                break
            n += 1
        return min(n, len(prompt) - 1)  # the last prompt token is evaluated again for logits

    def reserve(self, seq: Seq) -> None:
        """Give ``seq`` the free slot sharing the longest prefix with its prompt."""
        seq.seq_id = max(self.free, key=lambda s: self._shared(s, seq.prompt))
        self.free.remove(seq.seq_id)
        self.active.append(seq)

    # -- the lane's thread -----------------------------------------------------------------

    def _warm(self) -> None:
        """Decode one token and forget it: a context's first decode sets up its buffers.

        Without this the first visitors to reach a fresh lane started 0.4-0.6 s apart.
        """
        import llama_cpp

        try:
            self._decode([(max(self.llm.token_bos(), 0), 0, 0)], last_only=True)
        finally:
            llama_cpp.llama_memory_seq_rm(self._mem, 0, -1, -1)
            self._cached[0] = []

    def _run(self) -> None:
        scheduler = self.scheduler
        with scheduler._gate.shared():
            self._warm()
        while not scheduler._closed:
            self.wake.clear()
            if self.index == 0:
                scheduler._run_jobs()
            with scheduler._gate.shared():
                for seq in scheduler._admit(self):
                    try:
                        self._start(seq)
                    except Exception as exc:
                        seq.end(exc)
                        self._release(seq)
                if self.active:
                    try:
                        self._step()
                    except Exception as exc:  # every sequence of the failed step gets the error
                        for seq in list(self.active):
                            seq.end(exc)
                            self._release(seq)
            if not self.active and (self.index or scheduler._jobs.empty()):
                self.wake.wait(IDLE_WAIT_S)

    def _start(self, seq: Seq) -> None:
        """Evaluate the prompt (and forced tokens) of a joining sequence; sample its first token."""
        import llama_cpp

        from chat.backends.llama_cpp_backend import _Utf8Pieces

        request, s = seq.request, seq.request.settings
        keep = self._shared(seq.seq_id, seq.prompt)
        llama_cpp.llama_memory_seq_rm(self._mem, seq.seq_id, keep, -1)
        del self._cached[seq.seq_id][keep:]
        temp = 0.0 if s.strategy == "greedy" else s.temperature
        with self.scheduler._seeding:
            self.llm.set_seed((request.seed + seq.index) % 2**32)
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

    def _eval(self, seq_id: int, tokens: list[int], pos: int) -> None:
        """Decode ``tokens`` of one sequence from position ``pos``, logits for the last."""
        n, _ = self.scheduler._threads(self, None)
        self._set_threads(n, n)
        for start in range(0, len(tokens), self.n_batch):
            chunk = tokens[start : start + self.n_batch]
            entries = [(t, pos + start + i, seq_id) for i, t in enumerate(chunk)]
            self._decode(entries, last_only=True)
            self._cached[seq_id].extend(chunk)

    def _step(self) -> None:
        """One token for every active sequence of the lane, in one decode."""
        for seq in [s for s in self.active if s.stopped()]:
            self._finish(seq, "cancelled")
        seqs = list(self.active)
        if not seqs:
            return
        n, record = self.scheduler._threads(self, len(seqs))
        self._set_threads(n, n)  # llama.cpp uses the batch count for a step of several tokens
        entries = [(s.next_token, len(self._cached[s.seq_id]), s.seq_id) for s in seqs]
        t0 = time.perf_counter()
        self._decode(entries, last_only=False)
        if record:
            self.scheduler._record(n, len(seqs), time.perf_counter() - t0)
        self.steps += 1
        for i, seq in enumerate(seqs):
            self._cached[seq.seq_id].append(seq.next_token)
            self._take(seq, i)

    def _take(self, seq: Seq, idx: int) -> None:
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

    def _finish(self, seq: Seq, reason: str) -> None:
        seq.end(Delta(seq.index, seq.decoder.rest(), finish_reason=reason), DONE)
        self._release(seq)

    def _release(self, seq: Seq) -> None:
        """Free ``seq``'s slot (its KV stays, as a prefix the next request may reuse)."""
        if seq in self.active:
            self.active.remove(seq)
        if seq.seq_id >= 0 and seq.seq_id not in self.free:
            self.free.append(seq.seq_id)
            if self.scheduler._waiting:  # someone waits for a slot: admit at once, not idle
                self.wake.set()
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
