"""The Gradio chat UI and the named API endpoints. All Gradio wiring lives here.

``ChatUI(service).create_app()`` builds the Blocks; ``launch()`` is separate.
The conversation is per browser session (``gr.State``); the UI and the
``/chat`` endpoint both run ``ChatService.run``.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

import gradio as gr

from chat.errors import ChatStudioError
from chat.service import ChatService
from chat.settings import MAX_CANDIDATES
from ui import render
from ui.documents_panel import SOURCE_HEADERS, DocumentsPanel, sources_rows
from ui.persona_panel import PersonaEditor, persona_choices
from ui.settings_panel import FIELDS, SettingsPanel

GENERATE = "generate"  # one concurrency group: one generation at a time per model


class ChatUI:
    """Builds the chat app around a loaded ``ChatService``."""

    def __init__(
        self, service: ChatService, queue_size: int = 16, default_preset: str = "Balanced"
    ):
        self.service = service
        self.queue_size = queue_size
        self.default_preset = default_preset
        self._cancel: dict[str, threading.Event] = {}
        self._cancel_lock = threading.Lock()

    # ----- session helpers -------------------------------------------------
    def _cancel_event(self, request: gr.Request | None) -> threading.Event:
        key = getattr(request, "session_hash", None) or "api"
        with self._cancel_lock:
            return self._cancel.setdefault(key, threading.Event())

    def _forget_session(self, request: gr.Request):
        with self._cancel_lock:
            self._cancel.pop(getattr(request, "session_hash", None), None)

    def _greeting(self, persona_id: str) -> list[dict]:
        try:
            greeting = self.service.personas.get(persona_id).greeting_text()
        except ChatStudioError as exc:
            raise gr.Error(str(exc)) from None
        return [{"role": "assistant", "content": greeting}] if greeting else []

    # ----- handlers ----------------------------------------------------------
    def _stream(self, conversation, message, persona_id, settings_values, request, clear_box):
        """Run one turn for ``message`` after ``conversation``; yields UI updates."""
        settings = SettingsPanel.values_to_dict(settings_values[: len(FIELDS)])
        use_rag, retrieval = False, None
        if self.service.documents is not None:
            use_rag, retrieval = DocumentsPanel.read_chat_inputs(settings_values[len(FIELDS) :])
        scope = self.service.documents.scope(request.session_hash) if use_rag else None
        cancel = self._cancel_event(request)
        cancel.clear()
        history = render.history_for_model(conversation)
        conversation = conversation + [{"role": "user", "content": message}]
        reply = {"role": "assistant", "content": ""}
        result = None
        yield self._outputs(conversation + [reply], None, clear_box=clear_box)
        try:
            for result in self.service.run(
                message, history, persona_id, settings, use_rag, cancel, scope, retrieval
            ):
                reply = {"role": "assistant", "content": result.reply}
                if result.done:
                    reply["meta"] = {
                        "settings": result.settings,
                        "stats": result.stats,
                        "prompt_messages": result.prompt_messages,
                        "notices": result.notices,
                        "candidates": result.candidates,
                        "chosen": 0,
                        "sources": result.sources,
                    }
                yield self._outputs(conversation + [reply], result)
        except ChatStudioError as exc:
            raise gr.Error(str(exc)) from None
        for notice in result.notices if result else []:
            gr.Info(notice)

    def _outputs(self, conversation, result=None, clear_box=False):
        """Values for: chatbot, state, textbox, stats, candidates (boxes, radio, row), sources."""
        candidates = result.candidates if result and result.done else []
        show = len(candidates) > 1
        boxes = [
            gr.update(
                value=candidates[i] if i < len(candidates) else "", visible=i < len(candidates)
            )
            for i in range(MAX_CANDIDATES)
        ]
        radio = gr.update(
            choices=[str(i + 1) for i in range(len(candidates))], value="1" if show else None
        )
        stats = render.stats_line(result.stats) if result else "generating…"
        if result and not result.done:
            stats = "generating… " + stats
        return [
            render.chatbot_messages(conversation),
            conversation,
            "" if clear_box else gr.update(),
            stats,
            *boxes,
            radio,
            gr.update(visible=show),
            gr.update(
                value=sources_rows(result.sources) if result else [],
                visible=bool(result and result.sources),
            ),
        ]

    def send(self, message, conversation, persona_id, request: gr.Request, *settings_values):
        """Send the typed message."""
        if not message or not message.strip():
            raise gr.Error("Type a message first.")
        yield from self._stream(conversation, message, persona_id, settings_values, request, True)

    def regenerate(self, conversation, persona_id, request: gr.Request, *settings_values):
        """Drop the last reply and answer the last user message again."""
        last_user = max(
            (i for i, m in enumerate(conversation) if m["role"] == "user"), default=None
        )
        if last_user is None:
            raise gr.Error("Nothing to regenerate yet: send a message first.")
        message = conversation[last_user]["content"]
        yield from self._stream(
            conversation[:last_user], message, persona_id, settings_values, request, False
        )

    def undo(self, conversation):
        """Remove the last exchange and put its message back in the textbox for editing."""
        last_user = max(
            (i for i, m in enumerate(conversation) if m["role"] == "user"), default=None
        )
        if last_user is None:
            return render.chatbot_messages(conversation), conversation, gr.update()
        kept = conversation[:last_user]
        return render.chatbot_messages(kept), kept, conversation[last_user]["content"]

    def stop(self, request: gr.Request):
        """Halt this browser session's generation (the backend itself, not only the display)."""
        self._cancel_event(request).set()

    def choose_candidate(self, choice, conversation):
        """Continue the conversation with the picked candidate."""
        if not choice or not conversation or "meta" not in conversation[-1]:
            return gr.update(), conversation
        last = dict(conversation[-1])
        meta = dict(last["meta"])
        index = int(choice) - 1
        meta["chosen"] = index
        last.update(content=meta["candidates"][index], meta=meta)
        conversation = conversation[:-1] + [last]
        return render.chatbot_messages(conversation), conversation

    def new_chat(self, persona_id):
        """A fresh conversation opened by the persona's greeting."""
        conversation = self._greeting(persona_id)
        return render.chatbot_messages(conversation), conversation, "", gr.update(visible=False)

    def export(self, conversation, persona_id):
        """Write the chat with all metadata to a JSON file for download."""
        folder = Path(tempfile.mkdtemp(prefix="chat-export-"))
        path = folder / "chat.json"
        path.write_text(
            render.export_json(conversation, self.service.info, persona_id), encoding="utf-8"
        )
        return gr.update(value=str(path), visible=True)

    # ----- API ---------------------------------------------------------------
    def api_chat(
        self,
        message: str,
        history: list[dict] | None = None,
        persona: str = "assistant",
        settings: dict | None = None,
        use_rag: bool = False,
        retrieval: dict | None = None,
        request: gr.Request = None,
    ) -> dict:
        """Chat turn for scripts: returns reply, candidates, sources, prompt_messages and stats.

        A generator: ``Client.predict`` returns the final dict, ``Client.submit``
        streams partial ones (same keys, reply growing). With ``use_rag`` the
        shared documents and this client's uploads are searched (``retrieval``:
        top_k, min_score, mmr, mmr_lambda).
        """
        docs = self.service.documents
        scope = docs.scope(getattr(request, "session_hash", None)) if docs and use_rag else None
        try:
            for result in self.service.run(
                message, history, persona, settings, use_rag, None, scope, retrieval
            ):
                yield result.to_api()
        except ChatStudioError as exc:
            raise gr.Error(str(exc)) from None

    def api_personas(self) -> list[dict]:
        """The personas: ``{id, name, description, source, error}`` each."""
        return self.service.personas.list()

    # ----- layout ------------------------------------------------------------
    def create_app(self) -> gr.Blocks:
        """Build the Blocks (not launched)."""
        svc = self.service
        personas = persona_choices(svc.personas)
        with gr.Blocks(title="GPT Chat Studio") as demo:
            gr.Markdown("## GPT Chat Studio")
            gr.Markdown(render.model_banner(svc.info), elem_id="model-banner")
            conversation = gr.State(self._greeting(personas[0][1]))
            with gr.Row():
                with gr.Column(scale=3):
                    persona = gr.Dropdown(
                        personas, value=personas[0][1], label="Persona", elem_id="persona"
                    )
                    editor = PersonaEditor(svc.personas, persona)
                    chatbot = gr.Chatbot(
                        value=render.chatbot_messages(conversation.value),
                        label="Chat",
                        height=480,
                        elem_id="chatbot",
                        sanitize_html=True,
                        buttons=["copy"],
                    )
                    stats = gr.Markdown(elem_id="stats-line", elem_classes="stats-line")
                    with gr.Column(visible=False, elem_id="candidates") as candidates_row:
                        with gr.Row():
                            boxes = [
                                gr.Textbox(label=f"Candidate {i + 1}", lines=6, interactive=False)
                                for i in range(MAX_CANDIDATES)
                            ]
                        choice = gr.Radio([], label="Continue with candidate", elem_id="choice")
                    with gr.Row():
                        message = gr.Textbox(
                            placeholder="Type a message and press Enter",
                            show_label=False,
                            scale=6,
                            elem_id="message",
                        )
                        send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
                        stop = gr.Button("Stop", variant="stop", scale=1, elem_id="stop")
                    with gr.Row():
                        regen = gr.Button("Regenerate", elem_id="regenerate")
                        undo = gr.Button("Undo / edit last", elem_id="undo")
                        clear = gr.Button("Clear", elem_id="clear")
                        export = gr.Button("Export JSON", elem_id="export")
                    sources = gr.Dataframe(
                        headers=SOURCE_HEADERS,
                        label="Sources used in the last answer",
                        visible=False,
                        interactive=False,
                        wrap=True,
                        elem_id="sources",
                    )
                    export_file = gr.File(label="Chat export", visible=False)
                with gr.Column(scale=2):
                    with gr.Accordion("Decoding settings", open=True):
                        panel = SettingsPanel(
                            svc.capabilities, svc.info.backend, svc.presets, self.default_preset
                        )
                    docs = DocumentsPanel(svc.documents) if svc.documents else None
            settings_inputs = panel.components + (docs.chat_inputs if docs else [])
            outputs = [
                chatbot,
                conversation,
                message,
                stats,
                *boxes,
                choice,
                candidates_row,
                sources,
            ]
            run = dict(
                outputs=outputs,
                concurrency_limit=1,
                concurrency_id=GENERATE,
                api_visibility="private",
            )
            for trigger in (message.submit, send.click):
                trigger(self.send, [message, conversation, persona, *settings_inputs], **run)
            regen.click(self.regenerate, [conversation, persona, *settings_inputs], **run)
            stop.click(self.stop, None, None, queue=False, api_visibility="private")
            undo.click(
                self.undo, conversation, [chatbot, conversation, message], api_visibility="private"
            )
            for trigger in (clear.click, persona.change):
                trigger(
                    self.new_chat,
                    persona,
                    [chatbot, conversation, stats, candidates_row],
                    api_visibility="private",
                )
            choice.input(
                self.choose_candidate,
                [choice, conversation],
                [chatbot, conversation],
                api_visibility="private",
            )
            export.click(
                self.export, [conversation, persona], export_file, api_visibility="private"
            )
            persona.change(
                lambda p: panel.values(svc.base_settings(p)),
                persona,
                panel.components,
                api_visibility="private",
            )
            editor.wire()
            if docs:
                docs.wire(demo)
            gr.api(self.api_chat, api_name="chat", concurrency_limit=1, concurrency_id=GENERATE)
            gr.api(self.api_personas, api_name="personas")
            demo.unload(self._forget_session)
        demo.queue(max_size=self.queue_size, default_concurrency_limit=1)
        return demo
