"""The Gradio app: the page's layout and the named API endpoints. Gradio wiring lives in ``ui``.

``ChatUI(service, access).create_app()`` builds the Blocks; ``server.launch``
serves them. The page: a sidebar (your name, saved chats, decoding settings)
and tabs for Chat (``ui.chat_tab``), Inspect, Documents, Personas and Model.
The conversation is per browser tab (``gr.State``) and saved in the visitor's
own browser (``ui.saved_chats``). Every handler works out its caller first
(``Access.caller``), so a handler called from a script can only touch the
caller's own things.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import gradio as gr

from chat.errors import Cancelled, ChatStudioError
from personas.cards import Persona
from personas.store import parse_card
from studio import datasets
from studio.access import Access
from studio.requests import ChatRequest, parse_request
from studio.service import ChatService, ChatTurn, inspect_options
from ui.chat_tab import DEFAULT_USER, GENERATE, ChatTab
from ui.documents_panel import DocumentsPanel
from ui.downloads import Download
from ui.errors import boundary, user_error
from ui.page_css import LAYOUT_CSS
from ui.persona_panel import PersonaEditor, persona_choices
from ui.render import model_banner
from ui.reward_chat import RewardChat
from ui.saved_chats import SavedChats, new_id
from ui.settings_panel import CUSTOM, SettingsPanel

OWN_PERSONAS_KEY = "chat-studio-personas"
BROWSER_KEY = "chat-studio-browser"  # maps this browser to its documents (signed by the app)
SETTINGS_KEY = "chat-studio-settings"  # the decoding settings last shown, and their persona
USER_NAME_KEY = "chat-studio-user"

PAGE_CSS = """
#input-row { align-items: center; }
#stats-line { font-size: 0.85em; opacity: 0.8; min-height: 1.2em; }
.candidate { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 6px; }
#chatbot .selected-message .message { outline: 2px solid var(--color-accent); outline-offset: 1px; }
#message-actions { flex-wrap: wrap; align-items: center; gap: 4px; }
#message-actions > * { flex: 0 1 auto !important; min-width: 0 !important; }
@media (max-width: 640px) {
  #model-banner { font-size: 0.75em; }
  #input-row { flex-wrap: wrap !important; gap: 6px; }
  #message-box { flex: 1 1 100% !important; order: -1; }
  #use-docs-box { flex: 1 1 auto !important; }
  #send, #stop { flex: 0 0 80px !important; min-width: 0 !important; }
  #chatbot { height: 40vh !important; min-height: 220px !important; }
  #examples > .gallery { flex-wrap: nowrap !important; overflow-x: auto; }
  #examples .gallery-item div { white-space: nowrap !important; }
}
"""

# The clicked message is highlighted while its actions (under the chat) apply to it.
MARK_SELECTED = """() => {
  document.addEventListener('click', (e) => {
    const row = e.target.closest('#chatbot .message-row');
    if (!row || e.target.closest('button, textarea')) return;
    document.querySelectorAll('#chatbot .selected-message')
      .forEach((r) => r.classList.remove('selected-message'));
    row.classList.add('selected-message');
  }, true);
}"""

# A phone shows the chat first: the sidebar starts folded there (its button opens it).
FOLD_SIDEBAR_ON_PHONES = """() => {
  const bar = document.querySelector('#sidebar');
  if (window.innerWidth < 768 && bar && bar.classList.contains('open')) {
    bar.querySelector('.toggle-button').click();
  }
}"""


class ChatUI:
    """Builds the chat app around a loaded ``ChatService``."""

    def __init__(
        self,
        service: ChatService,
        access: Access | None = None,
        guard=None,
        queue_size: int = 16,
        default_preset: str = "Balanced",
        browser_secret: str | None = None,
        switcher=None,
        explain_cache=None,
        training=None,
    ):
        self.service = service
        self.access = access or Access(secret=b"local-only", private=True)
        self.guard = guard  # a server.web.Guard, when the app runs behind it
        self.queue_size = queue_size
        self.default_preset = default_preset
        self.browser_secret = browser_secret
        self.switcher = switcher  # a studio.model_switch.ModelSwitcher: the Model tab
        self.explain_cache = explain_cache  # where the neuron index is kept between runs
        self.training = training  # a studio.training.Training: the Train tab
        self.chat = ChatTab(self, service)
        self._jobs: dict[str, set[threading.Event]] = {}  # each session's running jobs
        self._jobs_lock = threading.Lock()
        self.access.on_end(self.chat.forget)
        self.access.on_end(self._forget_jobs)

    # ----- what the panels ask of the app ---------------------------------------------------
    def caller(self, request):
        """Who is calling (a clear error when the request carries no valid session)."""
        return self.access.caller(request)

    def watch(self, session: str, cancel: threading.Event):
        """Stop the work once nobody listens for it (a closed tab, a REST call never read)."""
        return self.guard.watch(session, cancel) if self.guard else nullcontext()

    @contextmanager
    def job(self, request, max_seconds: float | None = None) -> Iterator[threading.Event]:
        """A cancel event for one call of this caller, set by Stop (``stop_jobs``), after
        ``max_seconds``, or once nobody listens; the work that sees it set ends in one
        sentence saying so."""
        session = self.caller(request).session
        cancel = threading.Event()
        with self._jobs_lock:
            self._jobs.setdefault(session, set()).add(cancel)
        limit = threading.Timer(max_seconds, cancel.set) if max_seconds else None
        if limit is not None:
            limit.daemon = True
            limit.start()
        try:
            with self.watch(session, cancel):
                yield cancel
        except Cancelled:
            raise user_error(
                "Stopped (Stop pressed, the page closed, or the request time limit "
                "--max-request-seconds was reached)."
            ) from None
        finally:
            if limit is not None:
                limit.cancel()
            with self._jobs_lock:
                running = self._jobs.get(session)
                if running is not None:
                    running.discard(cancel)
                    if not running:
                        del self._jobs[session]

    def stop_jobs(self, session: str) -> None:
        """Stop every job this session is running (the Stop buttons)."""
        with self._jobs_lock:
            for cancel in self._jobs.get(session, ()):
                cancel.set()

    def _forget_jobs(self, session: str) -> None:
        """A session ended."""
        with self._jobs_lock:
            self._jobs.pop(session, None)

    def persona(self, persona_id: str, own: dict | None) -> Persona:
        """A persona the caller may use (shipped, shared, or one of their own)."""
        return self.service.personas.get(persona_id, own)

    @boundary
    def _browser_key(self, stored: str, request: gr.Request) -> str:
        """This tab joins its browser (the key it kept, checked here, or a fresh one)."""
        return self.access.browser_key(request, stored)

    def _end_session(self, request: gr.Request):
        """A tab closed: end its session, if the request really comes from its owner."""
        self.access.end(request)

    @staticmethod
    def stored_settings(stored, persona_id) -> list | None:
        """The preset and control values kept in the browser for ``persona_id``, if valid."""
        from chat.settings import parse_settings
        from ui.settings_panel import FIELDS

        if not isinstance(stored, dict) or stored.get("persona") != persona_id:
            return None
        values = stored.get("values")
        if not isinstance(values, list) or len(values) != len(FIELDS):
            return None
        try:
            parse_settings(SettingsPanel.values_to_dict(values))
        except (ChatStudioError, TypeError, ValueError):
            return None
        return [stored.get("preset") or CUSTOM, *values]

    def restore_settings(self, stored, persona_id):
        """On page load: the decoding settings this browser last used with this persona."""
        from ui.settings_panel import FIELDS

        return self.stored_settings(stored, persona_id) or [gr.update()] * (len(FIELDS) + 1)

    @boundary
    def persona_settings(self, persona_id: str, own: dict | None, panel: SettingsPanel,
                         stored=None):  # fmt: skip
        """The preset box and controls for a persona: what this browser last used with it,
        else its preset, its own settings, or ours."""
        kept = self.stored_settings(stored, persona_id)
        if kept:
            return kept
        persona = self.persona(persona_id, own)
        if isinstance(persona.settings, str):
            return panel.for_persona(self.service.preset(persona.settings), persona.settings)
        if persona.settings:
            return panel.for_persona(self.service.base_settings(persona), CUSTOM)
        default = self.default_preset
        return panel.for_persona(self.service.preset(default), default)

    # ----- API -----------------------------------------------------------------------
    @boundary
    def api_chat(
        self,
        message: str,
        history: list[dict] | None = None,
        persona: str = "assistant",
        settings: dict | None = None,
        use_rag: bool = False,
        retrieval: dict | None = None,
        persona_card: str | None = None,
        top_logprobs: int = 0,
        confidence_threshold: float | None = None,
        reply_prefix_ids: list[int] | None = None,
        user_name: str = DEFAULT_USER,
        request: gr.Request = None,
    ) -> dict:
        """Chat turn for scripts: returns reply, candidates, sources, prompt_messages and stats.

        A generator: ``Client.predict`` returns the final dict, ``Client.submit``
        streams partial ones (same keys, reply growing). With ``use_rag`` the
        shared documents and this client's uploads are searched (``retrieval``:
        top_k, min_score, mmr, mmr_lambda). ``persona_card`` (YAML text) uses a
        card of your own instead of ``persona``. ``top_logprobs`` (0-20) adds
        ``tokens``: per candidate, each token with its log-probability and top
        alternatives; ``reply_prefix_ids`` makes the reply start with those tokens.
        ``user_name`` is what ``{{user}}`` in the persona stands for.
        """
        caller = self.caller(request)
        cancel = threading.Event()
        r = parse_request(
            ChatRequest,
            message=message,
            history=history,
            persona=persona,
            settings=settings,
            use_rag=use_rag,
            retrieval=retrieval,
            persona_card=persona_card,
            user_name=user_name or DEFAULT_USER,
        )
        inspect = inspect_options(
            top_logprobs=top_logprobs,
            confidence_threshold=confidence_threshold,
            reply_prefix_ids=reply_prefix_ids,
        )
        card = (
            parse_card(r.persona_card, "persona_card")
            if r.persona_card
            else self.service.personas.get(r.persona)
        )
        user = r.user_name.strip()[:60] or DEFAULT_USER
        with self.watch(caller.session, cancel):
            turn = ChatTurn(r.message, r.history, card, r.settings, r.use_rag, r.retrieval,
                            inspect, user)  # fmt: skip
            for result in self.service.run(caller, turn, cancel):
                yield result.to_api()

    def api_personas(self) -> list[dict]:
        """The shipped and shared personas: ``{id, name, description, source, error}`` each."""
        return self.service.personas.list()

    @boundary
    def api_export_dataset(
        self, kind: str = "sft", conversations: list | None = None, request: gr.Request = None
    ) -> str:
        """Training data from chats, as JSONL text.

        ``kind``: ``"sft"`` (``{"messages"}`` and ``{"prompt", "completion"}`` rows)
        or ``"preference"`` (``{"prompt", "chosen", "rejected"}`` rows).
        ``conversations``: saved chats, chat exports or plain message lists.
        Exact and near duplicates are dropped. The work is bounded (messages,
        characters, --max-request-seconds) and stops once nobody waits for it.
        """
        caller = self.caller(request)
        cancel = threading.Event()
        budget = datasets.Budget(cancel, self.service.limits.max_request_seconds)
        with self.watch(caller.session, cancel):
            return datasets.export(kind, conversations or [], budget).jsonl()

    # ----- layout ----------------------------------------------------------------------
    def create_app(self) -> gr.Blocks:
        """Build the Blocks (not launched)."""
        from studio.explain import Explainer
        from ui.explain_panel import ExplainPanel
        from ui.inspect_panel import InspectPanel
        from ui.inspect_render import CSS
        from ui.inspect_tools import InspectTools
        from ui.model_panel import ModelPanel

        svc = self.service
        personas = persona_choices(svc.personas)
        self.css = CSS + PAGE_CSS + LAYOUT_CSS  # passed to launch() (Gradio 6 takes css there)
        hidden = {"api_visibility": "private"}
        with gr.Blocks(title="GPT Chat Studio", delete_cache=(300, 1800)) as demo:
            own = gr.BrowserState({}, storage_key=OWN_PERSONAS_KEY, secret=self.browser_secret)
            # The same stable key: with Gradio's random one the name was lost at each restart.
            stored_name = gr.BrowserState(
                DEFAULT_USER, storage_key=USER_NAME_KEY, secret=self.browser_secret
            )
            kept_settings = gr.BrowserState(
                None, storage_key=SETTINGS_KEY, secret=self.browser_secret
            )
            with gr.Sidebar(open=True, width=340, elem_id="sidebar"):
                gr.Markdown("### GPT Chat Studio")
                user = gr.Textbox(
                    DEFAULT_USER,
                    label="Your name",
                    info="What {{user}} stands for in personas.",
                    max_length=60,
                    elem_id="user-name",
                )
                saved = SavedChats(self.browser_secret)
                with gr.Accordion("Decoding settings", open=False, elem_id="settings-box"):
                    panel = SettingsPanel(
                        svc, svc.presets, self.default_preset, svc.limits.max_reply_tokens
                    )
            banner = gr.Markdown(model_banner(svc.info), elem_id="model-banner")
            conversation = gr.State(self.chat.greeting(personas[0][1], {}, DEFAULT_USER))
            download = Download()
            with gr.Tabs(elem_id="tabs") as tabs:
                with gr.Tab("Chat", id="chat", elem_id="tab-chat"):
                    c = self.chat.build(personas, conversation, own, user, panel)
                    rewards = RewardChat.maybe(self, c)  # reward scores, with a Train tab
                with gr.Tab("Inspect", id="inspect", elem_id="tab-inspect"):
                    inspect = InspectPanel(svc, self.access)
                    explain = ExplainPanel(Explainer(svc, self.explain_cache), self)
                docs = None
                if svc.documents is not None:
                    with gr.Tab("Documents", elem_id="tab-documents") as docs_tab:
                        docs = DocumentsPanel(svc.documents, self.access)
                with gr.Tab("Personas", elem_id="tab-personas"):
                    editor = PersonaEditor(svc.personas, self.access, c.persona, own)
                if self.switcher is not None:
                    with gr.Tab("Model", elem_id="tab-model"):
                        models = ModelPanel(self.switcher, svc)
                train = self._train_tab(saved)
            # Named endpoints before the page's events, so no event takes their names.
            api = {"concurrency_limit": c.slots + 2, "concurrency_id": GENERATE}
            gr.api(self.api_chat, api_name="chat", **api)
            gr.api(self.api_personas, api_name="personas")
            gr.api(self.api_export_dataset, api_name="export_dataset")
            if train:
                train.register_api()
                train.wire(demo)
            if docs:
                docs.wire(demo)
                docs_tab.select(docs.listing, None, docs.listing_out, **hidden)
                # A reload of the same browser finds its documents again.
                key = gr.BrowserState("", storage_key=BROWSER_KEY, secret=self.browser_secret)
                demo.load(self._browser_key, key, key, **hidden)
            self.chat.wire(demo, c, inspect, download, docs)
            if rewards:
                c.changed().extend(rewards.wire(demo, c, train))  # saved like any change
            InspectTools(svc, inspect, self).wire(c)
            explain.wire(c, inspect)
            self._wire_inspect_action(c, inspect, tabs)
            saved.wire(c)
            self._wire_personas(demo, c, editor, panel, saved, kept_settings)
            saved.restore_on_load(demo, c)
            demo.load(None, None, None, js=FOLD_SIDEBAR_ON_PHONES)
            demo.load(None, None, None, js=MARK_SELECTED)
            demo.load(lambda n: n or DEFAULT_USER, stored_name, user, **hidden)
            user.change(lambda n: n, user, stored_name, **hidden)
            # Controls that depend on the loaded model, as of this page load or a new model.
            fitted = [banner, *panel.refreshed, *inspect.refreshed, *explain.refreshed]

            def refit():
                return [
                    model_banner(svc.info), *panel.refresh(), *inspect.refresh(), *explain.refresh()
                ]

            shown = [panel.preset, *panel.components]
            # What the page sets while it loads (the model's controls, the persona's preset)
            # must not overwrite the kept settings before they are read back: a busy server
            # ran those changes first, and a reload lost the visitor's settings.
            restored = gr.State(False)
            demo.load(refit, None, fitted, **hidden).then(
                lambda k, p: [*self.restore_settings(k, p), True],
                [kept_settings, c.persona], [*shown, restored], **hidden,
            )  # fmt: skip

            def keep(ready, persona, *values):
                if not ready:
                    return gr.skip()
                return {"persona": persona, "preset": values[0], "values": list(values[1:])}

            for control in shown:  # whatever the settings become, this browser keeps them
                control.change(keep, [restored, c.persona, *shown], kept_settings, queue=False,
                               **hidden)  # fmt: skip
            if self.switcher is not None:
                listing = [models.pick, models.capabilities]
                demo.load(models.choices, None, listing, **hidden)
                models.refresh_btn.click(models.choices, None, listing, **hidden)
                models.load_btn.click(
                    models.load,
                    [models.pick, models.backend],
                    [models.status, models.capabilities, banner],
                    concurrency_limit=1,
                    concurrency_id="load-model",
                    **hidden,
                ).success(refit, None, fitted, **hidden)
            demo.unload(self._end_session)
        demo.queue(max_size=self.queue_size, default_concurrency_limit=1)
        return demo

    def _train_tab(self, saved):
        """The Train tab, when the app can train (``studio.training``)."""
        if self.training is None:
            return None
        from ui.train_panel import TrainPanel
        from ui.train_render import CSS

        self.css += CSS
        with gr.Tab("Train", elem_id="tab-train"):
            return TrainPanel(self.training, self, saved.chats)

    @staticmethod
    def _wire_inspect_action(c, inspect, tabs) -> None:
        """The selected message's Inspect action: the Inspect tab, on that reply."""
        show = [inspect.confidence, inspect.tokens, inspect.alternatives, inspect.anatomy]
        show += [inspect.prompt_tokens, inspect.selected]

        @boundary
        def open_on(conversation, index):
            if index is None or not 0 <= index < len(conversation):
                raise user_error("Select a reply first (click it).")
            if conversation[index]["role"] == "user" and index + 1 < len(conversation):
                index += 1  # a question: inspect its answer
            key = str(index)
            if key not in [k for _, k in inspect.reply_choices(conversation)]:
                raise user_error(
                    "That reply recorded no token probabilities (alternatives recorded per "
                    "token was 0, or the backend cannot give them)."
                )
            return gr.Tabs(selected="inspect"), *inspect.refresh_replies(conversation, key)

        c.inspect.click(open_on, [c.conversation, c.selected], [tabs, inspect.reply_pick, *show],
                        api_visibility="private")  # fmt: skip

    def _wire_personas(self, demo, c, editor: PersonaEditor, panel: SettingsPanel, saved,
                       kept_settings):  # fmt: skip
        """The persona picker drives the settings; a saved card restarts the chat with it."""
        hidden = {"api_visibility": "private"}
        c.persona.change(
            lambda p, o, k: self.persona_settings(p, o, panel, k),
            [c.persona, c.own, kept_settings],
            [panel.preset, *panel.components],
            **hidden,
        )
        editor.wire()
        fresh = [*c.fresh_outputs, saved.current, saved.pick]

        @boundary
        def restart(card_id, own, user):
            if not card_id:  # nothing was saved: the chat goes on
                return [gr.update() for _ in fresh]
            return [*self.chat.new_chat(card_id, own, user), new_id(), None]

        for event in editor.saved:
            event.then(restart, [editor.just_saved, c.own, c.user], fresh, **hidden)
        # Cards saved in this browser join the picker on every page load.
        demo.load(editor.refresh, c.own, [c.persona, editor.broken], **hidden)
        demo.load(editor.refresh_pick, c.own, editor.pick, **hidden)
