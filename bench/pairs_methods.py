"""Whether bench_load's way of pairing raw and app replies moves the ratio it reports.

    python bench/pairs_methods.py [--pairs 8] [--runtime in-process] [--max-new-tokens 128]

One app (``--parallel 4``) on a quiet machine, and raw llama-cpp-python on 2 threads
three ways, interleaved pair by pair (raw first in one pair, app first in the next):

- ``server, app stopped``: raw in its own process (``RawServer``), the app stopped
  (SIGSTOP) while raw runs: what ``bench_chat.py --neighbour`` does;
- ``server``: the same, the app left running (idle) meanwhile;
- ``in this process``: raw loaded in this script's own process.

Prints each pair, then each method's median ratio (app / raw tokens/s) and quartiles.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=8, help="pairs per method")
    parser.add_argument("--runtime", default="in-process", choices=["in-process", "subprocess"])
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--port", type=int, default=7901)
    args = parser.parse_args()

    import llama_cpp

    from bench.app_http import reply_speed
    from bench.bench_chat import raw_chat_once
    from bench.bench_load import App, one_pair, raw_reply
    from bench.raw_runtimes import RawServer
    from chat.models import default_model_path

    max_new = args.max_new_tokens
    app = App(args.port, "--runtime", args.runtime, "--parallel", "4")
    server = RawServer("raw", 2, max_new)
    llm = llama_cpp.Llama(
        model_path=str(default_model_path()), n_ctx=4096, n_threads=2, verbose=False
    )
    try:
        raw_chat_once(llm, max_new)  # warm-ups
        app.chat(max_new)

        def app_once() -> float:
            return reply_speed(app.chat(max_new))[0]

        methods = {
            "server, app stopped": lambda: raw_reply(server, app, stop_app=True),
            "server": lambda: raw_reply(server, app, stop_app=False),
            "in this process": lambda: raw_chat_once(llm, max_new)[0],
        }
        ratios: dict[str, list[float]] = {name: [] for name in methods}
        turn = 0
        for i in range(args.pairs):
            for name, raw_once in methods.items():
                raw, tps = one_pair(turn, raw_once, app_once)
                turn += 1
                ratios[name].append(tps / raw)
                print(f"{i} {name:20} raw {raw:6.1f} app {tps:6.1f} ratio {tps / raw:.3f}")
        print(f"\n{args.runtime} app, {max_new} tokens, {args.pairs} pairs per method")
        for name, values in ratios.items():
            q1, _, q3 = statistics.quantiles(values, n=4)
            print(f"{name:20} median {statistics.median(values):.2f}  quartiles {q1:.2f}-{q3:.2f}")
    finally:
        llm.close()
        server.stop()
        app.stop()


if __name__ == "__main__":
    main()
