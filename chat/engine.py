"""One chat turn: persona + history + message in, streamed reply with metadata out.

The UI and the ``/chat`` API both run ``ChatEngine.stream_turn(TurnRequest(...))``. The backend
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

from chat.backends.base import Backend, GenerationRequest
from chat.errors import BusyError, Cancelled, InputError
from chat.foreground import Foreground
from chat.progress import TurnProgress
from chat.prompting import PromptRequest, fit_prompt, validate_history
from chat.rag_formats import MARKER, get_format
from chat.text import clean_text
from chat.turns import PreparedTurn, TurnRequest, TurnResult, source_dict

UPDATE_EVERY_S = 0.02
_END = object()
_NO_SLOT = object()
_STARTED = object()  # the worker holds a generation slot: the model is at work
HEARTBEAT_S = 1.0  # while the model works without output (beam search), a snapshot this often


class ChatEngine:
    """Runs chat turns on one loaded backend, ``concurrency`` generations at a time.

    A generation slot is taken only once the prompt is built, and waiting for
    one gives up as soon as the request is cancelled. From the slot to the first
    token, a turn is in ``foreground`` (listeners may pause background work).
    """

    def __init__(
        self, backend: Backend, concurrency: int = 1, foreground: Foreground | None = None
    ):
        self.backend = backend
        self.concurrency = concurrency
        self.foreground = foreground or Foreground()
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
        self, turn: TurnRequest, cancel: threading.Event | None = None
    ) -> Iterator[TurnResult]:
        """Yield growing snapshots of the reply to ``turn``; the last one has ``done=True``.

        Raises ``ChatStudioError`` subclasses for bad input or settings, and
        ``Cancelled`` when ``cancel`` is set before generation starts; set
        later, it halts the backend and the last snapshot says so.
        """
        t_start = turn.started_at or time.perf_counter()
        # Check the message, history and settings against what the backend can do.
        message, history = self._check(turn)
        # Fit persona, history, passages and message into the window: the backend's request.
        ready = self._prepare(turn, message, history, cancel)
        progress = TurnProgress(turn.settings.num_return_sequences, ready.request.stop, t_start)
        # Generate in a worker thread holding a generation slot; show what it writes.
        timed_out = yield from self._follow(ready, progress, turn, cancel)
        # Settle each candidate's finish reason; the last snapshot says why it ended.
        progress.close("time_limit" if timed_out else "cancelled", progress.cancelled)
        ready.stats["model"] = self.backend.info.model  # a remote engine may have named it
        final = ready.snapshot(progress, turn, done=True)
        if timed_out:
            final.notices.append(
                f"Stopped after {turn.max_seconds:g} s: this app limits one generation to "
                "that (--max-request-seconds)."
            )
        yield final

    def _check(self, turn: TurnRequest) -> tuple[str, list[dict]]:
        """The cleaned message and history, once the backend is known to honour the turn."""
        if not isinstance(turn.message, str) or not turn.message.strip():
            raise InputError("message is empty: type something to send")
        message = clean_text(turn.message)
        history = validate_history(turn.history)
        caps = self.backend.capabilities
        caps.check(turn.settings, self.backend.info.backend)
        if turn.top_logprobs:
            caps.require("logprobs")
        if turn.forced:
            caps.require("force_prefix")
        return message, history

    def _prepare(
        self, turn: TurnRequest, message: str, history: list[dict], cancel
    ) -> PreparedTurn:
        """The prompt fitted into the window, the request for the backend, and the stats,
        prompt parts and sources every snapshot reports."""
        info, settings = self.backend.info, turn.settings
        rag_format = get_format(turn.prompt_format, info.chat_template) if turn.passages else None
        t_fit = time.perf_counter()
        fitted = fit_prompt(
            self.backend,
            PromptRequest(
                prefix=turn.prefix,
                history=history,
                message=message,
                n_ctx=info.n_ctx,
                max_new_tokens=settings.max_new_tokens,
                passages=turn.passages,
                suffix=turn.suffix,
                rag_format=rag_format,
            ),
            cancel,
        )
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
            turn.top_logprobs,
            list(turn.forced or []),
            [dict(m) for m in fitted.messages],
        )
        stats = {
            "prompt_tokens": fitted.prompt_tokens,
            "completion_tokens": 0,
            "tokens_per_s": 0.0,
            "ttft_s": None,
            "elapsed_s": 0.0,
            "model": info.model,
            "backend": info.backend,
            "remote": self.backend.capabilities.remote,  # answered by an engine elsewhere
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
            "prefix": len(turn.prefix),
            "history": len(fitted.messages) - len(turn.prefix) - 1 - len(turn.suffix or []),
            "message": message,
            "max_new_tokens": max_new,
            "n_ctx": info.n_ctx,
        }
        return PreparedTurn(
            request=request,
            fitted=fitted,
            stats=stats,
            parts=parts,
            sources=[source_dict(i, p) for i, p in enumerate(fitted.passages, 1)],
            settings_used=settings.applied() | {"seed": seed},  # only what this strategy used
            sent=[dict(m) for m in fitted.messages],
        )

    def _follow(self, ready: PreparedTurn, progress: TurnProgress, turn: TurnRequest, cancel):
        """Run the backend in a worker thread and yield snapshots as its deltas arrive
        (and a heartbeat while it works silently); returns whether the time limit hit.

        ``cancel`` or the time limit halt the backend itself; ``progress.cancelled``
        says whether either did."""
        halt = threading.Event()
        deltas: queue.Queue = queue.Queue()
        worker = threading.Thread(
            target=self._produce, args=(ready.request, halt, deltas), daemon=True, name="generate"
        )
        worker.start()
        timed_out = False
        max_seconds = turn.max_seconds
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
                if cancel is not None and cancel.is_set() and not progress.cancelled:
                    progress.cancelled = True
                    halt.set()
                if deadline is not None and not timed_out and time.perf_counter() > deadline:
                    timed_out = progress.cancelled = True
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
                    if progress.add(item, progress.cancelled):
                        halt.set()  # every candidate met a stop string
                if ended:
                    return timed_out
                if any(item is not _STARTED for item in batch):
                    yield ready.snapshot(progress, turn, done=False)
                    if progress.t_first is not None:
                        last_yield = time.perf_counter()
                elif started and time.perf_counter() - (last_yield or started) >= HEARTBEAT_S:
                    yield ready.snapshot(progress, turn, done=False)  # no output yet: the time
                    last_yield = time.perf_counter()
        finally:
            halt.set()
            worker.join()

    def _produce(self, request: GenerationRequest, halt: threading.Event, out: queue.Queue):
        """Worker thread: run the backend in a generation slot and pass deltas on."""
        try:
            if not self.acquire(halt):
                out.put(_NO_SLOT)
                return
            out.put(_STARTED)
            try:
                deltas = self.backend.generate(request, halt)
                if not self.backend.capabilities.remote:  # a remote engine shares no CPU with us
                    deltas = self.foreground.until_first(deltas)
                for delta in deltas:
                    out.put(delta)
                    if halt.is_set():
                        break
            finally:
                self.release()
        except BaseException as exc:  # handed to the consumer, which re-raises it
            out.put(exc)
        finally:
            out.put(_END)


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
