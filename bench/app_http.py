"""The app end to end for the benchmarks: ``python main.py`` started on a port, and
``/chat`` streamed over Gradio's plain HTTP API (POST, then read the event stream)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from bench.common import PROMPT, ROOT, median_of, offline_env


def start_app(port: int, *args: str) -> tuple[subprocess.Popen, float]:
    """Start ``python main.py``; return the process and seconds until the page is served."""
    t0 = time.perf_counter()
    data = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-chat-{port}"
    proc = subprocess.Popen(
        [sys.executable, "main.py", "--port", str(port), "--data-dir", str(data), *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=offline_env(),
    )
    url = f"http://127.0.0.1:{port}/"
    while time.perf_counter() - t0 < 120:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return proc, time.perf_counter() - t0
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the app did not serve its page within 120 s")


def stream_chat(http, base: str, settings: dict) -> dict:
    """One REST /chat read to its end: request time, first and last token times, tokens."""
    t0 = time.perf_counter()
    event = http.post(base, json={"message": PROMPT, "settings": settings})
    t_first = t_last = None
    with http.stream("GET", f"{base}/{event.json()['event_id']}") as stream:
        for line in stream.iter_lines():
            if not line.startswith("data:") or line == "data: null":
                continue
            final = json.loads(line[5:])[0]
            now = time.perf_counter()
            if t_first is None and final["reply"]:
                t_first = now
            t_last = now
    tokens = final["stats"]["completion_tokens"]
    return {"t0": t0, "first": t_first, "last": t_last, "tokens": tokens}


def timed_chat(port: int, max_new: int, start: threading.Event | None = None) -> dict:
    """One streamed greedy /chat of the app on ``port`` (sent once ``start`` is set, when
    given): request time, first and last token times, tokens."""
    import httpx

    base = f"http://127.0.0.1:{port}/gradio_api/call/v2/chat"
    settings = {"strategy": "greedy", "max_new_tokens": max_new, "repetition_penalty": 1.0}
    with httpx.Client(timeout=300) as http:
        if start is not None:
            start.wait()
        return stream_chat(http, base, settings)


def reply_speed(chat: dict) -> tuple[float, float]:
    """(decode tokens/s, time to first token) of a ``timed_chat``."""
    return (chat["tokens"] - 1) / (chat["last"] - chat["first"]), chat["first"] - chat["t0"]


def resident_mib(proc: subprocess.Popen) -> float:
    """Resident memory of ``proc`` and its children (the model's child process)."""
    import psutil

    main = psutil.Process(proc.pid)
    return sum(p.memory_info().rss for p in [main, *main.children(True)]) / 2**20


def app_http(port: int, max_new: int, runs: int) -> dict:
    """Median speed of /chat over Gradio's plain HTTP API (after one warm-up)."""
    return median_of(runs, lambda: reply_speed(timed_chat(port, max_new)), warm_up=True)


def http_case(args, runtime: str) -> dict:
    """The app over HTTP, with its start-up time and memory (the model's child included)."""
    proc, startup = start_app(args.port, "--runtime", runtime)
    try:
        result = app_http(args.port, args.max_new_tokens, args.runs)
        rss = resident_mib(proc)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return result | {"startup_s": startup, "rss_mib": rss}
