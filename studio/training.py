"""Teaching the model: who may train, on what data, for how long, and whose adapters are whose.

The training itself lives in ``training/`` (plain Python: data, methods, the job
runner in a child process). This module is the policy in front of it, shared by the
Train tab and the API:

- on a shared app (logins, share link, Space) only admins train, unless the app was
  started with ``--allow-training``; on a private app (this machine only) its user may;
- one training job at a time for the whole app, stopped after ``--max-train-minutes``
  (the last finished checkpoint is kept), or when its owner leaves (their browser's
  sessions all ended, or an API client's session);
- datasets are capped (``--max-train-rows``, ``--max-train-upload-mb``);
- an adapter belongs to whoever trained it: a visitor sees, uses and stops only their own;
- free disk is checked before a job may write anything.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from chat.errors import Cancelled, InputError
from studio import datasets
from studio.access import Access, AccessError, Caller
from studio.requests import Name, Text, _Request, describe, parse_request
from training.errors import TrainingBusy, TrainingError

MB = 2**20
MAX_REWARD_CHARS = 8_000
ADAPTER_RESERVE_MB = 64  # room for one adapter and its checkpoints on a small model
GGUF_NOTE = (
    "The model is a GGUF file: training dequantizes it through transformers into plain fp32 "
    "weights first (about 30 s for the bundled 135M model), then trains."
)
DPO_NOTE = (
    "DPO (direct preference optimisation) skips the separate reward model and the PPO loop: "
    "its loss raises the probability of each chosen reply over the rejected one relative to a "
    "frozen copy of the starting model, which is the same goal PPO reaches by sampling replies "
    "and scoring them with a reward model. The notes' recipe (InstructGPT, 2022) used PPO "
    "because DPO came later (2023), and PPO can keep learning from fresh samples the reward "
    "model scores, beyond the fixed pairs people labelled."
)


class TrainRequest(_Request):
    """``/train``: where the data comes from, and the settings (``training.settings``)."""

    source: Literal["feedback", "jsonl"] = Field(
        "feedback", description="Your chats' feedback (conversations) or a JSONL text (jsonl)."
    )
    conversations: list[Any] | None = Field(
        None, max_length=10_000, description="Saved chats or chat exports (source feedback)."
    )
    jsonl: Text | None = Field(None, description="JSONL rows (source jsonl).")
    settings: dict[str, Any] | None = Field(None, description="TrainSettings: kind, method, ...")
    name: Name = Field("", description="A name for the adapter.")
    compare_steps: int | None = Field(
        None, ge=1, le=50, description="Instead: run every method this many steps and compare."
    )


class JobRequest(_Request):
    """``/train_status`` and ``/train_stop``."""

    job: Name = Field(min_length=1, description="The job id /train returned.")


class RewardRequest(_Request):
    """``/reward``."""

    prompt: Text = Field(max_length=MAX_REWARD_CHARS, description="The user's message.")
    reply: Text = Field(max_length=MAX_REWARD_CHARS, description="A reply to score.")
    adapter: Name | None = Field(None, description="A reward adapter id (default: your newest).")


class RankRequest(_Request):
    """Best of n by reward: the replies to rank."""

    prompt: Text = Field(max_length=MAX_REWARD_CHARS, description="The user's message.")
    replies: list[Text] = Field(min_length=1, max_length=16, description="Replies to rank.")


class ExportRequest(_Request):
    """An adapter to export, and how."""

    adapter: Name = Field(min_length=1, description="An adapter id of yours.")
    form: Literal["peft", "merged", "gguf"] = Field(
        "peft", description="peft folder, merged model folder, or GGUF LoRA for llama.cpp."
    )


class TrainLimits(BaseModel):
    """The app's training flags (``studio.config.AppConfig``), as the policy reads them."""

    allow_training: bool = False
    max_train_minutes: float = 30
    max_train_rows: int = 5000
    max_train_upload_mb: float = 20
    min_free_mb: float = 256


def parse_settings(raw: dict | None):
    """``TrainSettings`` from a dict; else ``InputError`` naming the field, in one sentence."""
    from training.settings import TrainSettings

    try:
        return TrainSettings.model_validate(raw or {})
    except ValidationError as exc:
        raise InputError("settings." + describe(exc, TrainSettings)) from None


def data_kind(kind: str) -> str:
    """The rows a training kind reads: SFT rows, or preference pairs (reward model, DPO)."""
    return "sft" if kind == "sft" else "preference"


class Training:
    """Training jobs and adapters for one app, behind its access rules."""

    def __init__(self, root: Path, access: Access, limits: TrainLimits, base_model: str | None,
                 max_request_seconds: float = 300, foreground=None):  # fmt: skip
        self.root = Path(root)
        self.adapters_dir = self.root / "adapters"
        self.access = access
        self.limits = limits
        self.base_model = base_model  # None: the app serves a remote engine, nothing to train
        self.max_request_seconds = max_request_seconds
        self.foreground = foreground  # chat.foreground.Foreground: chats pause the job's child
        self._jobs = None
        self._owners: dict[str, tuple[str, str]] = {}  # job id -> (owner, departure key)
        self._tokenizer = None
        self._tok_lock = threading.Lock()
        self._scorer: tuple[str, object] | None = None
        self._scorer_lock = threading.Lock()
        self._export_lock = threading.Lock()
        self._held: dict[str, tuple] = {}  # owner -> their last job's (held-out, train) rows
        access.on_owner_end(self._departed)

    # -- who ------------------------------------------------------------------------------

    def may_train(self, caller: Caller) -> bool:
        """Admins may; on a shared app, visitors only with ``--allow-training``."""
        return caller.admin or self.limits.allow_training

    def check(self, caller: Caller) -> None:
        """Raise ``AccessError`` unless ``caller`` may train here."""
        if not self.may_train(caller):
            raise AccessError(
                "Training takes this machine's cores for minutes, so on a shared app only "
                "admins may train (or start the app with --allow-training)."
            )
        if self.base_model is None:
            raise TrainingError(
                "This app serves a remote engine, which cannot be trained here: start it with "
                "a local model (--model PATH, or the bundled one) to train."
            )

    def owner(self, caller: Caller) -> str:
        """Whose adapters: a login's, else the browser's (or API session's); on a private app
        without logins, the one user's ("")."""
        if self.access.logins:
            return f"user:{caller.user}"
        if self.access.private:
            return ""
        return self.access.owner(caller.session)

    # -- data -----------------------------------------------------------------------------

    def rows(self, req: TrainRequest, kind: str) -> tuple[list[dict], list[str]]:
        """The request's rows and the bad JSONL lines, within the caps."""
        from training.data import parse_jsonl

        errors: list[str] = []
        if req.source == "jsonl":
            text = req.jsonl or ""
            cap = int(self.limits.max_train_upload_mb * MB)
            if len(text.encode("utf-8", "replace")) > cap:
                raise InputError(
                    f"jsonl: over {self.limits.max_train_upload_mb:g} MB "
                    "(--max-train-upload-mb); send a smaller dataset."
                )
            if not text.strip():
                raise InputError("jsonl: empty; upload a JSONL file of training rows.")
            parsed = parse_jsonl(text, data_kind(kind))
            rows, errors = parsed.rows, list(parsed.errors)
        else:
            budget = datasets.Budget(seconds=self.max_request_seconds)
            rows = datasets.export(data_kind(kind), req.conversations or [], budget).rows
        if len(rows) > self.limits.max_train_rows:
            raise InputError(
                f"The dataset has {len(rows):,} rows; this app trains on at most "
                f"{self.limits.max_train_rows:,} (--max-train-rows). Send fewer rows."
            )
        if not rows:
            what = "liked or kept replies" if kind == "sft" else "preference pairs"
            raise TrainingError(
                f"No {what} to train on"
                + (f" ({len(errors)} bad line(s): {errors[0]})" if errors else "")
                + ". Like replies in the chat (or retry and pick one), or upload JSONL rows."
            )
        return rows, errors

    def tokenizer(self):
        """The base model's tokenizer (loaded once; the GGUF's chat template applied)."""
        with self._tok_lock:
            if self._tokenizer is None:
                import transformers

                from chat.backends.hf_loading import _gguf_chat_template, _load, _locate

                where, gguf_file, local = _locate(self.base_model, None)
                extra = {"gguf_file": gguf_file} if gguf_file else {}
                tok = _load(transformers.AutoTokenizer, self.base_model, where, local, **extra)
                if gguf_file and not tok.chat_template and local:
                    tok.chat_template = _gguf_chat_template(Path(where) / gguf_file)
                if tok.pad_token_id is None:
                    tok.pad_token = tok.eos_token
                self._tokenizer = tok
            return self._tokenizer

    def prepare(self, caller: Caller, values: dict):
        """``(request, settings, TrainData, bad lines)``: validated and capped."""
        from training.data import build_dataset

        self.check(caller)
        req = parse_request(TrainRequest, **values)
        settings = parse_settings(req.settings)
        rows, errors = self.rows(req, settings.kind)
        data = build_dataset(rows, data_kind(settings.kind), settings, self.tokenizer())
        return req, settings, data, errors, rows

    def inspect_data(self, caller: Caller, values: dict) -> dict:
        """What training would read: counts, bad lines, and the first example as trained."""
        from training.data import preview

        _, settings, data, errors, rows = self.prepare(caller, values)
        out = {"counts": dict(data.counts), "errors": errors[:50], "n_errors": len(errors)}
        first = (data.train or data.eval or rows)[0]  # a pair shows its prompt and chosen reply
        out["preview"] = preview(self.tokenizer(), first, settings.max_length)
        return out

    # -- jobs -----------------------------------------------------------------------------

    def jobs(self):
        """The job runner (made on first use: it imports the training core)."""
        if self._jobs is None:
            from training.jobs import TrainJobs

            self._jobs = TrainJobs(self.root / "jobs")
            if self.foreground is not None:  # a chat's prompt evaluation gets every core
                self.foreground.listen(self._jobs.hold)
        return self._jobs

    def check_disk(self, extra_mb: float = 0) -> None:
        """Refuse to write when the adapter (or export) could eat into the disk reserve."""
        self.root.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.root).free
        room = ADAPTER_RESERVE_MB + extra_mb
        if free < (self.limits.min_free_mb + room) * MB:
            raise TrainingError(
                f"Only {free / MB:,.0f} MB of disk is free; this app keeps "
                f"{self.limits.min_free_mb:,.0f} MB in reserve (--min-free-mb) and this needs "
                f"about {room:,.0f} MB more: delete old adapters or free some disk."
            )

    def start(self, caller: Caller, values: dict) -> dict:
        """Start a job; ``{"job", "counts", "errors", "note"}``. One job at a time."""
        req, settings, data, errors, _ = self.prepare(caller, values)
        self.check_disk()
        from training.jobs import JobSpec

        if settings.start_from:
            self.adapter(caller, settings.start_from)  # one of the caller's own, or refused
        owner = self.owner(caller)
        name = (req.name or "").strip()[:60] or f"{settings.kind}-{settings.method.method}"
        spec = JobSpec(
            model=self.base_model,
            data=data,
            settings=settings,
            out_dir=self.adapters_dir,
            max_seconds=self.limits.max_train_minutes * 60,
            name=name,
            owner=owner,
            compare_steps=req.compare_steps,
        )
        try:
            job = self.jobs().start(spec)
        except TrainingBusy:
            raise TrainingError(
                "Another training job is running on this app (one at a time); wait for it "
                "to finish, then start yours."
            ) from None
        self._owners[job] = (owner, self.access.owner(caller.session))
        self._held[owner] = (list(data.eval)[:50], list(data.train)[:10])
        note = GGUF_NOTE if str(self.base_model).endswith(".gguf") else ""
        return {"job": job, "counts": dict(data.counts), "errors": errors[:50], "note": note}

    def held_out(self, caller: Caller) -> tuple[list[dict], list[dict]]:
        """The held-out rows of the caller's last job, and some of its training rows."""
        return self._held.get(self.owner(caller), ([], []))

    def _own_job(self, caller: Caller, job: str) -> str:
        req = parse_request(JobRequest, job=job)
        owner = self._owners.get(req.job)
        if owner is None or owner[0] != self.owner(caller):
            raise AccessError(f"No training job {req.job[:40]!r} of yours; start one with /train.")
        return req.job

    def status(self, caller: Caller, job: str) -> dict:
        """Step, losses, metrics and state of one of the caller's jobs."""
        job = self._own_job(caller, job)
        return _public(self.jobs().status(job))

    def stop(self, caller: Caller, job: str) -> dict:
        """Stop one of the caller's jobs; its last finished checkpoint is kept."""
        job = self._own_job(caller, job)
        self.jobs().stop(job)
        return _public(self.jobs().status(job))

    def _departed(self, key: str) -> None:
        """The owner left (browser gone, API session over): their running job stops."""
        for job, (_, departure) in list(self._owners.items()):
            if departure == key and self._jobs is not None:
                if self._jobs.status(job).get("state") in ("starting", "running"):
                    self._jobs.stop(job)

    def close(self) -> None:
        """Stop any job (the app is going away)."""
        if self._jobs is not None:
            if self.foreground is not None:
                self.foreground.unlisten(self._jobs.hold)
            self._jobs.close()

    # -- adapters -------------------------------------------------------------------------

    def adapters(self, caller: Caller) -> list[dict]:
        """The caller's adapters (on a private app without logins: all of them)."""
        owner = self.owner(caller)
        if not self.adapters_dir.is_dir():
            return []
        from training.adapters import list_adapters

        listed = list_adapters(self.adapters_dir, owner=owner if owner else None)
        return [_public(a) for a in listed]

    def adapter(self, caller: Caller, adapter_id: str) -> dict:
        """One of the caller's adapters by id, else ``AccessError``."""
        for meta in self.adapters(caller):
            if meta.get("id") == adapter_id:
                return meta
        raise AccessError(f"No adapter {adapter_id[:40]!r} of yours; see /adapters for yours.")

    def reward(self, caller: Caller, prompt: str, reply: str, adapter: str | None = None) -> dict:
        """The reward model's score of ``reply`` to ``prompt``: ``{"score", "adapter"}``."""
        req = parse_request(RewardRequest, prompt=prompt, reply=reply, adapter=adapter)
        scorer, meta = self.reward_model(caller, req.adapter)
        with self._scorer_lock:
            score = scorer.score([{"role": "user", "content": req.prompt}], req.reply)
        return {"score": round(float(score), 4), "adapter": meta["id"]}

    def rank(self, caller: Caller, prompt: str, replies: list[str]) -> dict:
        """Best of n by reward: ``{"order": indices best first, "scores", "adapter"}``."""
        req = parse_request(RankRequest, prompt=prompt, replies=replies)
        scorer, meta = self.reward_model(caller, None)
        with self._scorer_lock:
            scores = scorer.scores([{"role": "user", "content": req.prompt}], req.replies)
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        return {"order": order, "scores": [round(float(x), 4) for x in scores],
                "adapter": meta["id"]}  # fmt: skip

    def score_chat(self, caller: Caller, messages: list, limit: int = 20) -> list[dict]:
        """Every assistant reply of a chat with its reward, and its candidates ranked by it
        (best of n): ``[{"index", "score", "candidates": [{"text", "score"}] best first}]``."""
        from chat.text import clean_text

        chat = datasets.conversations_from([messages])[0]
        scorer, _ = self.reward_model(caller, None)
        out = []
        for i, m in enumerate(chat):
            if m["role"] != "assistant" or i == 0 or len(out) >= limit:
                continue
            prompt = [{"role": x["role"], "content": clean_text(x["content"])[:MAX_REWARD_CHARS]}
                      for x in chat[:i]][-8:]  # fmt: skip
            texts = [m["content"]] + [c for c in ((m.get("meta") or {}).get("candidates") or [])
                                      if c != m["content"]][:7]  # fmt: skip
            texts = [t[:MAX_REWARD_CHARS] for t in texts]
            with self._scorer_lock:
                scores = scorer.scores(prompt, texts)
            ranked = sorted(zip(texts, scores, strict=True), key=lambda p: -p[1])
            out.append({"index": i, "score": round(float(scores[0]), 4),
                        "candidates": [{"text": t, "score": round(float(x), 4)}
                                       for t, x in ranked] if len(texts) > 1 else []})  # fmt: skip
        return out

    def score_texts(self, caller: Caller, prompt: list[dict], texts: list[str],
                    adapter: str | None = None, cancel=None) -> tuple[list, dict]:  # fmt: skip
        """Each text's reward as a reply after ``prompt`` (the caller's reward model), and
        that model's meta; ``cancel`` set: ``Cancelled`` before the next text."""
        scorer, meta = self.reward_model(caller, adapter)
        out = []
        for text in texts:
            if cancel is not None and cancel.is_set():
                raise Cancelled("Scoring stopped.")
            with self._scorer_lock:
                out.append(round(float(scorer.score(prompt, text)), 4))
        return out, meta

    def reward_models(self, caller: Caller) -> list[dict]:
        """The caller's reward models, newest first."""
        mine = [a for a in self.adapters(caller) if a.get("kind") == "reward"]
        return sorted(mine, key=lambda a: str(a.get("created", "")), reverse=True)

    def reward_model(self, caller: Caller, adapter: str | None):
        """The caller's reward model (the one named, else their newest), loaded once."""
        mine = [a for a in self.adapters(caller) if a.get("kind") == "reward"]
        if adapter:
            mine = [a for a in mine if a.get("id") == adapter]
            if not mine:
                raise AccessError(
                    f"No reward model {adapter[:40]!r} of yours: pick one of yours, or train "
                    "one in the Train tab (kind: reward, on preference pairs)."
                )
        if not mine:
            raise TrainingError(
                "No reward model of yours here: train one in the Train tab (kind: reward, on "
                "preference pairs), then score replies with it."
            )
        meta = max(mine, key=lambda a: str(a.get("created", "")))
        from training.reward import RewardScorer

        with self._scorer_lock:  # one scorer in memory, one scoring at a time
            if self._scorer is None or self._scorer[0] != meta["id"]:
                self._scorer = (meta["id"], RewardScorer.load(self.adapters_dir / meta["id"]))
            return self._scorer[1], meta

    def export(self, caller: Caller, adapter: str, form: str = "peft") -> Path:
        """One of the caller's adapters exported: a zip of the peft or merged folder, or the
        GGUF LoRA file (for ``Llama(model_path=..., lora_path=...)``)."""
        from training import export

        req = parse_request(ExportRequest, adapter=adapter, form=form)
        meta = self.adapter(caller, req.adapter)
        if not self.may_train(caller):
            raise AccessError("Exporting runs the model on this machine: only admins may here.")
        self.check_disk(extra_mb=0 if req.form == "peft" else 4 * self._base_mb())
        src = self.adapters_dir / meta["id"]
        out = self.root / "exports" / f"{meta['id']}-{req.form}"
        with self._export_lock:  # one export at a time: merging loads the whole model
            shutil.rmtree(out, ignore_errors=True)
            if req.form == "gguf":
                if not str(self.base_model).endswith(".gguf"):
                    raise TrainingError(
                        "A GGUF LoRA adapter needs a GGUF base model; this app trains a "
                        "transformers folder, so export the peft or merged folder instead."
                    )
                return export.export_gguf_lora(src, self.base_model, out.with_suffix(".gguf"))
            made = (export.export_peft if req.form == "peft" else export.export_merged)(src, out)
            zipped = shutil.make_archive(str(out), "zip", made)
            shutil.rmtree(made, ignore_errors=True)
            return Path(zipped)

    def _base_mb(self) -> float:
        path = Path(self.base_model or "")
        if path.is_file():
            return path.stat().st_size / MB
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / MB


def _public(record: dict) -> dict:
    """A job's status or an adapter's meta without the server's path or the owner's key."""
    return {k: v for k, v in record.items() if k not in ("path", "owner")}


def for_config(config, access: Access, foreground=None) -> Training:
    """The app's ``Training``: its flags, its data folder, and the model it started with;
    ``foreground`` (the chat engine's) pauses a job while a chat evaluates its prompt."""
    base = None
    if not config.openai_base_url:
        from chat.models import default_model_path

        base = str(config.model) if config.model else str(default_model_path())
    limits = TrainLimits(**{k: getattr(config, k) for k in TrainLimits.model_fields})
    return Training(config.data_dir / "training", access, limits, base,
                    config.max_request_seconds, foreground)  # fmt: skip
