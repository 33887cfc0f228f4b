"""The Train tab: teach the model from your own chats (SFT, reward model, DPO) and watch it learn.

Data (your liked replies and preference pairs, or a JSONL upload) → a check of what
training will read (counts, bad lines, one example as trained) → the method form, built
from ``training.settings.TrainSettings`` → Start, a progress bar and live loss chart
(polled by a timer), Stop → your adapters, a reward score. The API endpoints
(``/train``, ``/train_status``, ``/train_stop``, ``/adapters``, ``/reward``) are here too;
``studio.training`` decides who may do what.
"""

from __future__ import annotations

import typing
from pathlib import Path

import gradio as gr
from pydantic import BaseModel

from chat.errors import ChatStudioError
from studio.training import DPO_NOTE, Training
from ui import train_render as render
from ui.errors import boundary, user_error

HIDDEN = {"api_visibility": "private"}
MAX_UPLOAD_READ = 1024 * 2**20  # the policy refuses above --max-train-upload-mb anyway
INTRO = (
    "The recipe behind ChatGPT, on your laptop: **1.** supervised fine-tuning (SFT) on the "
    "replies you liked or kept, **2.** a reward model trained on your preferences (liked versus "
    "disliked, picked versus not picked), **3.** preference tuning (DPO). A parameter-efficient "
    "method trains a few thousand to a few million extra weights (an *adapter*) instead of the "
    "whole model, so a CPU can do it in minutes. Training runs in its own process with few "
    "threads, so the chat keeps working."
)


# ----- the method form, from the pydantic model ---------------------------------------------


def form_fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, object]]:
    """``(dotted name, field)`` for every leaf field (nested models flattened)."""
    out = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += form_fields(ann, f"{prefix}{name}.")
        else:
            out.append((prefix + name, field))
    return out


def _bounds(field) -> tuple[float | None, float | None]:
    low = high = None
    for m in field.metadata:
        low = getattr(m, "ge", getattr(m, "gt", low))
        high = getattr(m, "le", getattr(m, "lt", high))
    return low, high


def _component(name: str, field):
    """The control for one field: its description as the help, its bounds as the range."""
    ann = field.annotation
    args = [a for a in typing.get_args(ann) if a is not type(None)]
    optional = type(None) in typing.get_args(ann)
    label = name.split(".")[-1].replace("_", " ")
    info = field.description or ""
    default = field.get_default(call_default_factory=True)
    eid = "train-" + name.replace(".", "-").replace("_", "-")
    if typing.get_origin(ann) is typing.Literal:
        return gr.Dropdown(list(typing.get_args(ann)), value=default, label=label, info=info,
                           elem_id=eid)  # fmt: skip
    if ann is bool:
        return gr.Checkbox(value=bool(default), label=label, info=info, elem_id=eid)
    low, high = _bounds(field)
    if ann in (int, float) and low is not None and high is not None:
        step = 1 if ann is int else (0.01 if high - low <= 1 else 0.1)
        return gr.Slider(low, high, value=default, step=step, label=label, info=info,
                         elem_id=eid)  # fmt: skip
    if ann in (int, float) or (optional and args and args[0] in (int, float)):
        kind = ann if ann in (int, float) else args[0]
        extra = " Empty or 0: the default." if optional else ""
        # No bounds here: the settings model checks them and says what to send instead.
        return gr.Number(value=default, label=label, info=info + extra,
                         precision=0 if kind is int else None, elem_id=eid)  # fmt: skip
    if optional and args and typing.get_origin(args[0]) is list:
        return gr.Textbox(value=", ".join(default or []), label=label, elem_id=eid,
                          info=info + " Comma-separated; empty: the default.")  # fmt: skip
    return gr.Textbox(value=default or "", label=label, info=info, elem_id=eid)


def form_values(names: list[str], fields: dict, values: list) -> dict:
    """The form's values as the nested settings dict (empty optional boxes become None)."""
    out: dict = {}
    for name, value in zip(names, values, strict=True):
        ann = fields[name].annotation
        args = typing.get_args(ann)
        if isinstance(value, str):
            value = value.strip()
            if any(typing.get_origin(a) is list for a in args):
                value = [v.strip() for v in value.split(",") if v.strip()] or None
            elif not value and type(None) in args:
                value = None
        if value == 0 and type(None) in args and not isinstance(value, bool):
            value = None  # an emptied number box sends 0
        if isinstance(value, float) and (ann is int or int in args) and value == int(value):
            value = int(value)
        where = out
        *parents, leaf = name.split(".")
        for p in parents:
            where = where.setdefault(p, {})
        where[leaf] = value
    return out


def _read_upload(file) -> str | None:
    if file is None:
        return None
    path = Path(file if isinstance(file, str) else getattr(file, "name", file))
    if path.stat().st_size > MAX_UPLOAD_READ:
        raise user_error("That file is too large to train on; send a smaller JSONL file.")
    return path.read_text(encoding="utf-8", errors="replace")


class TrainPanel:
    """The Train tab's controls, its handlers, and the training API."""

    def __init__(self, training: Training, app, chats):
        from training.settings import TrainSettings

        self.training = training
        self.app = app  # the ChatUI: callers and departure watching
        self.chats = chats  # the saved chats (a BrowserState): the feedback source
        self.job = gr.State(None)
        self._ba = None  # studio.before_after.BeforeAfter, made on first use
        gr.Markdown(INTRO)
        with gr.Accordion("1 · Data", open=True):
            with gr.Row():
                self.source = gr.Radio(
                    [("My feedback (saved chats)", "feedback"), ("Upload JSONL", "jsonl")],
                    value="feedback", label="Train on", elem_id="train-source", scale=2,
                )  # fmt: skip
                self.upload = gr.File(label="JSONL file", file_types=[".jsonl", ".json", ".txt"],
                                      elem_id="train-upload", scale=3)  # fmt: skip
            gr.Markdown(
                'JSONL shapes: `{"prompt", "completion"}` and `{"messages": [...]}` for SFT, '
                '`{"prompt", "chosen", "rejected"}` for a reward model or DPO.'
            )
            self.check_btn = gr.Button("Check the data", elem_id="train-check")
            self.counts = gr.Markdown(elem_id="train-counts")
            self.preview = gr.HTML(elem_id="train-preview")
        self.fields = dict(form_fields(TrainSettings))
        self.names = list(self.fields)
        self.controls = []
        with gr.Accordion("2 · Method and settings", open=True):
            gr.Markdown(DPO_NOTE, elem_id="train-dpo-note")
            for i in range(0, len(self.names), 4):  # rows of four keep the form readable
                with gr.Row(equal_height=False):
                    for name in self.names[i : i + 4]:
                        self.controls.append(_component(name, self.fields[name]))
            self.name = gr.Textbox(label="Adapter name", max_length=60, elem_id="train-name")
        with gr.Row():
            self.start_btn = gr.Button("Start training", variant="primary", elem_id="train-start")
            self.stop_btn = gr.Button("Stop", variant="stop", elem_id="train-stop")
        with gr.Row():
            self.compare_steps = gr.Slider(
                1, 50, value=5, step=1, label="Steps per method", elem_id="compare-steps",
                info="Compare every method on this data, each this many steps (SFT).",
            )  # fmt: skip
            self.compare_btn = gr.Button("Compare every method", elem_id="train-compare")
        self.progress = gr.HTML(elem_id="train-bar")
        self.compare = gr.Dataframe(headers=render.COMPARE_HEADERS, interactive=False,
                                    visible=False, elem_id="compare-table")  # fmt: skip
        with gr.Row():
            # A fixed colour per series: the eval loss joins the chart after its first evaluation.
            self.loss_plot = gr.LinePlot(x="step", y="value", color="series", label="Loss",
                                         color_map={"train loss": "#2563eb",
                                                    "eval loss": "#f97316"},
                                         elem_id="train-loss")  # fmt: skip
            # Shown only for a DPO job (its reward margins and preference accuracy).
            self.metric_plot = gr.LinePlot(x="step", y="value", color="series",
                                           label="DPO: reward margin and preference accuracy",
                                           visible=False, elem_id="train-metrics")  # fmt: skip
        self.timer = gr.Timer(1.0, active=False)
        with gr.Accordion("3 · Your adapters", open=True):
            self.refresh_btn = gr.Button("Refresh", size="sm", elem_id="train-refresh")
            self.adapters = gr.Dataframe(headers=render.ADAPTER_HEADERS, interactive=False,
                                         elem_id="train-adapters")  # fmt: skip
            with gr.Row():
                self.pick = gr.Dropdown([], label="Adapter", elem_id="adapter-pick", scale=2)
                self.form = gr.Radio(
                    [("peft folder (zip)", "peft"), ("merged model (zip)", "merged"),
                     ("GGUF LoRA for llama.cpp", "gguf")],
                    value="peft", label="Export as", elem_id="export-form", scale=3,
                )  # fmt: skip
                self.export_btn = gr.Button("Export", elem_id="train-export", scale=1)
            self.exported = gr.File(label="Exported", elem_id="train-exported")
        with gr.Accordion("4 · Reward model: score a reply", open=False):
            with gr.Row():
                self.r_prompt = gr.Textbox(label="Prompt", elem_id="reward-prompt")
                self.r_reply = gr.Textbox(label="Reply", elem_id="reward-reply")
            self.r_btn = gr.Button("Score with my reward model", elem_id="reward-score")
            self.r_out = gr.Markdown(elem_id="reward-out")
            self.r_many = gr.Textbox(label="Candidate replies, one per line", lines=4,
                                     elem_id="reward-candidates")  # fmt: skip
            self.rank_btn = gr.Button("Best of n by reward", elem_id="reward-rank")
            self.rank_out = gr.Markdown(elem_id="reward-ranked")
            self.chat_btn = gr.Button("Score my newest saved chat", elem_id="reward-chat")
            self.chat_out = gr.Markdown(elem_id="reward-chat-out")
        with gr.Accordion("5 · Before and after", open=True):
            gr.Markdown("The adapter picked above against the base model. Prompts: yours (one "
                        "per line), else the held-out prompts of your last job.")  # fmt: skip
            self.ba_prompts = gr.Textbox(label="Prompts", lines=2, elem_id="ba-prompts")
            self.ba_btn = gr.Button("Compare base and tuned", elem_id="ba-run")
            self.ba_out = gr.HTML(elem_id="ba-out")

    # ----- handlers ------------------------------------------------------------------

    def _values(self, source, upload, chats, values, name="") -> dict:
        settings = form_values(self.names, self.fields, list(values))
        if source == "jsonl":
            text = _read_upload(upload)
            if text is None:
                raise user_error("Upload a JSONL file first, or train on your feedback.")
            return {"source": "jsonl", "jsonl": text, "settings": settings, "name": name}
        chats = [c for c in chats or [] if isinstance(c, dict)]
        return {"source": "feedback", "conversations": chats, "settings": settings, "name": name}

    @boundary
    def check(self, source, upload, chats, *values, request: gr.Request = None):
        """Counts, bad lines and the first example as trained."""
        caller = self.app.caller(request)
        out = self.training.inspect_data(caller, self._values(source, upload, chats, values))
        return (render.counts_md(out["counts"], out["errors"], out["n_errors"]),
                render.preview_html(out["preview"]))  # fmt: skip

    @boundary
    def start(self, source, upload, chats, name, *values, request: gr.Request = None,
              compare_steps=None):  # fmt: skip
        """Start a job; the timer then follows it."""
        caller = self.app.caller(request)
        job = self._values(source, upload, chats, values, name)
        if compare_steps:
            job["compare_steps"] = int(compare_steps)
        out = self.training.start(caller, job)
        counts = render.counts_md(out["counts"], out["errors"])
        note = f"<div>{out['note']}</div>" if out["note"] else ""
        return (out["job"], gr.Timer(active=True), counts,
                f"<progress max='1' value='0'></progress><div>starting…</div>{note}")  # fmt: skip

    @boundary
    def start_compare(self, *values, request: gr.Request = None):
        """Every method on the same data for a few steps each (one job; the table fills in)."""
        return self.start(*values[:-1], request=request, compare_steps=values[-1])

    @boundary
    def poll(self, job, request: gr.Request = None):
        """The job's progress and charts; the timer stops once it is over."""
        if not job:
            return gr.Timer(active=False), *[gr.update()] * 6
        caller = self.app.caller(request)
        try:
            status = self.training.status(caller, job)
        except ChatStudioError as exc:
            return gr.Timer(active=False), str(exc), *[gr.update()] * 5
        over = status.get("state") not in ("starting", "running")
        listed = self.listing(request) if over else (gr.update(), gr.update())
        compared = status.get("compare") or []
        table = (gr.update(value=render.compare_rows(compared), visible=True) if compared
                 else gr.update())  # fmt: skip
        dpo = render.dpo_rows(status)
        metrics = (gr.update(value=_frame(render.chart_rows(dpo, render.DPO_SERIES)),
                             visible=True) if dpo else gr.update(visible=False))  # fmt: skip
        return (gr.Timer(active=not over), render.progress_html(status),
                _frame(render.chart_rows(render.loss_rows(status), render.LOSS_SERIES)),
                metrics, *listed, table)  # fmt: skip

    @boundary
    def stop(self, job, request: gr.Request = None):
        """Stop the job (its last finished checkpoint is kept)."""
        if not job:
            raise user_error("No training job is running here; start one first.")
        caller = self.app.caller(request)
        status = self.training.stop(caller, job)
        return render.progress_html(status)

    @boundary
    def listing(self, request: gr.Request = None):
        """The caller's adapters as table rows, and the export picker's choices."""
        caller = self.app.caller(request)
        adapters = self.training.adapters(caller)
        picks = [(f"{a.get('name') or a['id']} ({a['id']})", a["id"]) for a in adapters]
        return render.adapter_rows(adapters), gr.update(choices=picks)

    @boundary
    def export(self, adapter, form, request: gr.Request = None):
        """The picked adapter as a file to download."""
        if not adapter:
            raise user_error("Pick one of your adapters first.")
        caller = self.app.caller(request)
        return str(self.training.export(caller, adapter, form))

    @boundary
    def before_after(self, adapter, prompts, request: gr.Request = None):
        """Base and tuned replies side by side (the two models load once: about a minute)."""
        from studio.before_after import BeforeAfter

        if not adapter:
            raise user_error("Pick one of your adapters first (section 3).")
        caller = self.app.caller(request)
        lines = [p.strip() for p in (prompts or "").splitlines() if p.strip()]
        if self._ba is None:
            self._ba = BeforeAfter(self.training)
        out = self._ba.compare(caller, {"adapter": adapter, "prompts": lines})
        return render.before_after_html(out)

    @boundary
    def score(self, prompt, reply, request: gr.Request = None):
        """The reward model's score of a reply."""
        out = self.api_reward(prompt or "", reply or "", None, request)
        return f"Reward **{out['score']:+.3f}** (reward model `{out['adapter']}`)"

    @boundary
    def score_chat(self, chats, request: gr.Request = None):
        """The newest saved chat's replies with their rewards, candidates ranked by reward."""
        chats = [c for c in chats or [] if isinstance(c, dict) and c.get("messages")]
        if not chats:
            raise user_error("No saved chat yet: chat first, then score its replies.")
        caller = self.app.caller(request)
        scored = self.training.score_chat(caller, chats[0]["messages"])
        return render.chat_rewards_md(chats[0]["messages"], scored)

    @boundary
    def rank(self, prompt, replies, request: gr.Request = None):
        """Best of n by reward: the candidates, best first, with their scores."""
        caller = self.app.caller(request)
        lines = [r.strip() for r in (replies or "").splitlines() if r.strip()]
        out = self.training.rank(caller, prompt or "", lines)
        return render.ranked_md(lines, out)

    # ----- API -----------------------------------------------------------------------

    @boundary
    def api_train(
        self,
        source: str = "feedback",
        conversations: list | None = None,
        jsonl: str | None = None,
        settings: dict | None = None,
        name: str = "",
        request: gr.Request = None,
    ) -> dict:
        """Start a training job: ``{"job", "counts", "errors", "note"}``.

        ``source``: ``"feedback"`` (``conversations``: saved chats or chat exports; liked and
        kept replies become SFT rows, likes against dislikes and picked candidates become
        preference pairs) or ``"jsonl"`` (``jsonl``: rows as text). ``settings``: kind (sft,
        reward, dpo), method ({"method": "lora", "lora_r": 8, ...}), max_steps, ... One job
        runs at a time; on a shared app only admins train unless --allow-training.
        """
        caller = self.app.caller(request)
        values = {"source": source, "conversations": conversations, "jsonl": jsonl,
                  "settings": settings, "name": name or ""}  # fmt: skip
        return self.training.start(caller, values)

    @boundary
    def api_train_status(self, job: str, request: gr.Request = None) -> dict:
        """A job's ``state``, ``step``, ``total_steps``, times, losses, metrics and adapter."""
        caller = self.app.caller(request)
        return self.training.status(caller, job)

    @boundary
    def api_train_stop(self, job: str, request: gr.Request = None) -> dict:
        """Stop a job of yours; returns its status (its last finished checkpoint is kept)."""
        caller = self.app.caller(request)
        return self.training.stop(caller, job)

    @boundary
    def api_adapters(self, request: gr.Request = None) -> list[dict]:
        """Your adapters: id, name, kind, method, base_model, created, steps, losses, size."""
        caller = self.app.caller(request)
        return self.training.adapters(caller)

    @boundary
    def api_reward(self, prompt: str, reply: str, adapter: str | None = None,
                   request: gr.Request = None) -> dict:  # fmt: skip
        """Your reward model's score of ``reply`` to ``prompt``: ``{"score", "adapter"}``."""
        caller = self.app.caller(request)
        return self.training.reward(caller, prompt, reply, adapter)

    def register_api(self) -> None:
        """The named endpoints (before the page's events, so none takes their names)."""
        gr.api(self.api_train, api_name="train", concurrency_limit=2)
        gr.api(self.api_train_status, api_name="train_status", concurrency_limit=8)
        gr.api(self.api_train_stop, api_name="train_stop", concurrency_limit=2)
        gr.api(self.api_adapters, api_name="adapters", concurrency_limit=4)
        gr.api(self.api_reward, api_name="reward", concurrency_limit=1)

    def wire(self, demo) -> None:
        """Connect the controls."""
        data = [self.source, self.upload, self.chats]
        self.check_btn.click(self.check, [*data, *self.controls], [self.counts, self.preview],
                             concurrency_limit=1, concurrency_id="train-check",
                             **HIDDEN)  # fmt: skip
        self.start_btn.click(self.start, [*data, self.name, *self.controls],
                             [self.job, self.timer, self.counts, self.progress],
                             concurrency_limit=1, concurrency_id="train-check",
                             **HIDDEN)  # fmt: skip
        self.compare_btn.click(
            self.start_compare,
            [*data, self.name, *self.controls, self.compare_steps],
            [self.job, self.timer, self.counts, self.progress],
            concurrency_limit=1, concurrency_id="train-check", **HIDDEN,
        )  # fmt: skip
        follow = [self.timer, self.progress, self.loss_plot, self.metric_plot, self.adapters,
                  self.pick, self.compare]  # fmt: skip
        self.timer.tick(self.poll, self.job, follow, queue=False, **HIDDEN)
        self.stop_btn.click(self.stop, self.job, self.progress, **HIDDEN)
        self.refresh_btn.click(self.listing, None, [self.adapters, self.pick], **HIDDEN)
        self.export_btn.click(self.export, [self.pick, self.form], self.exported,
                              concurrency_limit=1, concurrency_id="train-export",
                              **HIDDEN)  # fmt: skip
        self.r_btn.click(self.score, [self.r_prompt, self.r_reply], self.r_out,
                         concurrency_limit=1, concurrency_id="reward", **HIDDEN)  # fmt: skip
        self.chat_btn.click(self.score_chat, self.chats, self.chat_out, concurrency_limit=1,
                            concurrency_id="reward", **HIDDEN)  # fmt: skip
        self.rank_btn.click(self.rank, [self.r_prompt, self.r_many], self.rank_out,
                            concurrency_limit=1, concurrency_id="reward", **HIDDEN)  # fmt: skip
        self.ba_btn.click(self.before_after, [self.pick, self.ba_prompts], self.ba_out,
                          concurrency_limit=1, concurrency_id="train-export",
                          **HIDDEN)  # fmt: skip
        demo.load(self.listing, None, [self.adapters, self.pick], **HIDDEN)


def _frame(rows: list[dict]):
    import pandas as pd

    return pd.DataFrame(rows or [], columns=["step", "value", "series"])
