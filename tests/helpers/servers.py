"""Servers for tests and benches: a free port, a real ``python -m llama_cpp.server`` for the
remote-engine tests, a TCP tap in front of it that records when each request arrives and when
its answer ends, and what a running app stored."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time

import httpx

from chat.models import default_model_path

FINISHED = re.compile(rb'"finish_reason":\s*"')


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """``llama_cpp.server`` with the bundled GGUF on a free loopback port."""

    def __init__(self, port: int | None = None, n_ctx: int = 2048):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(default_model_path()),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--n_ctx",
                str(n_ctx),
                # One request must never cut off another.
                "--interrupt_requests",
                "false",
            ],  # fmt: skip
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/models", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("llama_cpp.server did not start")

    def stop(self) -> None:
        """Stop the server."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Tap:
    """A TCP relay to ``target_port`` that logs each HTTP request's start and the end of
    its answer, so a test can tell whether the server had two requests at once."""

    def __init__(self, target_port: int):
        self.target = target_port
        self.events: list[tuple[float, str, int]] = []  # (time, "start" | "end", connection)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._ids = iter(range(1, 10**9))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            conn = next(self._ids)
            threading.Thread(
                target=self._pump, args=(client, upstream, conn, True), daemon=True
            ).start()
            threading.Thread(
                target=self._pump, args=(upstream, client, conn, False), daemon=True
            ).start()

    def _pump(self, src, dst, conn: int, requests: bool) -> None:
        try:
            while data := src.recv(65536):
                if requests and b"POST /v1/chat/completions" in data:
                    self.events.append((time.monotonic(), "start", conn))
                if not requests and (b"[DONE]" in data or FINISHED.search(data)):
                    self.events.append((time.monotonic(), "end", conn))
                dst.sendall(data)
        except OSError:
            pass
        finally:
            if not requests:
                self.events.append((time.monotonic(), "closed", conn))
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def most_at_once(self) -> int:
        """The most chat requests the server had open at the same moment."""
        open_, most = set(), 0
        for _, kind, conn in sorted(self.events):
            if kind == "start":
                open_.add(conn)
                most = max(most, len(open_))
            else:
                open_.discard(conn)
        return most

    def close(self) -> None:
        """Stop relaying."""
        self.server.close()


def session_collections(app) -> list[str]:
    """The session collections in a running app's store (read from its SQLite catalogue);
    ``app`` is anything with a ``data_dir`` (``tests.security.conftest.RunningApp``)."""
    import sqlite3

    db = app.data_dir / "chroma" / "chroma.sqlite3"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT name FROM collections").fetchall()
    return [r[0] for r in rows if r[0].startswith("session-")]
