"""One training run in this process: SFT, reward model or DPO with a parameter-efficient method,
through ``trl``'s trainers, reporting progress as plain dicts and checkpointing atomically.

``training.jobs`` runs this in a child process; ``training.compare`` and the tests call it
directly. The trainer settings are set for a CPU: fp32 (trl defaults to bf16), no gradient
checkpointing (trl's default; it only slows a small model down), no worker processes, and
no Trainer checkpoints (the adapter is saved here, atomically, every ``eval_every`` steps).
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from training.adapters import make_meta, save_adapter
from training.data import TrainData, ensure_template
from training.errors import TrainingError
from training.methods import apply_method, trainable_counts
from training.settings import TrainSettings

log = logging.getLogger(__name__)
METRIC_KEYS = ("rewards/margins", "rewards/accuracies", "accuracy", "margin")


@dataclass
class RunResult:
    """What a run did: its state, figures and where the adapter went."""

    state: str  # "finished" or "stopped"
    steps: int
    total_steps: int
    train_loss: list = field(default_factory=list)  # [[step, loss], ...]
    eval_loss: list = field(default_factory=list)
    metrics: list = field(default_factory=list)  # [{"step", "rewards/margins", ...}, ...]
    trainable: int = 0
    total_params: int = 0
    seconds: float = 0.0
    adapter: str | None = None  # the adapter id saved
    message: str = ""


def total_steps(n_train: int, settings: TrainSettings) -> int:
    """Optimizer steps the run takes (``max_steps`` wins over epochs)."""
    if settings.max_steps:
        return settings.max_steps
    return max(1, math.ceil(n_train / settings.batch_size)) * settings.epochs


def seq_cls_from(causal, tokenizer):
    """A one-output sequence-classification model sharing ``causal``'s body (a reward model)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    config = causal.config.__class__.from_dict(causal.config.to_dict())
    config.num_labels = 1
    config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(0)
    seq = AutoModelForSequenceClassification.from_config(config, dtype=torch.float32)
    body = getattr(seq, seq.base_model_prefix)
    body.load_state_dict(getattr(causal, causal.base_model_prefix).state_dict())
    return seq


def start_model(model, out_dir: Path, start_from: str | None):
    """The model a run starts from: the base, or the base with ``start_from`` (an adapter in
    ``out_dir``, e.g. SFT before DPO) merged into its weights."""
    if not start_from:
        return model
    from training.adapters import load_adapter, merged

    net = merged(load_adapter(model, Path(out_dir) / start_from))
    net.train()
    return net


def _config(kind: str, settings: TrainSettings, out: str, steps: int, has_eval: bool):
    import trl

    cls = {"sft": trl.SFTConfig, "reward": trl.RewardConfig, "dpo": trl.DPOConfig}[kind]
    extra = {"beta": settings.beta} if kind == "dpo" else {}
    return cls(
        output_dir=out,
        max_steps=steps,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.batch_size,
        learning_rate=settings.lr(),
        lr_scheduler_type="constant",
        warmup_steps=0,
        max_length=settings.max_length,
        seed=settings.seed,
        data_seed=settings.seed,
        bf16=False,
        fp16=False,
        use_cpu=True,
        gradient_checkpointing=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        logging_strategy="steps",
        eval_strategy="steps" if has_eval else "no",
        eval_steps=settings.eval_every,
        disable_tqdm=True,
        remove_unused_columns=True,
        **extra,
    )


def _datasets(data: TrainData, kind: str):
    from datasets import Dataset

    if kind == "sft":
        if data.kind != "sft":
            raise TrainingError("SFT trains on prompt/completion rows; this dataset holds pairs.")
        train, held = data.train_features, data.eval_features
    else:
        if data.kind != "preference":
            raise TrainingError(
                f"A {kind} run trains on preference pairs (prompt, chosen, rejected); this "
                "dataset holds prompt/completion rows."
            )

        def conv(r):
            return {"prompt": r["prompt"],
                    "chosen": [{"role": "assistant", "content": r["chosen"]}],
                    "rejected": [{"role": "assistant", "content": r["rejected"]}]}  # fmt: skip

        train, held = [conv(r) for r in data.train], [conv(r) for r in data.eval]
    if not train:
        raise TrainingError("The training split is empty; add examples or lower eval_share.")
    return Dataset.from_list(train), (Dataset.from_list(held) if held else None)


class Reporter:
    """Turns trainer logs into progress events and saves checkpoints every ``eval_every``."""

    def __init__(self, report, should_stop, deadline, save, settings, total, has_eval):
        self.report, self.should_stop, self.deadline = report, should_stop, deadline
        self.save, self.settings, self.total, self.has_eval = save, settings, total, has_eval
        self.result = RunResult("finished", 0, total)
        self.started = time.monotonic()
        self.stop_reason = ""

    def callback(self):
        from transformers import TrainerCallback

        outer = self

        class _Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                outer.result.steps = state.global_step
                outer.report({"event": "step", "step": state.global_step, "total": outer.total,
                              "elapsed_s": time.monotonic() - outer.started})  # fmt: skip
                n = state.global_step
                if outer.should_stop():
                    outer.stop_reason = f"Stopped after step {n}; the adapter so far is saved."
                elif time.monotonic() > outer.deadline:
                    outer.stop_reason = (f"Stopped at the time limit after step {n}; the adapter "
                                         "so far is saved.")  # fmt: skip
                if outer.stop_reason:
                    control.should_training_stop = True

            def on_log(self, args, state, control, logs=None, model=None, **kw):
                outer.log(state.global_step, logs or {}, model)

        return _Callback()

    def log(self, step: int, logs: dict, model) -> None:
        r = self.result
        if "loss" in logs:
            r.train_loss.append([step, float(logs["loss"])])
            self.report({"event": "loss", "step": step, "loss": float(logs["loss"])})
        metrics = {k: float(logs[k]) for k in METRIC_KEYS if k in logs}
        held = {k for k in logs if k.startswith("eval_") and k[5:] in METRIC_KEYS}
        metrics.update({k: float(logs[k]) for k in held})
        if metrics:
            r.metrics.append({"step": step, **metrics})
            self.report({"event": "metrics", "step": step, **metrics})
        if "eval_loss" in logs:
            r.eval_loss.append([step, float(logs["eval_loss"])])
            self.report({"event": "eval", "step": step, "loss": float(logs["eval_loss"])})
        due = step % self.settings.eval_every == 0 and step > 0
        # With an eval split the checkpoint follows the evaluation (its loss in the meta).
        if due and model is not None and ("eval_loss" in logs or ("loss" in logs and not
                                                                   self.has_eval)):  # fmt: skip
            self.save(model, "running")


def _quiet(trainer) -> None:
    """No log lines on stdout: the progress goes through ``report``."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


def train(
    model,
    tokenizer,
    data: TrainData,
    settings: TrainSettings,
    out_dir: Path,
    *,
    adapter_id: str,
    name: str = "",
    base_model: str = "",
    owner: str = "",
    report: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    max_seconds: float = 3600.0,
) -> RunResult:
    """Train ``model`` (a plain base model, fp32) as ``settings`` say; save the adapter to
    ``out_dir/adapter_id`` (atomically, at checkpoints and at the end)."""
    import datasets
    import trl

    datasets.disable_progress_bars()
    kind = settings.kind
    report = report or (lambda event: None)
    should_stop = should_stop or (lambda: False)
    ensure_template(tokenizer)
    train_set, eval_set = _datasets(data, kind)
    steps = total_steps(len(train_set), settings)
    if kind == "reward":
        model = seq_cls_from(model, tokenizer)
    import torch

    torch.manual_seed(settings.seed)
    model = apply_method(model, settings.method, "SEQ_CLS" if kind == "reward" else "CAUSAL_LM")
    trainable, total = trainable_counts(model)
    started = time.monotonic()
    reporter = Reporter(report, should_stop, started + max_seconds, None, settings, steps,
                        eval_set is not None)  # fmt: skip
    res = reporter.result
    res.trainable, res.total_params = trainable, total

    def save(net, state):
        meta = make_meta(adapter_id, name, settings, base_model, owner, res, state)
        save_adapter(net, tokenizer, Path(out_dir), adapter_id, meta)
        res.adapter = adapter_id
        report({"event": "checkpoint", "step": res.steps, "adapter": adapter_id})

    reporter.save = save
    report({"event": "start", "total": steps, "trainable": trainable, "total_params": total})
    cls = {"sft": trl.SFTTrainer, "reward": trl.RewardTrainer, "dpo": trl.DPOTrainer}[kind]
    with tempfile.TemporaryDirectory(prefix="train-") as tmp:
        args = _config(kind, settings, tmp, steps, eval_set is not None)
        trainer = cls(model=model, args=args, train_dataset=train_set, eval_dataset=eval_set,
                      processing_class=tokenizer, callbacks=[reporter.callback()])  # fmt: skip
        _quiet(trainer)
        trainer.train()
        res.steps = trainer.state.global_step
        done_eval = res.eval_loss and res.eval_loss[-1][0] == res.steps
        if eval_set is not None and not done_eval and not should_stop():
            trainer.evaluate()  # logged through the callback
    res.state = "stopped" if reporter.stop_reason else "finished"
    res.message = reporter.stop_reason or f"Finished {res.steps} steps."
    res.seconds = time.monotonic() - started
    save(trainer.model, res.state)
    return res
