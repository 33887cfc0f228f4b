"""Benchmark: raw llama-cpp-python against the app's /chat end to end.

Prints figures; asserts nothing. Same prompt, same greedy settings, same model:

    python bench/bench_chat.py [--runs 3] [--max-new-tokens 128]

Reports tokens/s (decode speed: tokens after the first, over the time after the
first) and time to first token for both, their ratio and difference, the time
``python main.py`` takes to serve its first page, and the app's resident memory.
The app is measured two ways: over Gradio's plain HTTP streaming API, and with
``gradio_client`` (whose own request handling adds some 50 ms per call).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPT = "Write a story about a cat who goes on an adventure."
SYSTEM = "You are a helpful, concise assistant. Answer clearly and truthfully."


def raw_llama(max_new: int, runs: int) -> dict:
    """Stream the reply straight from llama-cpp-python, as a user of the library would."""
    import llama_cpp

    from chat.models import default_model_path

    llm = llama_cpp.Llama(model_path=str(default_model_path()), n_ctx=4096, verbose=False)
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}]
    ttfts, speeds, counts = [], [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        stamps = []
        for chunk in llm.create_chat_completion(
            messages, max_tokens=max_new, temperature=0.0, repeat_penalty=1.0, stream=True
        ):
            if chunk["choices"][0]["delta"].get("content"):
                stamps.append(time.perf_counter())
        ttfts.append(stamps[0] - t0)
        speeds.append((len(stamps) - 1) / (stamps[-1] - stamps[0]))
        counts.append(len(stamps))
    return {
        "ttft_s": statistics.median(ttfts),
        "tokens_per_s": statistics.median(speeds),
        "tokens": counts[-1],
    }


def start_app(port: int) -> tuple[subprocess.Popen, float]:
    """Start ``python main.py``; return the process and seconds until the page is served."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "main.py", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
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


def app_chat(port: int, max_new: int, runs: int) -> dict:
    """Stream /chat through gradio_client and time it from the client's side."""
    from gradio_client import Client

    client = Client(f"http://127.0.0.1:{port}/", verbose=False)
    settings = {"strategy": "greedy", "max_new_tokens": max_new, "repetition_penalty": 1.0}
    client.predict(
        message="Hi", settings={"strategy": "greedy", "max_new_tokens": 4}, api_name="/chat"
    )  # warm-up: connection and first compile
    ttfts, speeds, server = [], [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        job = client.submit(message=PROMPT, settings=settings, api_name="/chat")
        t_first = t_last = None
        seen = 0
        while not job.done():
            n = len(job.outputs())
            if n > seen:
                seen = n
                now = time.perf_counter()
                if t_first is None and job.outputs()[-1]["reply"]:
                    t_first = now
                t_last = now
            time.sleep(0.001)
        final = job.result()
        t_last = time.perf_counter() if t_last is None else t_last
        tokens = final["stats"]["completion_tokens"]
        ttfts.append(t_first - t0)
        speeds.append((tokens - 1) / (t_last - t_first))
        server.append(final["stats"])
    return {
        "ttft_s": statistics.median(ttfts),
        "tokens_per_s": statistics.median(speeds),
        "tokens": tokens,
        "server_ttft_s": statistics.median(s["ttft_s"] for s in server),
        "server_tokens_per_s": statistics.median(s["tokens_per_s"] for s in server),
    }


def app_chat_http(port: int, max_new: int, runs: int) -> dict:
    """Stream /chat over Gradio's plain HTTP API (POST, then read the event stream)."""
    import json

    import httpx

    base = f"http://127.0.0.1:{port}/gradio_api/call/chat"
    settings = {"strategy": "greedy", "max_new_tokens": max_new, "repetition_penalty": 1.0}
    ttfts, speeds = [], []
    with httpx.Client(timeout=120) as http:
        for _ in range(runs):
            t0 = time.perf_counter()
            event = http.post(base, json={"data": [PROMPT, [], "assistant", settings, False]})
            t_first = t_last = final = None
            with http.stream("GET", f"{base}/{event.json()['event_id']}") as stream:
                for line in stream.iter_lines():
                    if not line.startswith("data:") or line == "data: null":
                        continue
                    now = time.perf_counter()
                    final = json.loads(line[5:])[0]
                    if t_first is None and final["reply"]:
                        t_first = now
                    t_last = now
            tokens = final["stats"]["completion_tokens"]
            ttfts.append(t_first - t0)
            speeds.append((tokens - 1) / (t_last - t_first))
    return {
        "ttft_s": statistics.median(ttfts),
        "tokens_per_s": statistics.median(speeds),
        "tokens": tokens,
    }


def main() -> None:
    """Run both sides and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--port", type=int, default=7899)
    args = parser.parse_args()

    import psutil

    raw = raw_llama(args.max_new_tokens, args.runs)
    proc, startup = start_app(args.port)
    try:
        app = app_chat(args.port, args.max_new_tokens, args.runs)
        http = app_chat_http(args.port, args.max_new_tokens, args.runs)
        rss = psutil.Process(proc.pid).memory_info().rss / 2**20
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    print(f"prompt: {PROMPT!r}  greedy, max_new_tokens={args.max_new_tokens}, runs={args.runs}")
    print(f"{'':28}{'tokens/s':>10}{'TTFT ms':>10}{'tokens':>8}")
    print(
        f"{'raw llama-cpp-python':28}{raw['tokens_per_s']:10.1f}{raw['ttft_s'] * 1000:10.1f}"
        f"{raw['tokens']:8d}"
    )
    print(
        f"{'app /chat (gradio_client)':28}{app['tokens_per_s']:10.1f}{app['ttft_s'] * 1000:10.1f}"
        f"{app['tokens']:8d}"
    )
    print(
        f"{'app /chat (HTTP stream)':28}{http['tokens_per_s']:10.1f}"
        f"{http['ttft_s'] * 1000:10.1f}{http['tokens']:8d}"
    )
    print(
        f"{'app engine (server stats)':28}{app['server_tokens_per_s']:10.1f}"
        f"{app['server_ttft_s'] * 1000:10.1f}"
    )
    for label, side in (("HTTP stream", http), ("gradio_client", app)):
        ratio = side["tokens_per_s"] / raw["tokens_per_s"]
        extra = (side["ttft_s"] - raw["ttft_s"]) * 1000
        print(
            f"{label}: throughput ratio app/raw {ratio:.2f} (target >= 0.90), "
            f"added time to first token {extra:+.1f} ms (target <= 50 ms)"
        )
    print(f"python main.py serves its first page in {startup:.1f} s  (target <= 10 s)")
    print(f"app resident memory: {rss:.0f} MiB  (target < 1024 MiB)")


if __name__ == "__main__":
    main()
