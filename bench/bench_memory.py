"""Soak: the app's memory over many REST ``/chat`` calls. Prints figures; asserts nothing.

    python bench/bench_memory.py [--calls 400] [--every 50] [--max-new-tokens 32]

Starts ``python main.py`` (the bundled GGUF) as users run it and makes
``--calls`` REST calls, each read to its end: a 4,000-character history,
greedy, ``top_logprobs`` 5. Prints the app's resident memory (RSS) every
``--every`` calls, then the growth per call over the second half, which is
about 0 once memory has reached its plateau.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    """Soak and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()

    import psutil

    from tests.helpers.rest import HISTORY, rest_chat
    from tests.security.conftest import start_app

    history_chars = sum(len(m["content"]) for m in HISTORY)
    print(
        f"REST /chat calls ({history_chars}-character history, "
        f"{args.max_new_tokens} tokens, top_logprobs 5)",
    )
    print("| calls | RSS (MB) | s/call |\n|---|---|---|", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as data:
        app = start_app(Path(data))
        try:
            process = psutil.Process(app.proc.pid)
            rest_chat(app.url, "Warm up.", args.max_new_tokens, HISTORY)
            t0 = time.perf_counter()
            for i in range(args.calls + 1):
                if i:
                    rest_chat(
                        app.url, f"Question {i}: name a colour.", args.max_new_tokens, HISTORY
                    )
                if i % args.every == 0:
                    rows.append((i, process.memory_info().rss / 2**20))
                    pace = (time.perf_counter() - t0) / max(i, 1)
                    print(f"| {i} | {rows[-1][1]:.1f} | {pace:.2f} |", flush=True)
        finally:
            app.stop()
    half = [r for r in rows if r[0] >= args.calls // 2]
    if len(half) >= 2:
        (c0, m0), (c1, m1) = half[0], half[-1]
        per_call = (m1 - m0) / (c1 - c0)
        print(f"growth over calls {c0}..{c1}: {m1 - m0:+.1f} MB ({per_call:+.4f} MB/call)")


if __name__ == "__main__":
    main()
