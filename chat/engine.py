"""One chat turn: persona + history + message in, streamed reply with metadata out.

The UI and the ``/chat`` API both run ``ChatEngine.stream_turn``. The backend
generates in a worker thread that holds the model lock, so generation speed
never waits on the UI, one generation runs at a time per model, and a cancel
stops the backend itself, not only the display.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

from chat.backends.base import Backend, Delta, GenerationRequest
from chat.errors import BusyError, Cancelled, InputError
from chat.inspection import DEFAULT_CONFIDENCE, confidence
from chat.probs import TokenInfo
from chat.prompting import fit_prompt, validate_history
from chat.rag_formats import MARKER, get_format
from chat.settings import DecodingSettings
from chat.stops import StopFilter
from chat.text import clean_text

UPDATE_EVERY_S = 0.02
_END = object()
_NO_SLOT = object()
_STARTED = object()  # the worker holds a generation slot: the model is at work
HEARTBEAT_S = 1.0  # while the model works without output (beam search), a snapshot this often


@dataclass
class TurnResult:
    """A snapshot of a turn in progress (``done`` False) or finished."""

    reply: str
    candidates: list[str]
    prompt_messages: list[dict]
    stats: dict
    settings: dict
    notices: list[str] = field(default_factory=list)
    sources: list[dict] = field(default_factory=list)
    done: bool = False
    tokens: list[list[dict]] | None = None  # per candidate, with top_logprobs
    prompt: str = ""  # the exact prompt text (final snapshot only)
    parts: dict = field(default_factory=dict)  # how the prompt was built, for its anatomy
    # with retrieval, on the final snapshot: which passage supports each reply sentence,
    # and the passage sentence that best answers the question (retrieval.attribution)
    attribution: list[dict] = field(default_factory=list)
    extractive: dict | None = None

    def to_api(self) -> dict:
        """The stable dict returned by the ``/chat`` endpoint."""
        data = asdict(self)
        for internal in ("done", "prompt", "parts"):
            data.pop(internal)
        if data["tokens"] is None:
            data.pop("tokens")
        return data


def source_dict(number: int, passage) -> dict:
    """A retrieved passage as the API shows it, numbered as cited in the prompt."""
    return {
        "n": number,
        "text": passage.text,
        "source": passage.source,
        "page": passage.page,
        "section": passage.section,
        "chunk_index": passage.chunk_index,
        "score": round(float(passage.score), 4),
    }


class ChatEngine:
    """Runs chat turns on one loaded backend, ``concurrency`` generations at a time.

    A generation slot is taken only once the prompt is built, and waiting for
    one gives up as soon as the request is cancelled.
    """

    def __init__(self, backend: Backend, concurrency: int = 1):
        self.backend = backend
        self.concurrency = concurrency
        self._slots = threading.BoundedSemaphore(concurrency)

    def acquire(self, cancel: threading.Event | None = None) -> bool:
        """Take a generation slot; False if ``cancel`` was set while waiting."""
        while not self._slots.acquire(timeout=0.05):
            if cancel is not None and cancel.is_set():
                return False
        if cancel is not None and cancel.is_set():
            self._slots.release()
            return False
        return True

    def release(self) -> None:
        """Give a generation slot back."""
        self._slots.release()

    def swap(self, backend: Backend, timeout: float = 600.0) -> Backend:
        """Serve ``backend`` from now on; returns the previous one (to be closed).

        Waits, taking every slot, for the generations under way to finish.
        """
        taken = 0
        deadline = time.monotonic() + timeout
        try:
            while taken < self.concurrency:
                if not self._slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
                    raise InputError(
                        "The model is busy with long generations; try loading again later."
                    )
                taken += 1
            old, self.backend = self.backend, backend
            return old
        finally:
            for _ in range(taken):
                self._slots.release()

    def stream_turn(
        self,
        message: str,
        history: list[dict] | None,
        prefix: list[dict],
        settings: DecodingSettings,
        cancel: threading.Event | None = None,
        passages: list | None = None,
        started_at: float | None = None,
        max_seconds: float | None = None,
        top_logprobs: int = 0,
        forced: list[int] | None = None,
        confidence_threshold: float = DEFAULT_CONFIDENCE,
        suffix: list[dict] | None = None,
        prompt_format: str = "auto",
    ) -> Iterator[TurnResult]:
        """Yield growing snapshots of the reply; the last one has ``done=True``.

        ``prefix`` is the persona's system prompt and few-shot examples;
        ``passages`` are retrieved document chunks (best first) to answer from;
        ``started_at`` (a ``time.perf_counter()``) makes the time to first token
        include work done before, such as retrieval; ``max_seconds`` stops a
        generation that runs longer (finish reason ``time_limit``).
        ``top_logprobs`` > 0 adds each candidate's tokens with their
        probabilities and alternatives (and a confidence summary to the
        stats); ``forced`` token ids start the reply (a branch); ``suffix``
        messages follow the new message (post-history instructions);
        ``prompt_format`` names how passages enter the prompt (``chat.rag_formats``;
        "auto" picks by whether the model has a chat template).
        Raises ``ChatStudioError`` subclasses for bad input or settings, and
        ``Cancelled`` when ``cancel`` is set before generation starts.
        """
        t_start = started_at or time.perf_counter()
        if not isinstance(message, str) or not message.strip():
            raise InputError("message is empty: type something to send")
        message = clean_text(message)
        history = validate_history(history)
        info = self.backend.info
        caps = self.backend.capabilities
        caps.check(settings, info.backend)
        if top_logprobs:
            caps.require("logprobs")
        if forced:
            caps.require("force_prefix")

        rag_format = get_format(prompt_format, info.chat_template) if passages else None
        t_fit = time.perf_counter()
        fitted = fit_prompt(
            self.backend,
            prefix,
            history,
            message,
            info.n_ctx,
            settings.max_new_tokens,
            passages,
            cancel,
            suffix,
            rag_format,
        )
        sources = [source_dict(i, p) for i, p in enumerate(fitted.passages, 1)]
        max_new = fitted.max_new_tokens
        if settings.max_length is not None:
            max_new = min(max_new, settings.max_length - fitted.prompt_tokens)
            if max_new < 1:
                raise InputError(
                    f"max_length: {settings.max_length} tokens is not more than the prompt "
                    f"({fitted.prompt_tokens} tokens); raise max_length or leave it empty "
                    "and use max_new_tokens"
                )
        seed = settings.seed if settings.seed is not None else random.randrange(2**31)
        stops = list(dict.fromkeys(settings.stop + self.backend.stop_strings()))
        if rag_format is not None:  # a small model echoes the prompt's markers: end the reply there
            stops.append(MARKER)
        request = GenerationRequest(
            fitted.prompt,
            settings,
            seed,
            max_new,
            stops,
            top_logprobs,
            list(forced or []),
            [dict(m) for m in fitted.messages],
        )
        turn = _Turn(settings.num_return_sequences, stops, t_start)
        stats = {
            "prompt_tokens": fitted.prompt_tokens,
            "completion_tokens": 0,
            "tokens_per_s": 0.0,
            "ttft_s": None,
            "elapsed_s": 0.0,
            "model": info.model,
            "backend": info.backend,
            "remote": caps.remote,  # answered by an engine elsewhere
            "device": info.device,
            "seed": seed,
            "dropped_turns": fitted.dropped_turns,
            "fit_s": round(time.perf_counter() - t_fit, 4),
            "max_new_tokens": max_new,
            "finish_reason": None,
        }
        if rag_format is not None:
            stats["prompt_format"] = rag_format.name
        parts = {
            "prefix": len(prefix),
            "history": len(fitted.messages) - len(prefix) - 1 - len(suffix or []),
            "message": message,
            "max_new_tokens": max_new,
            "n_ctx": info.n_ctx,
        }

        settings_used = settings.applied() | {"seed": seed}  # only what this strategy used
        sent = [dict(m) for m in fitted.messages]

        def snapshot(done: bool) -> TurnResult:
            turn.fill(stats, done)
            texts = turn.texts(done)
            result = TurnResult(
                reply=texts[0],
                candidates=texts,
                prompt_messages=[dict(m) for m in sent] if done else sent,
                stats=dict(stats),
                settings=dict(settings_used) if done else settings_used,
                notices=list(fitted.notices),
                sources=sources,
                done=done,
                prompt=fitted.prompt if done else "",
                parts=parts,
            )
            if done and top_logprobs:
                result.tokens = turn.token_dicts()
                result.stats["confidence"] = confidence(turn.infos[0], confidence_threshold)
            return result

        halt = threading.Event()
        deltas: queue.Queue = queue.Queue()
        worker = threading.Thread(
            target=self._produce, args=(request, halt, deltas), daemon=True, name="generate"
        )
        worker.start()
        cancelled = timed_out = False
        deadline = None if max_seconds is None else time.perf_counter() + max_seconds
        last_yield = None
        started = None  # when the model began (its slot taken)
        try:
            while True:
                if last_yield is not None:  # after the first token: at most ~50 updates a second,
                    wait = UPDATE_EVERY_S - (time.perf_counter() - last_yield)  # so the model
                    if wait > 0:  # thread is not kept waiting for the GIL by this one
                        time.sleep(wait)
                batch = _drain(deltas)
                if cancel is not None and cancel.is_set() and not cancelled:
                    cancelled = True
                    halt.set()
                if deadline is not None and not timed_out and time.perf_counter() > deadline:
                    timed_out = cancelled = True
                    halt.set()
                ended = False
                for item in batch:
                    if item is _END:
                        ended = True
                        break
                    if isinstance(item, BaseException):
                        raise item
                    if item is _NO_SLOT:
                        if timed_out and not (cancel is not None and cancel.is_set()):
                            raise BusyError(
                                f"The model was busy with other requests for all of the "
                                f"{max_seconds:g} s this app allows one request "
                                "(--max-request-seconds); try again in a moment."
                            )
                        raise Cancelled("The request was cancelled while waiting for the model.")
                    if item is _STARTED:
                        started = time.perf_counter()
                        continue
                    if turn.add(item, cancelled):
                        halt.set()  # every candidate met a stop string
                if ended:
                    break
                if any(item is not _STARTED for item in batch):
                    yield snapshot(done=False)
                    if turn.t_first is not None:
                        last_yield = time.perf_counter()
                elif started and time.perf_counter() - (last_yield or started) >= HEARTBEAT_S:
                    yield snapshot(done=False)  # no output yet: the elapsed time, honestly
                    last_yield = time.perf_counter()
        finally:
            halt.set()
            worker.join()
        turn.close("time_limit" if timed_out else "cancelled", cancelled)
        stats["model"] = self.backend.info.model  # a remote engine may have named it by now
        final = snapshot(done=True)
        if timed_out:
            final.notices.append(
                f"Stopped after {max_seconds:g} s: this app limits one generation to that "
                "(--max-request-seconds)."
            )
        yield final

    def _produce(self, request: GenerationRequest, halt: threading.Event, out: queue.Queue):
        """Worker thread: run the backend in a generation slot and pass deltas on."""
        try:
            if not self.acquire(halt):
                out.put(_NO_SLOT)
                return
            out.put(_STARTED)
            try:
                for delta in self.backend.generate(request, halt):
                    out.put(delta)
                    if halt.is_set():
                        break
            finally:
                self.release()
        except BaseException as exc:  # handed to the consumer, which re-raises it
            out.put(exc)
        finally:
            out.put(_END)


class _Turn:
    """What the candidates of one turn have produced so far: text, counts, tokens, timing."""

    def __init__(self, n: int, stops: list[str], t_start: float):
        self.filters = [StopFilter(stops) for _ in range(n)]
        self.counts = [0] * n
        self.finish: list[str | None] = [None] * n
        self.infos: list[list[TokenInfo]] = [[] for _ in range(n)]
        self.t_start = t_start
        self.t_first = self.t_last = None
        self.spans: list[list[float]] = [[] for _ in range(n)]  # each candidate's first, last

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


def _drain(deltas: queue.Queue) -> list:
    """Whatever the worker has produced (waiting up to 50 ms for the first item)."""
    try:
        batch = [deltas.get(timeout=0.05)]
    except queue.Empty:
        return []
    while True:  # take everything that is ready, so the UI never slows the model
        try:
            batch.append(deltas.get_nowait())
        except queue.Empty:
            return batch
