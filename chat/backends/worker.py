"""The child process that runs a llama.cpp model for ``SubprocessBackend``.

    python -m chat.backends.worker ADDRESS   (the auth key comes in CHAT_STUDIO_WORKER_KEY)

It connects back to the app, loads the model and answers calls of the
backend protocol: plain calls are answered in order; a generation streams its
deltas from a thread, so a cancel (or a token count for the next prompt) is
heard while it runs. It never imports torch, and it exits when the app does.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback

ALLOWED = {
    "render",
    "stop_strings",
    "count_tokens",
    "truncate",
    "tokenize",
    "piece",
    "next_logits",
    "score",
}


def serve(conn, backend) -> None:
    """Answer the app's messages until it closes the connection."""
    send_lock = threading.Lock()
    cancels: dict[int, threading.Event] = {}

    def send(message) -> None:
        with send_lock:
            conn.send(message)

    def generate(call_id: int, request) -> None:
        try:
            for burst in backend.bursts(request, cancels[call_id]):  # one message each
                send(("deltas", call_id, burst))
            send(("end", call_id))
        except BaseException as exc:  # reported to the app, which re-raises it
            send(("error", call_id, type(exc).__name__, str(exc)))
        finally:
            cancels.pop(call_id, None)

    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        kind = message[0]
        if kind == "close":
            return
        if kind == "cancel":
            event = cancels.get(message[1])
            if event is not None:
                event.set()
        elif kind == "generate":
            _, call_id, request = message
            cancels[call_id] = threading.Event()
            threading.Thread(target=generate, args=(call_id, request), daemon=True).start()
        elif kind == "call":
            _, call_id, method, args = message
            try:
                if method not in ALLOWED:
                    raise ValueError(f"unknown call {method!r}")
                send(("result", call_id, getattr(backend, method)(*args)))
            except Exception as exc:
                send(("error", call_id, type(exc).__name__, str(exc)))


def _watch_parent(parent: int) -> None:
    """Exit when the app is gone (however it ended), so no model is left running."""
    while True:
        if os.getppid() != parent:
            os._exit(0)
        time.sleep(1.0)


def main(argv: list[str]) -> int:
    """Connect, load the model, report ready (or why not), serve."""
    from multiprocessing.connection import Client

    address = argv[1]
    key = bytes.fromhex(os.environ.pop("CHAT_STUDIO_WORKER_KEY", ""))
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    conn = Client(address, authkey=key)
    options = conn.recv()
    try:
        from chat.backends.llama_cpp_backend import LlamaCppBackend

        backend = LlamaCppBackend(**options)
    except Exception as exc:
        conn.send(("failed", type(exc).__name__, str(exc)))
        return 1
    conn.send(
        (
            "ready",
            {
                "info": backend.info,
                "capabilities": backend.capabilities,
                "sampler_order": backend.sampler_order,
                "penalty_last_n": backend.penalty_last_n,
                "pid": os.getpid(),
            },
        )
    )
    try:
        serve(conn, backend)
    except Exception:
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
