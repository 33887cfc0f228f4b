"""The load part of ``bench_chat.py --neighbour``: speed when the machine or the app is busy.

Conditions, each measured for raw llama-cpp-python (every sensible thread
count, the best one kept) and for the app's ``/chat`` over HTTP:

- quiet: nothing else running;
- busy neighbour: one process spinning on a core, started by the bench;
- during ingest: the app ingests large documents for another visitor while
  ``/chat`` streams; raw llama-cpp-python runs beside the same app ingesting
  the same documents (and not chatting), so both sides meet the same load.

Each condition first measures raw at every thread count (each in its own
process) and keeps the best; then each app is measured against that raw in
``--rounds`` x ``--runs`` *pairs*: one raw reply and one app reply back to back,
raw first in one pair and last in the next, with raw kept loaded in its own
process (``RawServer``) and idle between its replies. The ratio is the median
of the pairs' ratios. The machine's speed drifts by 10-40% over minutes here
(another guest on the same host): rounds of raw and app a minute apart let that
drift decide a figure, replies seconds apart mostly do not.
Only the app being measured runs: the others are stopped (SIGSTOP) meanwhile,
as a user runs one app (an idle one still wakes now and then; its share of a
core is printed too).

Then visitors: 1, 2 and 4 simultaneous ``/chat`` requests to an app with
``--parallel 4`` (and, for comparison, ``--parallel 1``), after one unmeasured
round of 4 (so each decoding lane has seen the prompt once): how far apart their
first tokens arrive and the aggregate tokens/s; and the memory one more
decoding slot costs (resident memory of ``--parallel 4`` against
``--parallel 1``, over 3).
"""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.app_http import reply_speed, resident_mib, start_app, timed_chat
from bench.common import ROOT, offline_env
from bench.raw_runtimes import RawServer, raw_best, thread_counts

BUSY = "while True: pass"
TARGETS = {"quiet": 0.9, "busy neighbour": 0.9, "during ingest": 0.8}


# -- neighbours ----------------------------------------------------------------------------------


def start_neighbour(kind: str | None) -> subprocess.Popen | None:
    """A process that keeps a core busy (``busy``), or nothing."""
    if kind != "busy":
        return None
    proc = subprocess.Popen([sys.executable, "-c", BUSY], cwd=ROOT, env=offline_env())
    time.sleep(0.5)
    return proc


def stop(proc) -> None:
    if proc is not None:
        proc.kill()
        proc.wait(timeout=30)


def big_document_text(n: int) -> str:
    """About 75 kB of the test corpus, numbered so no chunk repeats another."""
    corpus = ROOT / "tests" / "data" / "rag_corpus"
    base = "\n\n".join(p.read_text() for p in sorted(corpus.iterdir()))
    return "\n\n".join(f"Part {n}.{i}.\n{base}" for i in range(4))


# -- the app ---------------------------------------------------------------------------------


class App:
    """``python main.py`` on a free port, with its own data folder."""

    def __init__(self, port: int, *flags: str):
        self.port = port
        self.proc, self.startup = start_app(port, *flags)

    def _processes(self):
        import psutil

        main = psutil.Process(self.proc.pid)
        return [main, *main.children(True)]

    def pause(self) -> None:
        """Stop the app (SIGSTOP) while another is measured: a user runs one app, and an
        idle one still wakes now and then."""
        for p in self._processes():
            p.suspend()

    def resume(self) -> None:
        for p in self._processes():
            p.resume()

    def idle_cpu(self, seconds: float = 10.0) -> float:
        """Percent of one core the app uses while nobody calls it."""
        procs = self._processes()
        before = sum(sum(p.cpu_times()[:2]) for p in procs)
        time.sleep(seconds)
        return 100 * (sum(sum(p.cpu_times()[:2]) for p in procs) - before) / seconds

    def rss_mib(self) -> float:
        return resident_mib(self.proc)

    def chat(self, max_new: int, start: threading.Event | None = None) -> dict:
        """One streamed greedy /chat (``timed_chat``)."""
        return timed_chat(self.port, max_new, start)

    def ingest_forever(self, stop_event: threading.Event) -> threading.Thread:
        """Keep ingesting large documents (as another visitor would) until ``stop_event``."""
        from gradio_client import Client, handle_file

        folder = Path(tempfile.mkdtemp(prefix="bench-ingest-"))

        def run():
            client = Client(f"http://127.0.0.1:{self.port}/", verbose=False)
            n = 0
            while not stop_event.is_set():
                n += 1
                doc = folder / f"ingest-{n}.txt"
                doc.write_text(big_document_text(n))
                client.predict(files=[handle_file(str(doc))], api_name="/ingest")

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        time.sleep(4.0)  # the embedder loads, and ingest is under way
        return thread

    def visitors(self, n: int, max_new: int) -> dict:
        """``n`` simultaneous /chat requests: first-token spread and aggregate tokens/s."""
        start = threading.Event()
        results: list[dict] = []
        threads = [
            threading.Thread(target=lambda: results.append(self.chat(max_new, start)))
            for _ in range(n)
        ]
        for t in threads:
            t.start()
        time.sleep(0.2)
        start.set()
        for t in threads:
            t.join()
        t0 = min(r["t0"] for r in results)
        firsts = sorted(r["first"] for r in results)
        return {
            "spread_s": firsts[-1] - firsts[0],
            "ttft_s": firsts[0] - t0,
            "aggregate_tps": sum(r["tokens"] for r in results)
            / (max(r["last"] for r in results) - t0),
        }

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


# -- the report ------------------------------------------------------------------------------


@contextlib.contextmanager
def beside(kind: str | None, app: App | None):
    """The condition's load: a busy process, or ``app`` ingesting; ``app`` (when given)
    awake meanwhile, and stopped again after."""
    if app is not None:
        app.resume()
    neighbour = start_neighbour(kind)
    stop_event = threading.Event()
    ingest = app.ingest_forever(stop_event) if kind == "ingest" and app is not None else None
    try:
        yield
    finally:
        stop_event.set()
        stop(neighbour)
        if ingest is not None:
            ingest.join(timeout=300)
        if app is not None:
            app.pause()


def raw_reply(server: RawServer, app: App, stop_app: bool) -> float:
    """Tokens/s of one raw reply, ``app`` stopped (SIGSTOP) meanwhile when ``stop_app``."""
    if stop_app:
        app.pause()
    try:
        return server.once()
    finally:
        if stop_app:
            app.resume()


def paired(app: App, server: RawServer, kind: str | None, args) -> list[tuple]:
    """``args.rounds`` x ``args.runs`` pairs of one raw reply and one app reply, back to
    back (raw first in one pair, last in the next): (raw tokens/s, app tokens/s, app time
    to first token) each. The app is stopped while raw runs, except during an ingest,
    where its ingest is raw's neighbour."""
    pause = kind != "ingest"

    def raw_once() -> float:
        return raw_reply(server, app, stop_app=pause)

    def app_once() -> tuple[float, float]:
        return reply_speed(app.chat(args.max_new_tokens))

    app_once()  # a warm-up, which also lets the thread tuner settle in these conditions
    pairs = [one_pair(i, raw_once, app_once) for i in range(args.rounds * args.runs)]
    return [(raw, tps, ttft) for raw, (tps, ttft) in pairs]


def one_pair(turn: int, raw_once, app_once) -> tuple:
    """(raw result, app result) of one raw and one app reply back to back: raw first on
    even turns, last on odd ones, so a steady drift of the machine favours neither."""
    if turn % 2 == 0:
        raw = raw_once()
        return raw, app_once()
    app = app_once()
    return raw_once(), app


def combine(best: dict, pairs: list[tuple]) -> tuple[dict, dict]:
    """Pairs of (raw, app, ttft) as one row: median speeds, and the median of the pairs'
    ratios with its quartiles."""
    ratios = sorted(app / raw for raw, app, _ in pairs)
    raw = best | {"tps": statistics.median(r for r, _, _ in pairs)}
    app = {
        "tps": statistics.median(a for _, a, _ in pairs),
        "ttft": statistics.median(t for _, _, t in pairs),
        "ratio": statistics.median(ratios),
        "quartiles": statistics.quantiles(ratios, n=4)[::2] if len(ratios) > 1 else ratios * 2,
        "pairs": len(ratios),
    }
    return raw, app


def run(args) -> None:
    """Measure every condition and print the table the issue asks for."""
    port = args.port
    rows = []
    runtimes = ["in-process"] + (["subprocess"] if args.subprocess else [])
    apps = {rt: App(port + i, "--runtime", rt, "--parallel", "4") for i, rt in enumerate(runtimes)}
    if args.transformers:
        apps["transformers"] = App(port + 3, "--backend", "transformers")
    try:
        apps["in-process"].chat(8)
        rss4 = apps["in-process"].rss_mib()  # before any ingest loads the embedder
        idle = apps["in-process"].idle_cpu()
        for app in apps.values():
            app.pause()
        conditions = (("quiet", None), ("busy neighbour", "busy"), ("during ingest", "ingest"))
        for label, kind in conditions:
            ingesting = apps["in-process"] if kind == "ingest" else None
            with beside(kind, ingesting):  # every thread count of raw: which is best here
                best = {"llama.cpp": raw_best(args)}
                if args.transformers:
                    best["transformers"] = raw_best(args, "hfraw")
            for runtime, app in apps.items():
                side = "transformers" if runtime == "transformers" else "llama.cpp"
                kind_raw = "hfraw" if side == "transformers" else "raw"
                server = RawServer(kind_raw, best[side]["threads"], args.max_new_tokens)
                try:
                    with beside(kind, app):
                        pairs = paired(app, server, kind, args)
                finally:
                    server.stop()
                rows.append((label, runtime, *combine(best[side], pairs)))
        for app in apps.values():
            app.resume()
        if "transformers" in apps:
            apps.pop("transformers").stop()  # the visitors below are llama.cpp's alone
        if "subprocess" in apps:
            apps.pop("subprocess").stop()
        apps["in-process"].visitors(4, 16)  # unmeasured: each lane has seen the prompt once
        runs = [
            {n: apps["in-process"].visitors(n, args.max_new_tokens) for n in (1, 2, 4)}
            for _ in range(args.rounds)
        ]
        visitors = {
            n: {key: statistics.median(r[n][key] for r in runs) for key in runs[0][n]}
            for n in (1, 2, 4)
        }
    finally:
        for app in apps.values():
            app.resume()
            app.stop()
    serial = App(port + 5, "--runtime", "in-process", "--parallel", "1")
    try:
        serial.chat(8)
        rss1 = serial.rss_mib()
        serial_4 = serial.visitors(4, args.max_new_tokens)
    finally:
        serial.stop()
    print_report(args, rows, visitors, serial_4, (rss4 - rss1) / 3, idle)


def print_report(args, rows, visitors, serial_4, per_slot_mib, idle_cpu) -> None:
    from chat.backends.threads import physical_cores

    print(f"\nUnder load: {physical_cores()} physical cores, greedy, {args.max_new_tokens} "
          f"tokens; raw = the best thread count of {thread_counts()} (medians of "
          f"{args.runs} replies each) measured in the same conditions; "
          f"{args.rounds * args.runs} pairs of one raw and one app reply back to back, "
          "ratio = median of the pairs' ratios")  # fmt: skip
    print(f"{'condition':18}{'app':12}{'raw best':>16}{'app tok/s':>11}{'ratio':>7}"
          f"{'target':>8}{'app TTFT ms':>13}")  # fmt: skip
    for label, runtime, raw, app in rows:
        ratio = app["ratio"]
        raw_txt = f"{raw['tps']:.1f} ({raw['threads']}t)"
        q1, q3 = app["quartiles"]
        print(f"{label:18}{runtime:12}{raw_txt:>16}{app['tps']:11.1f}{ratio:7.2f}"
              f"{'>= ' + str(TARGETS[label]):>8}{app['ttft'] * 1000:13.0f}"
              f"   {app['pairs']} pairs, quartiles {q1:.2f}-{q3:.2f}")  # fmt: skip
    seen = set()
    for label, runtime, raw, _ in rows:
        side = "transformers" if runtime == "transformers" else "llama.cpp"
        if (label, side) not in seen:
            seen.add((label, side))
            counts = ", ".join(f"{n}t {v:.1f}" for n, v in raw["all"].items())
            print(f"  raw {side}, {label}: {counts}")
    one = visitors[1]["aggregate_tps"]
    print("\nVisitors at once (/chat over HTTP, --parallel 4), each asking for "
          f"{args.max_new_tokens} tokens:")  # fmt: skip
    print(f"{'visitors':10}{'first-token spread s':>22}{'first TTFT s':>14}"
          f"{'aggregate tok/s':>17}{'x one':>7}")  # fmt: skip
    for n, v in visitors.items():
        print(f"{n:<10}{v['spread_s']:22.2f}{v['ttft_s']:14.2f}{v['aggregate_tps']:17.1f}"
              f"{v['aggregate_tps'] / one:7.2f}")  # fmt: skip
    print(f"{'4, --parallel 1':10}{serial_4['spread_s']:12.2f}{serial_4['ttft_s']:14.2f}"
          f"{serial_4['aggregate_tps']:17.1f}{serial_4['aggregate_tps'] / one:7.2f}"
          "   (one after another, as before batching)")
    print("targets: spread <= 1 s with 4 visitors; aggregate >= 1.3 x one visitor")
    print(f"memory per extra decoding slot (resident, --parallel 4 vs 1, / 3): "
          f"{per_slot_mib:.0f} MiB")  # fmt: skip
    print(f"an idle app (in-process, --parallel 4) uses {idle_cpu:.1f}% of one core")
