"""A real ``python main.py`` on loopback, attacked the way a visitor of a share link could.

Two apps are started per module that needs them: a public one (bound to
0.0.0.0, no logins: every visitor is a stranger, nobody is an admin) with
small limits, and one with logins (alice is an admin, bob is not).
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, spawn_main

PUBLIC_LIMITS = [
    "--max-upload-mb", "1",
    "--max-request-upload-mb", "3",
    "--max-files-per-request", "3",
    "--max-session-upload-mb", "4",
    "--max-upload-storage-mb", "64",
    "--session-ttl-minutes", "0.05",
    "--max-history-messages", "2000",
    "--max-history-chars", "2000000",
    "--max-request-seconds", "60",
]  # fmt: skip
USERS = {"alice": "alice-password-1", "bob": "bob-password-22"}


@dataclass
class RunningApp:
    """A ``main.py`` process, its URL, data folder and everything it printed."""

    proc: subprocess.Popen
    url: str
    port: int
    data_dir: Path
    lines: list[str] = field(default_factory=list)

    def output(self) -> str:
        """What the app printed so far."""
        return "".join(self.lines)

    def read(self) -> None:
        """Collect the app's output as it comes (in a background thread)."""

        def pump():
            for line in self.proc.stdout:
                self.lines.append(line)

        threading.Thread(target=pump, daemon=True).start()

    def wait_for(self, text: str, timeout: float = 60) -> str:
        """Wait until the app printed ``text``; returns everything printed."""
        deadline = time.time() + timeout
        while text not in self.output():
            if time.time() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"never printed {text!r}:\n{self.output()}")
            time.sleep(0.1)
        return self.output()

    def stop(self) -> None:
        """Terminate the app."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_app(data_dir: Path, *args: str, port: int | None = None) -> RunningApp:
    """Start ``main.py ARGS`` and wait until it serves its page (or exits)."""
    port = port or free_port()
    proc = spawn_main("--port", str(port), "--data-dir", str(data_dir), *args)
    app = RunningApp(proc, f"http://127.0.0.1:{port}/", port, data_dir)
    app.read()
    _wait_for_page(app, timeout=180)
    return app


def _wait_for_page(app: RunningApp, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if app.proc.poll() is not None:
            raise RuntimeError("the app exited:\n" + app.output())
        try:
            if httpx.get(app.url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the app does not serve its page:\n{app.output()}")


@pytest.fixture(scope="package")
def public_app(tmp_path_factory):
    """A public app: 0.0.0.0, no logins, nobody is an admin, small limits."""
    data = tmp_path_factory.mktemp("public")
    app = start_app(data, "--host", "0.0.0.0", *PUBLIC_LIMITS)
    yield app
    app.stop()


@pytest.fixture(scope="package")
def auth_app(tmp_path_factory):
    """An app with logins from a file: alice is an admin, bob is not."""
    data = tmp_path_factory.mktemp("auth")
    users = data / "users.txt"
    users.write_text("".join(f"{u}:{p}\n" for u, p in USERS.items()), encoding="utf-8")
    app = start_app(data, "--auth-file", str(users), "--admins", "alice", "--login-attempts", "3")
    yield app
    app.stop()


def login(app: RunningApp, user: str) -> httpx.Client:
    """An HTTP client logged in as ``user``."""
    http = httpx.Client(base_url=app.url, timeout=60)
    r = http.post("/login", data={"username": user, "password": USERS[user]})
    assert r.status_code == 200, r.text
    return http


def dependency(app_url: str, http: httpx.Client | None = None, **match) -> int:
    """The ``fn_index`` of the event whose trigger or inputs match, read from ``/config``."""
    http = http or httpx.Client(base_url=app_url, timeout=60)
    config = http.get("/config").json()
    by_id = {c["id"]: c for c in config["components"]}

    def elem(cid):
        return by_id.get(cid, {}).get("props", {}).get("elem_id")

    for dep in config["dependencies"]:
        triggers = {elem(t[0]) for t in dep.get("targets", [])}
        if match.get("trigger") in triggers:
            return dep["id"]
    raise LookupError(f"no event matches {match}")


def queue_call(
    app_url: str,
    fn_index: int,
    data: list,
    session_hash: str,
    http: httpx.Client | None = None,
    timeout: float = 120,
) -> dict:
    """Call any event through the queue, as a script can; returns the completion message."""
    http = http or httpx.Client(base_url=app_url, timeout=timeout)
    body = {"data": data, "fn_index": fn_index, "session_hash": session_hash, "event_data": None}
    joined = http.post("/gradio_api/queue/join", json=body)
    if joined.status_code != 200:
        return {"status": joined.status_code, "detail": joined.text}
    with http.stream(
        "GET", "/gradio_api/queue/data", params={"session_hash": session_hash}
    ) as stream:
        if stream.status_code != 200:
            return {"status": stream.status_code, "detail": stream.read().decode()}
        for line in stream.iter_lines():
            if not line.startswith("data:"):
                continue
            msg = json.loads(line[5:])
            if msg.get("msg") == "process_completed":
                return msg
    raise RuntimeError("the stream ended without a result")
