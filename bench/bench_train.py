"""Benchmark: training on the bundled model, and the chat beside it. Prints figures only.

    python bench/bench_train.py [--steps 20] [--threads 1] [--runs 3] [--max-new-tokens 64]
    python bench/bench_train.py --rounds 5      (the chat only: idle and training interleaved)

Each run goes the app's way: a child process (``training.jobs``) with torch limited to
``--threads`` threads, LoRA r=8 on every linear layer, batches of 4 short examples:

- SFT on arithmetic prompt/completion rows, a reward model and DPO on preference pairs:
  seconds per step (after the first), examples (or pairs) per second, the child's peak memory;
- the chat (llama.cpp in this process, the app's engine, greedy, as ``bench_chat.py`` measures
  it): time to first token and tokens/s idle, then while the SFT job trains. The job pauses
  while a chat evaluates its prompt, as in the app (``chat.foreground``; ``--no-pause``: not).

``--rounds N`` measures the chat only, for a machine shared with other work: beside one
SFT job, N rounds of the chat idle (the job held paused), with the pause and without (in
turn); medians over the rounds.

The issue's target: chat TTFT and tokens/s within 2x of idle while training, on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_chat import engine_once, median_of  # noqa: E402


def sft_rows(n: int = 40) -> list[dict]:
    """Short prompt/completion rows: sums written as the model should learn them."""
    return [{"prompt": f"What is {a} plus {b}?", "completion": f"{a} + {b} = {a + b}"}
            for a, b in ((3 + i % 9, 2 + (i * 7) % 13) for i in range(n))]  # fmt: skip


def pairs(n: int = 24) -> list[dict]:
    """Preference pairs: a short correct sum against a wrong, rude one."""
    return [{"prompt": f"What is {a} plus {b}?", "chosen": f"{a} + {b} = {a + b}.",
             "rejected": f"Work it out yourself. It is {a + b + 3}!"}
            for a, b in ((2 + i % 7, 1 + (i * 5) % 11) for i in range(n))]  # fmt: skip


def step_figures(folder: Path, batch: int) -> dict:
    """Seconds per step after the first, examples per second, from the job's progress file."""
    stamps = []
    for line in (folder / "progress.jsonl").read_text().splitlines():
        e = json.loads(line)
        if e.get("event") == "step":
            stamps.append(e["elapsed_s"])
    if len(stamps) < 2:
        return {"s_per_step": float("nan"), "examples_per_s": float("nan")}
    per = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    return {"s_per_step": per, "examples_per_s": batch / per}


def run_job(jobs, spec, chat=None) -> dict:
    """Start a job, optionally measure the chat while it trains; its figures."""
    job = jobs.start(spec)
    during = None
    while True:
        s = jobs.status(job)
        if s["state"] not in ("starting", "running"):
            break
        if chat is not None and during is None and s["state"] == "running" and s["step"] >= 1:
            during = chat()
            during["still_training"] = jobs.status(job)["state"] == "running"
        time.sleep(0.5)
    if s["state"] != "finished":
        raise SystemExit(f"{spec.settings.kind} job {s['state']}: {s['message']}")
    figures = step_figures(jobs.root / job, spec.settings.batch_size)
    return {**figures, "peak_mib": s["peak_mib"], "steps": s["step"], "elapsed_s": s["elapsed_s"],
            "during": during}  # fmt: skip


def chat_rounds(args, engine, chat, jobs, spec) -> None:
    """The chat idle and beside a training job, with and without the pause, ``--rounds``
    times in turn (a shared machine drifts). One job trains throughout: "idle" holds it
    paused for the whole turn, so it takes no CPU and nothing else changes between rows."""
    import statistics

    job = jobs.start(spec)
    while (s := jobs.status(job))["state"] in ("starting", "running") and s["step"] < 1:
        time.sleep(0.5)
    if s["state"] != "running":
        raise SystemExit(f"the job {s['state']}: {s['message']}")
    rows = {"idle": [], "pause": [], "no pause": []}
    bound = jobs.max_pause_s

    def measure(kind: str) -> dict:
        if kind != "pause":
            engine.foreground.unlisten(jobs.hold)
        if kind == "idle":
            jobs.max_pause_s = 3600.0
            jobs.hold(True)
        try:
            return chat()
        finally:
            if kind == "idle":
                jobs.hold(False)
                jobs.max_pause_s = bound
            if kind != "pause":
                engine.foreground.listen(jobs.hold)

    for i in range(args.rounds):
        kinds = list(rows)[i % 3 :] + list(rows)[: i % 3]
        for kind in kinds:
            rows[kind].append(measure(kind))
        print(f"round {i + 1}: " + "   ".join(f"{k} {1000 * v[-1]['ttft']:5.1f} ms "
              f"{v[-1]['tps']:5.1f} tok/s" for k, v in rows.items()), flush=True)  # fmt: skip
    s = jobs.status(job)
    if s["state"] != "running":
        print(f"(the job {s['state']} meanwhile: the later rounds ran beside no job)")
    jobs.stop(job)
    med = {k: {f: statistics.median(r[f] for r in v) for f in ("ttft", "tps")}
           for k, v in rows.items()}  # fmt: skip
    print(
        f"\nChat (llama.cpp, greedy, {args.max_new_tokens} new tokens), medians of "
        f"{args.rounds} rounds of {args.runs} turns, training with {args.threads} thread(s):"
    )
    for k, m in med.items():
        ratio = (
            f"   TTFT x{m['ttft'] / med['idle']['ttft']:.2f}, "
            f"tokens/s x{med['idle']['tps'] / m['tps']:.2f} slower (target <= 2)"
        )
        ratio = "" if k == "idle" else ratio
        print(f"  {k:16s} TTFT {1000 * m['ttft']:6.1f} ms  {m['tps']:6.1f} tok/s{ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="SFT steps (reward, DPO: half)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training")
    parser.add_argument("--runs", type=int, default=3, help="chat turns per measurement")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--skip-chat", action="store_true", help="training figures only")
    parser.add_argument("--no-pause", action="store_true", help="chats do not pause the job")
    parser.add_argument("--rounds", type=int, default=0, help="the chat only, N interleaved rounds")
    args = parser.parse_args()

    from chat.models import default_model_path
    from training.data import build_dataset
    from training.jobs import JobSpec, TrainJobs
    from training.model import load_base
    from training.settings import TrainSettings

    gguf = str(default_model_path())
    t0 = time.perf_counter()
    _, tokenizer = load_base(gguf)  # the tokenizer builds the datasets (the model is dropped)
    print(f"load_base (dequantize the GGUF): {time.perf_counter() - t0:.1f} s", flush=True)

    chat = idle = None
    if not args.skip_chat:
        from chat.engine import ChatEngine
        from chat.models import load_backend, resolve_model

        backend = load_backend(resolve_model(None), runtime="in-process", n_ctx=4096)
        engine = ChatEngine(backend)
        engine_once(engine, 8)

        def chat():
            return median_of(args.runs, lambda: engine_once(engine, args.max_new_tokens))

        idle = chat()

    root = Path(tempfile.mkdtemp(prefix="bench-train-"))
    jobs = TrainJobs(root / "jobs")
    if chat is not None and not args.no_pause:
        engine.foreground.listen(jobs.hold)  # as the app wires it (studio.training)
    if chat is not None and args.rounds:
        s = TrainSettings(kind="sft", max_steps=2000, batch_size=4, eval_share=0.1,
                          eval_every=1000, threads=args.threads)  # fmt: skip
        data = build_dataset(sft_rows(), "sft", s, tokenizer)
        spec = JobSpec(model=gguf, data=data, settings=s, out_dir=root / "adapters",
                       max_seconds=1800, name="bench")  # fmt: skip
        try:
            chat_rounds(args, engine, chat, jobs, spec)
        finally:
            jobs.close()
        return
    results = {}
    try:
        for kind, steps, rows, label in (
            ("sft", args.steps, sft_rows(), "SFT"),
            ("reward", max(2, args.steps // 2), pairs(), "reward model"),
            ("dpo", max(2, args.steps // 2), pairs(), "DPO"),
        ):
            s = TrainSettings(kind=kind, max_steps=steps, batch_size=4, eval_share=0.1,
                              eval_every=1000, threads=args.threads)  # fmt: skip
            data = build_dataset(rows, kind, s, tokenizer)
            spec = JobSpec(model=gguf, data=data, settings=s, out_dir=root / "adapters",
                           max_seconds=1800, name=f"bench {kind}")  # fmt: skip
            results[label] = run_job(jobs, spec, chat if kind == "sft" else None)
            r = results[label]
            print(f"{label:13s} {r['s_per_step']:6.2f} s/step  {r['examples_per_s']:5.2f} "
                  f"examples/s  peak {r['peak_mib']:6.0f} MiB  ({r['steps']} steps, "
                  f"{r['elapsed_s']:.0f} s with loading)", flush=True)  # fmt: skip
    finally:
        jobs.close()

    print(f"\nTraining: LoRA r=8 on all linear layers, batch 4, {args.threads} torch thread(s), "
          "in a child process at the lowest priority, " + ("running on" if args.no_pause
          else "paused") + " while a chat evaluates its prompt.")  # fmt: skip
    during = results["SFT"]["during"]
    if idle and during:
        print(f"Chat (llama.cpp, greedy, {args.max_new_tokens} new tokens, median of {args.runs}):")
        print(f"  idle            TTFT {1000 * idle['ttft']:7.1f} ms   {idle['tps']:6.1f} tok/s")
        print(f"  during training TTFT {1000 * during['ttft']:7.1f} ms   {during['tps']:6.1f} tok/s"
              + ("" if during["still_training"] else "  (the job ended meanwhile)"))
        print(f"  ratio           TTFT x{during['ttft'] / idle['ttft']:.2f}   "
              f"tokens/s x{idle['tps'] / during['tps']:.2f} slower (target <= 2)")


if __name__ == "__main__":
    main()
