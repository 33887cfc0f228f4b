"""A llama.cpp model in a child process: the same backend, out of torch's way.

On a GPU machine, llama-cpp-python built with CUDA and torch cannot share a
process (one aborts in ``free()``, the other segfaults loading the model). The
app needs torch for document search and the transformers backend, so there
the llama.cpp model runs in a child (``chat.backends.worker``) that never
imports torch. This class is its stand-in in the app: every call of the
backend protocol, generation and inspection included, goes over a local
authenticated connection. The child is restarted if it dies (the request in
flight gets a clear error), killed when the app exits, and exits by itself if
the app is killed.
"""

from __future__ import annotations

import atexit
import dataclasses
import itertools
import os
import queue
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from chat import errors
from chat.backends.base import Delta, GenerationRequest
from chat.errors import ChatStudioError, ModelLoadError

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 300


class WorkerDied(ChatStudioError):
    """The model process stopped; it is being restarted."""


class SubprocessBackend:
    """The backend protocol, served by a llama.cpp model in a child process."""

    def __init__(self, **options):
        self.options = options  # LlamaCppBackend's arguments
        self.parallel = max(1, options.get("parallel", 1))  # sequences the child decodes together
        self._ids = itertools.count(1)
        self._waiting: dict[int, queue.Queue] = {}
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self.proc = None
        self.conn = None
        self.restarts = 0
        self._start()
        atexit.register(self.close)

    # -- the child ------------------------------------------------------------------------

    def _start(self) -> None:
        from multiprocessing.connection import Listener

        key = secrets.token_bytes(32)
        folder = tempfile.mkdtemp(prefix="chat-studio-worker-")
        listener = Listener(os.path.join(folder, "socket"), family="AF_UNIX", authkey=key)
        # The key travels in the environment, which other users cannot read.
        env = {**os.environ, "CHAT_STUDIO_WORKER_KEY": key.hex()}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chat.backends.worker", listener.address], cwd=ROOT, env=env
        )
        try:
            self.conn = _accept(listener, self.proc)
        finally:
            listener.close()  # removes the socket; the folder goes too
            shutil.rmtree(folder, ignore_errors=True)
        self.conn.send(self.options)
        ready = self.conn.recv()
        if ready[0] == "failed":
            self.proc.wait(timeout=30)
            raise _error(ready[1], ready[2])
        meta = ready[1]
        self.info = dataclasses.replace(meta["info"], device=f"{meta['info'].device}, own process")
        self.capabilities = meta["capabilities"]
        self.sampler_order = meta["sampler_order"]
        self.penalty_last_n = meta["penalty_last_n"]
        self.pid = meta["pid"]
        threading.Thread(target=self._read, args=(self.conn,), daemon=True).start()

    def _read(self, conn) -> None:
        """Hand each answer to whoever waits for it; on EOF, fail them all and restart."""
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            waiting = self._waiting.get(message[1])
            if waiting is not None:
                waiting.put(message)
        if conn is not self.conn or self.proc is None:  # replaced, or closed on purpose
            return
        # The socket closes a moment before the process is reaped: wait for it (a child
        # without its connection is of no use), else the restart below thinks it alive.
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        with self._lock:
            waiters, self._waiting = list(self._waiting.values()), {}
        for waiting in waiters:
            waiting.put(("died", code))
        self._restart()

    def _restart(self) -> None:
        with self._lock:
            if self.proc is not None and self.proc.poll() is None:
                return
            self.restarts += 1
            try:
                self._start()
            except ChatStudioError:
                self.conn = None

    def close(self) -> None:
        """Stop the child (at exit, or when another model is loaded)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            with self._send_lock:
                self.conn.send(("close",))
        except (OSError, AttributeError):
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()

    # -- calls -------------------------------------------------------------------------------

    def _send(self, message) -> None:
        with self._lock:  # a restart under way finishes first
            conn = self.conn
        if conn is None:
            self._restart()
            conn = self.conn
            if conn is None:
                raise WorkerDied("The model process could not be restarted; see the app's log.")
        try:
            with self._send_lock:
                conn.send(message)
        except OSError:  # it died just now; the reader thread restarts it
            raise WorkerDied(
                "The model process stopped unexpectedly; it is being restarted. "
                "Send your message again."
            ) from None

    def _call(self, method: str, *args):
        call_id = next(self._ids)
        answers: queue.Queue = queue.Queue()
        self._waiting[call_id] = answers
        try:
            self._send(("call", call_id, method, args))
            return _outcome(answers.get())
        finally:
            self._waiting.pop(call_id, None)

    def render(self, messages: list[dict]) -> str:
        """Apply the model's chat template (in the child)."""
        return self._call("render", messages)

    def stop_strings(self) -> list[str]:
        """Stop strings of the prompt format."""
        return self._call("stop_strings")

    def count_tokens(self, prompt: str) -> int:
        """Prompt tokens."""
        return self._call("count_tokens", prompt)

    def truncate(self, text: str, max_tokens: int) -> str:
        """The first ``max_tokens`` tokens of ``text``."""
        return self._call("truncate", text, max_tokens)

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        """Token ids of ``text``."""
        return self._call("tokenize", text, special)

    def piece(self, token_id: int) -> str:
        """How one token reads."""
        return self._call("piece", token_id)

    def next_logits(self, ids: list[int]):
        """Raw logits after ``ids``."""
        return self._call("next_logits", ids)

    def score(self, ids: list[int], first: int = 1):
        """Log-probabilities and entropies of ``ids`` from ``first`` on."""
        return self._call("score", ids, first)

    def generate(self, request: GenerationRequest, cancel: threading.Event) -> Iterator[Delta]:
        """Stream the child's deltas; a cancel is passed on, and the stream drained."""
        call_id = next(self._ids)
        answers: queue.Queue = queue.Queue()
        self._waiting[call_id] = answers
        cancelled = False
        try:
            self._send(("generate", call_id, request))
            while True:
                try:
                    message = answers.get(timeout=0.05)
                except queue.Empty:
                    message = None
                if cancel.is_set() and not cancelled:
                    cancelled = True
                    self._send(("cancel", call_id))
                if message is None:
                    continue
                if message[0] == "deltas":
                    yield from message[2]
                elif message[0] == "end":
                    return
                else:
                    _outcome(message)
        finally:
            if not cancelled and self.conn is not None:
                try:
                    self._send(("cancel", call_id))  # our consumer went away
                except (OSError, ChatStudioError):
                    pass
            self._waiting.pop(call_id, None)


def _accept(listener, proc):
    """The child's connection, or the reason it never came."""
    result: list = []
    thread = threading.Thread(target=lambda: result.append(listener.accept()), daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.2)
        if proc.poll() is not None and not result:
            raise ModelLoadError(
                f"The model process exited (code {proc.returncode}) before it was ready; "
                "see the messages above."
            )
    return result[0]


def _outcome(message):
    kind = message[0]
    if kind == "result":
        return message[2]
    if kind == "died":
        raise WorkerDied(
            f"The model process stopped unexpectedly (exit code {message[1]}); it is being "
            "restarted. Send your message again."
        )
    raise _error(message[2], message[3])


def _error(name: str, text: str) -> Exception:
    """The child's exception, as the same ChatStudioError class where it is one."""
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, ChatStudioError):
        return cls(text)
    return ModelLoadError(f"The model process failed: {name}: {text}")
