"""Raw runtimes for ``bench_load``: llama-cpp-python or transformers alone, with nothing of
the app, at a chosen thread count; the reference the app's speed is a ratio of.

- ``raw_best``: every sensible thread count, each in its own process (``bench_chat.py
  --case raw:N``), and the best kept;
- ``RawServer``: one thread count kept loaded in its own process (``bench_chat.py --serve
  raw:N``), one timed reply per request, idle in between.
"""

from __future__ import annotations

import json
import subprocess
import sys

from bench.common import ROOT, median_of, offline_env


def thread_counts() -> list[int]:
    """The thread counts worth trying for raw llama.cpp: 1, half, all but one, all cores."""
    from chat.backends.threads import physical_cores

    p = physical_cores()
    return sorted({1, max(1, p // 2), max(1, p - 1), p})


def raw_runner(kind: str, n_threads: int, max_new: int):
    """A function timing one greedy reply, (tokens/s, time to first token): raw
    llama-cpp-python streaming a chat (``kind`` "raw", its other settings default) or a
    plain transformers ``model.generate`` ("hfraw"), on ``n_threads``."""
    if kind == "raw":
        import llama_cpp

        from bench.bench_chat import raw_chat_once
        from chat.models import default_model_path

        llm = llama_cpp.Llama(
            model_path=str(default_model_path()), n_ctx=4096, n_threads=n_threads, verbose=False
        )
        return lambda: raw_chat_once(llm, max_new)
    import torch

    from bench.bench_chat import transformers_raw_once

    torch.set_num_threads(n_threads)
    return transformers_raw_once(max_new)


def raw_case(kind: str, n_threads: int, max_new: int, runs: int) -> dict:
    """Median speed over ``runs`` replies (after one warm-up)."""
    return median_of(runs, raw_runner(kind, n_threads, max_new), warm_up=True)


def serve_raw(spec: str, max_new: int) -> None:
    """``--serve raw:N``: keep the runtime loaded; one timed reply per line on stdin, its
    figures as a JSON line on stdout (``RawServer``'s other end)."""
    kind, n = spec.split(":")
    once = raw_runner(kind, int(n), max_new)
    once()  # warm-up
    print("{}", flush=True)
    for _ in sys.stdin:
        tps, ttft = once()
        print(json.dumps({"tps": tps, "ttft": ttft}), flush=True)


class RawServer:
    """Raw llama-cpp-python or transformers on one thread count, loaded once in its own
    process and idle (blocked on a read) between replies: so raw and app can be measured
    in turn, seconds apart."""

    def __init__(self, kind: str, n_threads: int, max_new: int):
        cmd = [sys.executable, str(ROOT / "bench" / "bench_chat.py"), "--serve"]
        cmd += [f"{kind}:{n_threads}", "--max-new-tokens", str(max_new)]
        pipe = subprocess.PIPE
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=offline_env(), stdin=pipe, stdout=pipe, text=True
        )
        self._answer()  # loaded and warmed up

    def once(self) -> float:
        """Tokens/s of one reply."""
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        return self._answer()["tps"]

    def _answer(self) -> dict:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise SystemExit(f"raw runtime exited (code {self.proc.wait()})")
            if line.startswith("{"):
                return json.loads(line)

    def stop(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def raw_best(args, kind: str = "raw") -> dict:
    """Every thread count in its own process; the best tokens/s, and which count gave it.

    ``kind``: "raw" for llama-cpp-python, "hfraw" for transformers."""
    results = {}
    for n in thread_counts():
        cmd = [sys.executable, str(ROOT / "bench" / "bench_chat.py"), "--case", f"{kind}:{n}"]
        cmd += ["--runs", str(args.runs), "--max-new-tokens", str(args.max_new_tokens)]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode or not lines:
            raise SystemExit(f"{kind}:{n} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        results[n] = json.loads(lines[-1])
    best = max(results, key=lambda n: results[n]["tps"])
    return results[best] | {"threads": best, "all": {n: r["tps"] for n, r in results.items()}}
