"""Which PEFT method? The same small dataset through every method for a fixed number of steps:
trainable parameters, adapter size on disk, seconds per step, extra memory, final losses.

On a small model the forward and backward pass through the whole network dominate each step,
so the methods differ in memory and storage far more than in time; ``compare_summary`` says
so when the figures show it.
"""

from __future__ import annotations

import copy
import ctypes
import gc
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from training.data import TrainData
from training.errors import TrainingError
from training.settings import METHOD_NAMES, MethodSettings, TrainSettings

METHODS = ("lora", "ia3", "prefix", "prompt", "ln", "bitfit")


class _PeakRss:
    """The largest resident memory seen while running (sampled every 20 ms), in MiB."""

    def __init__(self):
        import psutil

        self._proc = psutil.Process()
        self.start = self.peak = self._proc.memory_info().rss
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._done.wait(0.02):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def extra_mib(self) -> float:
        return (self.peak - self.start) / 2**20


def _release_memory() -> None:
    """Free what the last run left, back to the OS, so the next run's peak starts clean."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def compare_methods(
    model,
    data: TrainData,
    steps: int,
    settings: TrainSettings,
    *,
    methods: tuple[str, ...] = METHODS,
    report: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[dict]:
    """One row per method: ``{"method", "trainable", "share", "adapter_bytes", "s_per_step",
    "peak_mib", "train_loss", "eval_loss", "note"}``. ``model``: a path/id for ``load_base`` or
    a loaded ``(model, tokenizer)``; each method starts from a fresh copy of it. A method the
    model cannot take (BitFit on Llama) gets a row whose note says why. ``peak_mib`` is the
    memory a run adds above the loaded model (gradients, optimizer state, activations)."""
    from training.adapters import adapter_bytes
    from training.run import train

    if data.kind != "sft":
        raise TrainingError("The method comparison runs SFT; choose prompt/completion rows.")
    if isinstance(model, str):
        from training.model import load_base

        model, tokenizer = load_base(model)
    else:
        model, tokenizer = model
    report = report or (lambda event: None)
    should_stop = should_stop or (lambda: False)
    rows = []
    for method in methods:
        if should_stop():
            break
        report({"event": "message", "message": f"Comparing: {METHOD_NAMES[method]}..."})
        run = settings.model_copy(update={
            "kind": "sft", "method": MethodSettings(method=method), "learning_rate": None,
            "max_steps": steps, "eval_every": steps, "start_from": None,
        })  # fmt: skip
        row = {"method": method, "trainable": None, "share": None, "adapter_bytes": None,
               "s_per_step": None, "peak_mib": None, "train_loss": None, "eval_loss": None,
               "note": ""}  # fmt: skip
        stamps: list[float] = []

        def on_event(event, stamps=stamps):
            if event.get("event") == "step":
                stamps.append(time.monotonic())

        _release_memory()
        try:
            with tempfile.TemporaryDirectory(prefix="compare-") as tmp, _PeakRss() as rss:
                res = train(copy.deepcopy(model), tokenizer, data, run, Path(tmp),
                            adapter_id=method, report=on_event,
                            should_stop=should_stop)  # fmt: skip
                size = adapter_bytes(Path(tmp) / method)
        except TrainingError as exc:
            row["note"] = str(exc)
            rows.append(row)
            report({"event": "compare_row", **row})
            continue
        per = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else res.seconds
        row.update(
            trainable=res.trainable,
            share=res.trainable / res.total_params,
            adapter_bytes=size,
            s_per_step=round(per, 3),
            peak_mib=round(rss.extra_mib, 1),
            train_loss=res.train_loss[-1][1] if res.train_loss else None,
            eval_loss=res.eval_loss[-1][1] if res.eval_loss else None,
        )
        rows.append(row)
        report({"event": "compare_row", **row})
        _release_memory()
    return rows


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def compare_summary(rows: list[dict]) -> str:
    """A few sentences on what the table shows (time versus memory and storage)."""
    done = [r for r in rows if r.get("s_per_step")]
    if not done:
        return "No method finished; nothing to compare."
    fast = min(done, key=lambda r: r["s_per_step"])
    slow = max(done, key=lambda r: r["s_per_step"])
    few = min(done, key=lambda r: r["share"])
    many = max(done, key=lambda r: r["share"])
    small = min(done, key=lambda r: r["adapter_bytes"])
    big = max(done, key=lambda r: r["adapter_bytes"])
    lines = []
    similar_time = slow["s_per_step"] <= 1.5 * fast["s_per_step"]
    wide_share = many["share"] >= 5 * few["share"]
    if similar_time and wide_share:
        lines.append(
            f"Every method took about the same time per step ({fast['s_per_step']:.2f}-"
            f"{slow['s_per_step']:.2f} s) although they train from {100 * few['share']:.3f}% "
            f"({few['method']}) to {100 * many['share']:.2f}% ({many['method']}) of the "
            "parameters: on a small model the forward and backward pass through the whole "
            "network dominate, so parameter-efficient methods save memory and storage, not time."
        )
    else:
        lines.append(
            f"Fastest: {fast['method']} ({fast['s_per_step']:.2f} s/step); slowest: "
            f"{slow['method']} ({slow['s_per_step']:.2f} s/step)."
        )
    lines.append(
        f"Adapters on disk range from {_size(small['adapter_bytes'])} ({small['method']}) to "
        f"{_size(big['adapter_bytes'])} ({big['method']})."
    )
    peak = [r for r in done if r.get("peak_mib") is not None]
    if peak:
        lo = min(peak, key=lambda r: r["peak_mib"])
        hi = max(peak, key=lambda r: r["peak_mib"])
        lines.append(
            f"Memory added while training: {lo['peak_mib']:.0f} MiB ({lo['method']}) to "
            f"{hi['peak_mib']:.0f} MiB ({hi['method']})."
        )
    best = min(done, key=lambda r: r["eval_loss"] if r["eval_loss"] is not None
               else r["train_loss"])  # fmt: skip
    lines.append(f"Lowest final loss: {best['method']}.")
    skipped = [r for r in rows if r.get("note")]
    lines += [f"{r['method']}: {r['note']}" for r in skipped]
    return " ".join(lines)
