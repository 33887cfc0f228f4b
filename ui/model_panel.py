"""The Model tab: load another model without a download, and see what it can show."""

from __future__ import annotations

import gradio as gr

from chat.errors import ChatStudioError
from studio.model_switch import ModelSwitcher
from ui import render
from ui.background import Background
from ui.errors import user_error


class ModelPanel:
    """Picker, backend choice, Load (with progress), and the capabilities of what is loaded."""

    def __init__(self, switcher: ModelSwitcher, service):
        self.switcher = switcher
        self.service = service
        gr.Markdown(
            "Models this machine has: the bundled one, `.gguf` files in the models folder "
            "(`--models-dir`), models in the Hugging Face cache, a remote engine's models, and "
            "your trained adapters (they run on transformers, whatever the choice below). "
            "Nothing is downloaded. Loading frees the previous model once the new one is ready; "
            "if it fails, the previous one keeps serving."
        )
        with gr.Row():
            self.pick = gr.Dropdown(
                [], label="Model", elem_id="model-pick", scale=4, allow_custom_value=True
            )
            self.backend = gr.Radio(
                ["llama-cpp", "transformers"],
                value="llama-cpp",
                label="GGUF files run on",
                info="transformers dequantizes the GGUF: slower, but shows attention and "
                "offers beam search.",
                elem_id="model-backend",
                scale=3,
            )
        with gr.Row():
            self.refresh_btn = gr.Button("Refresh the list", elem_id="model-refresh")
            self.load_btn = gr.Button("Load", variant="primary", elem_id="model-load")
        self.status = gr.Markdown(elem_id="model-status")
        self.capabilities = gr.JSON(label="What the loaded model can show", elem_id="model-caps")

    def choices(self, request: gr.Request):
        """The picker's choices (the caller's own trained adapters among them) and what is
        loaded now."""
        try:
            caller = self.switcher.access.caller(request)
        except ChatStudioError:
            caller = None
        entries = self.switcher.entries(caller)
        return (
            gr.update(choices=[(e["label"], e["id"]) for e in entries]),
            self.service.capabilities.to_api(),
        )

    def load(self, entry_id, backend, request: gr.Request):
        """Load the picked model, saying how long it has taken so far; the banner and the
        controls follow. (Loaders report no fraction done, so no percentage is shown.)"""
        if not entry_id:
            raise user_error("Pick a model first.")
        try:
            caller = self.switcher.access.caller(request)
        except ChatStudioError as exc:
            raise user_error(exc) from None
        job = Background(lambda: self.switcher.load(caller, entry_id, backend))
        while not job.done.wait(1.0):
            yield (
                f"⏳ Loading **{entry_id}** on {backend}: {job.elapsed():.0f} s so far (a large "
                "model takes a while; the previous one keeps serving until then).",
                gr.update(),
                gr.update(),
            )
        if isinstance(job.error, ChatStudioError):
            raise user_error(job.error) from None
        if job.error is not None:
            raise job.error
        loaded = job.result
        yield (
            f"Loaded **{loaded['model']}** with {loaded['backend']} on {loaded['device']} in "
            f"{loaded['load_s']} s.",
            self.service.capabilities.to_api(),
            render.model_banner(self.service.info),
        )

