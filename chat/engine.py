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
from chat.errors import InputError
from chat.prompting import fit_prompt, validate_history
from chat.settings import DecodingSettings
from chat.stops import StopFilter

_END = object()


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

    def to_api(self) -> dict:
        """The stable dict returned by the ``/chat`` endpoint."""
        data = asdict(self)
        data.pop("done")
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
    """Runs chat turns on one loaded backend, one generation at a time."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self._lock = threading.Lock()

    def stream_turn(
        self,
        message: str,
        history: list[dict] | None,
        prefix: list[dict],
        settings: DecodingSettings,
        cancel: threading.Event | None = None,
        passages: list | None = None,
        started_at: float | None = None,
    ) -> Iterator[TurnResult]:
        """Yield growing snapshots of the reply; the last one has ``done=True``.

        ``prefix`` is the persona's system prompt and few-shot examples;
        ``passages`` are retrieved document chunks (best first) to answer from;
        ``started_at`` (a ``time.perf_counter()``) makes the time to first token
        include work done before, such as retrieval.
        Raises ``ChatStudioError`` subclasses for bad input or settings.
        """
        t_start = started_at or time.perf_counter()
        if not isinstance(message, str) or not message.strip():
            raise InputError("message is empty: type something to send")
        history = validate_history(history)
        info = self.backend.info
        self.backend.capabilities.check(settings, info.backend)

        fitted = fit_prompt(
            self.backend, prefix, history, message, info.n_ctx, settings.max_new_tokens, passages
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
        request = GenerationRequest(fitted.prompt, settings, seed, max_new, stops)

        n = settings.num_return_sequences
        filters = [StopFilter(stops) for _ in range(n)]
        tokens = [0] * n
        finish: list[str | None] = [None] * n
        stats = {
            "prompt_tokens": fitted.prompt_tokens,
            "completion_tokens": 0,
            "tokens_per_s": 0.0,
            "ttft_s": None,
            "elapsed_s": 0.0,
            "model": info.model,
            "backend": info.backend,
            "device": info.device,
            "seed": seed,
            "dropped_turns": fitted.dropped_turns,
            "max_new_tokens": max_new,
            "finish_reason": None,
        }

        def snapshot(done: bool) -> TurnResult:
            texts = [f.text(final=done).strip() if done else f.text().lstrip() for f in filters]
            return TurnResult(
                reply=texts[0],
                candidates=texts,
                prompt_messages=[dict(m) for m in fitted.messages],
                stats=dict(stats),
                settings=settings.model_dump() | {"seed": seed},
                notices=list(fitted.notices),
                sources=sources,
                done=done,
            )

        halt = threading.Event()
        deltas: queue.Queue = queue.Queue()
        worker = threading.Thread(
            target=self._produce, args=(request, halt, deltas), daemon=True, name="generate"
        )
        worker.start()
        t_first = t_last = None
        cancelled = False
        try:
            while True:
                try:
                    item = deltas.get(timeout=0.05)
                except queue.Empty:
                    item = None
                batch = [] if item is None else [item]
                while True:  # drain whatever else is ready, so the UI never slows the model
                    try:
                        batch.append(deltas.get_nowait())
                    except queue.Empty:
                        break
                if cancel is not None and cancel.is_set() and not cancelled:
                    cancelled = True
                    halt.set()
                ended = False
                for item in batch:
                    if item is _END:
                        ended = True
                        break
                    if isinstance(item, BaseException):
                        raise item
                    now = time.perf_counter()
                    d: Delta = item
                    if d.tokens:
                        tokens[d.index] += d.tokens
                        t_last = now
                        if t_first is None:
                            t_first = now
                            stats["ttft_s"] = round(now - t_start, 4)
                    if filters[d.index].feed(d.text):
                        finish[d.index] = "stop"
                        if all(f.stopped for f in filters):
                            halt.set()
                    if d.finish_reason and finish[d.index] is None:
                        finish[d.index] = "cancelled" if cancelled else d.finish_reason
                stats["completion_tokens"] = done_tokens = sum(tokens)
                if t_first is not None and done_tokens > 1:
                    if t_last - t_first > 1e-3:  # streamed: decode speed after the first token
                        speed = (done_tokens - 1) / (t_last - t_first)
                    else:  # everything arrived at once (beam search): the whole turn counts
                        speed = done_tokens / (t_last - t_start)
                    stats["tokens_per_s"] = round(speed, 2)
                stats["elapsed_s"] = round(time.perf_counter() - t_start, 4)
                if ended:
                    break
                if batch:
                    yield snapshot(done=False)
        finally:
            halt.set()
            worker.join()
        finish = [f or ("cancelled" if cancelled else "length") for f in finish]
        stats["finish_reason"] = finish[0] if n == 1 else finish
        yield snapshot(done=True)

    def _produce(self, request: GenerationRequest, halt: threading.Event, out: queue.Queue):
        """Worker thread: run the backend under the model lock and pass deltas on."""
        try:
            with self._lock:
                for delta in self.backend.generate(request, halt):
                    out.put(delta)
                    if halt.is_set():
                        break
        except BaseException as exc:  # handed to the consumer, which re-raises it
            out.put(exc)
        finally:
            out.put(_END)
