"""Benchmark: each runtime raw, against the app on it. Prints figures; asserts nothing.

    python bench/bench_chat.py [--runs 5] [--max-new-tokens 128] [--skip transformers,remote]
    python bench/bench_chat.py --neighbour      (under load: see bench/bench_load.py)

Same prompt, greedy, same model (the bundled GGUF) everywhere:

- llama.cpp: raw llama-cpp-python (threads tuned: one per physical core) against
  the app's engine with the model in this process, and in a child process
  (``--runtime subprocess``); then the app end to end over HTTP.
- transformers: a plain ``model.generate`` against the app's engine.
- a remote engine: ``llama_cpp.server`` called directly with the ``openai``
  client, against the app using it as its backend.

Decode speed is tokens after the first over the time after the first token;
time to first token (TTFT) is from the request. Targets: app/raw >= 0.95 for
llama.cpp, >= 0.9 for transformers and the remote engine; TTFT added over
HTTP <= 20 ms. Also: start-up time and resident memory of ``python main.py``.

``--neighbour`` measures under load instead (``bench/bench_load.py``): app
``/chat`` against the best raw llama-cpp-python thread count, quiet, beside a
busy process the bench starts, and while the app ingests a document; then
1, 2 and 4 simultaneous visitors and the memory of a decoding slot.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.app_http import http_case  # noqa: E402 (after the path is set)
from bench.common import MESSAGES, PROMPT, median_of, speed  # noqa: E402


def engine_once(engine, max_new: int):
    """One greedy turn through the app's engine, timed per streamed snapshot."""
    from chat.engine import TurnRequest
    from chat.settings import DecodingSettings

    settings = DecodingSettings(strategy="greedy", max_new_tokens=max_new, repetition_penalty=1.0)
    *_, last = engine.stream_turn(TurnRequest(PROMPT, [], MESSAGES[:1], settings))
    return last.stats["tokens_per_s"], last.stats["ttft_s"]


# -- llama.cpp -------------------------------------------------------------------------------


def llama_raw(max_new: int, runs: int) -> dict:
    """Raw llama-cpp-python, streaming a chat completion, threads tuned."""
    import llama_cpp

    from chat.backends.llama_cpp_backend import physical_cores
    from chat.models import default_model_path

    llm = llama_cpp.Llama(
        model_path=str(default_model_path()),
        n_ctx=4096,
        n_threads=physical_cores(),
        n_threads_batch=os.cpu_count(),
        verbose=False,
    )

    return raw_chat_speed(llm, max_new, runs)


def raw_chat_once(llm, max_new: int) -> tuple[float, float]:
    """(tokens/s, time to first token) of ``llm`` streaming the benchmark chat greedily."""
    t0, stamps = time.perf_counter(), []
    for chunk in llm.create_chat_completion(
        MESSAGES, max_tokens=max_new, temperature=0.0, repeat_penalty=1.0, stream=True
    ):
        if chunk["choices"][0]["delta"].get("content"):
            stamps.append(time.perf_counter())
    return speed(stamps, t0)


def raw_chat_speed(llm, max_new: int, runs: int) -> dict:
    """Median speed of ``llm`` streaming the benchmark chat greedily (one warm-up first)."""

    result = median_of(runs, lambda: raw_chat_once(llm, max_new), warm_up=True)
    llm.close()
    return result


def llama_app(max_new: int, runs: int, runtime: str) -> dict:
    """The app's engine on the llama.cpp model, in this process or in a child."""
    from chat.engine import ChatEngine
    from chat.models import load_backend, resolve_model

    backend = load_backend(resolve_model(None), runtime=runtime, n_ctx=4096)
    engine = ChatEngine(backend)
    engine_once(engine, 8)
    result = median_of(runs, lambda: engine_once(engine, max_new))
    backend.close()
    return result


# -- transformers ------------------------------------------------------------------------------


def transformers_pair(max_new: int, runs: int) -> tuple[dict, dict]:
    """A plain ``model.generate`` (token times from a no-op streamer) against the app's engine."""
    from chat.engine import ChatEngine

    backend = _transformers_backend()
    raw = transformers_raw(max_new, runs, backend)
    engine = ChatEngine(backend)
    engine_once(engine, 8)
    app = median_of(runs, lambda: engine_once(engine, max_new))
    return raw, app


def _transformers_backend():
    from chat.backends.transformers_backend import TransformersBackend
    from chat.models import default_model_path

    gguf = default_model_path()
    return TransformersBackend(str(gguf.parent), gguf_file=gguf.name, device="auto")


def transformers_raw(max_new: int, runs: int, backend=None) -> dict:
    """Median speed of a plain ``model.generate`` of the bundled model (dequantized)."""
    return median_of(runs, transformers_raw_once(max_new, backend), warm_up=True)


def transformers_raw_once(max_new: int, backend=None):
    """A function timing one plain ``model.generate``: (tokens/s, time to first token)."""
    import torch

    backend = backend or _transformers_backend()
    model, _, device = backend.internals()  # the very model and device the engine runs
    ids = torch.tensor([backend.tokenize(backend.render(MESSAGES))], device=device)
    tok = backend.tokenizer  # pad as the backend does: the model's pad, the tokenizer's, EOS
    pads = (model.generation_config.pad_token_id, tok.pad_token_id, tok.eos_token_id)
    pad = next((p for p in pads if p is not None), 0)

    class Stamps:
        def __init__(self):
            self.times, self.first = [], True

        def put(self, value):
            if self.first:
                self.first = False
                return
            self.times.append(time.perf_counter())

        def end(self):
            pass

    def raw_once():
        stamps = Stamps()
        t0 = time.perf_counter()
        with torch.inference_mode():
            model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new,
                do_sample=False,
                repetition_penalty=1.0,
                pad_token_id=pad,
                streamer=stamps,
            )
        return speed(stamps.times, t0)

    return raw_once


# -- a remote engine ---------------------------------------------------------------------------


def remote_pair(max_new: int, runs: int) -> tuple[dict, dict]:
    """llama_cpp.server called directly with the openai client, against the app on it."""
    from openai import OpenAI

    from chat.backends.openai_backend import OpenAIBackend
    from chat.engine import ChatEngine
    from tests.helpers.servers import LlamaServer

    server = LlamaServer(n_ctx=4096)
    try:
        client = OpenAI(base_url=server.url, api_key="none")

        def raw_once():
            t0, stamps = time.perf_counter(), []
            for chunk in client.chat.completions.create(
                model="x",
                messages=MESSAGES,
                stream=True,
                max_tokens=max_new,
                temperature=0.0,
                extra_body={"repeat_penalty": 1.0},
            ):
                if chunk.choices and chunk.choices[0].delta.content:
                    stamps.append(time.perf_counter())
            return speed(stamps, t0)

        raw = median_of(runs, raw_once, warm_up=True)
        engine = ChatEngine(OpenAIBackend(server.url), concurrency=8)
        engine_once(engine, 8)
        app = median_of(runs, lambda: engine_once(engine, max_new))
        return raw, app
    finally:
        server.stop()


CASES = {
    "llama raw": lambda a: llama_raw(a.max_new_tokens, a.runs),
    "llama app, in-process": lambda a: llama_app(a.max_new_tokens, a.runs, "in-process"),
    "llama app, subprocess": lambda a: llama_app(a.max_new_tokens, a.runs, "subprocess"),
    "http, in-process": lambda a: http_case(a, "in-process"),
    "http, subprocess": lambda a: http_case(a, "subprocess"),
    "transformers": lambda a: dict(
        zip(("raw", "app"), transformers_pair(a.max_new_tokens, a.runs), strict=True)
    ),
    "remote": lambda a: dict(
        zip(("raw", "app"), remote_pair(a.max_new_tokens, a.runs), strict=True)
    ),
}


def run_case(name: str, args) -> dict:
    """One case in a fresh process: two llama.cpp models in one process slow each other."""
    cmd = [sys.executable, __file__, "--case", name, "--runs", str(args.runs)]
    cmd += ["--max-new-tokens", str(args.max_new_tokens), "--port", str(args.port)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        raise SystemExit(f"{name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return json.loads(lines[-1])


def main() -> None:
    """Run every case (each in its own process, the rounds interleaved) and compare."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="measurements per case and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--port", type=int, default=7899)
    parser.add_argument("--skip", default="", help="comma list: transformers, remote, http")
    parser.add_argument(
        "--neighbour",
        action="store_true",
        help="under load: quiet, beside a busy process, during ingest; 1/2/4 visitors",
    )
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        from bench.raw_runtimes import serve_raw

        serve_raw(args.serve, args.max_new_tokens)
        return
    if args.case and args.case.split(":")[0] in ("raw", "hfraw"):  # bench_load's raw runs
        from bench.raw_runtimes import raw_case

        kind, n = args.case.split(":")
        print(json.dumps(raw_case(kind, int(n), args.max_new_tokens, args.runs)))
        return
    if args.case:
        print(json.dumps(CASES[args.case](args)))
        return
    if args.neighbour:
        from bench.bench_load import run

        args.subprocess = "subprocess" not in args.skip
        args.transformers = "transformers" not in args.skip
        run(args)
        return
    skip = set(filter(None, args.skip.split(",")))
    names = [n for n in CASES if not any(n.startswith(k) or k in n for k in skip)]
    rounds: dict[str, list[dict]] = {n: [] for n in names}
    for _ in range(args.rounds):
        for name in names:
            rounds[name].append(run_case(name, args))

    def med(name, key="tps", part=None):
        values = [(r[part] if part else r)[key] for r in rounds[name]]
        return statistics.median(values)

    rows = []

    def row(label, tps, ttft, raw=None):
        ratio = f"{tps / raw:.2f}" if raw else ""
        rows.append(f"{label:44}{tps:10.1f}{ttft * 1000:10.1f}{ratio:>8}")

    raw = med("llama raw")
    row("llama.cpp raw (threads tuned)", raw, med("llama raw", "ttft"))
    for runtime in ("in-process", "subprocess"):
        name = f"llama app, {runtime}"
        row(f"app engine, llama.cpp {runtime}", med(name), med(name, "ttft"), raw)
    for runtime in ("in-process", "subprocess"):
        name = f"http, {runtime}"
        if name in rounds:
            row(f"app /chat over HTTP, {runtime}", med(name), med(name, "ttft"), raw)
    for name, label in (("transformers", "transformers"), ("remote", "remote engine")):
        if name in rounds:
            t_raw = med(name, part="raw")
            row(f"{label}: raw", t_raw, med(name, "ttft", "raw"))
            row(f"{label}: app engine", med(name, part="app"), med(name, "ttft", "app"), t_raw)
    print(f"prompt: {PROMPT!r}; greedy, max_new_tokens={args.max_new_tokens}; medians of "
          f"{args.rounds} rounds x {args.runs} runs, each case in its own process")  # fmt: skip
    print(f"{'':44}{'tokens/s':>10}{'TTFT ms':>10}{'ratio':>8}")
    print("\n".join(rows))
    for runtime in ("in-process", "subprocess"):
        name = f"http, {runtime}"
        if name in rounds:
            added = (med(name, "ttft") - med("llama raw", "ttft")) * 1000
            print(
                f"{runtime}: time to first token added over HTTP {added:+.1f} ms (target <= 20 "
                f"ms); python main.py serves its page in {med(name, 'startup_s'):.1f} s; "
                f"resident memory {med(name, 'rss_mib'):.0f} MiB"
            )


if __name__ == "__main__":
    main()
