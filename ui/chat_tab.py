"""The Chat tab: the conversation, the input, and what can be done to each message.

One source of truth: the ``conversation`` state (``studio.conversations``).
Every control that changes the chat (send, retry, edit, versions, delete,
undo, the Chatbot's own trash and undo buttons, a new persona) changes that
state and redraws the Chatbot from it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import gradio as gr

from chat.errors import Cancelled, ChatStudioError
from chat.settings import MAX_CANDIDATES
from studio import conversations as conv
from studio.service import ChatService, ChatTurn, InspectOptions
from ui import render
from ui.documents_panel import SOURCE_HEADERS, sources_rows
from ui.errors import boundary, user_error
from ui.settings_panel import SettingsPanel

GENERATE = "generate"  # one concurrency group for everything that runs the model
DEFAULT_USER = "User"


@dataclass
class ChatControls:
    """The Chat tab's components, named, and the events other panels hook into.

    ``ChatTab.build`` makes the components; ``ChatTab.wire`` fills the event
    lists (``turns``, ``changed_events``, ``started_events``) and the outputs a
    new chat resets. Other panels read these and append to ``on_open``; none
    adds attributes.
    """

    conversation: gr.State
    own: gr.BrowserState
    user: gr.Textbox
    panel: SettingsPanel
    slots: int  # generations the model runs at once
    selected: gr.State
    sent: gr.State
    persona: gr.Dropdown
    chatbot: gr.Chatbot
    actions: gr.Row
    action_label: gr.Markdown
    prev: gr.Button
    next: gr.Button
    retry: gr.Button
    delete: gr.Button
    inspect: gr.Button
    candidates_row: gr.Column
    boxes: list
    choice: gr.Radio
    sources: gr.Dataframe
    grounding: gr.Markdown
    examples: gr.Dataset
    use_docs: gr.Checkbox
    message: gr.Textbox
    send: gr.Button
    stop: gr.Button
    stats: gr.Markdown
    regen: gr.Button
    undo: gr.Button
    clear: gr.Button
    export: gr.Button
    generate: str = GENERATE  # the concurrency group of everything that runs the model
    turns: list = field(default_factory=list)  # the events that end a turn
    changed_events: list = field(default_factory=list)  # change the chat, generate nothing
    started_events: list = field(default_factory=list)  # start a fresh chat
    fresh_outputs: list = field(default_factory=list)  # what a fresh chat sets
    on_open: list = field(default_factory=list)  # (fn, inputs, outputs) when a chat opens

    @property
    def reset_outputs(self) -> list:
        """What ``ChatTab.cleared`` empties when a saved chat opens."""
        return self.fresh_outputs[2:-1]

    def turn_done(self, fn, inputs, outputs) -> list:
        """Run ``fn`` after every turn (sent, retried, regenerated or edited)."""
        return [t.then(fn, inputs, outputs, api_visibility="private") for t in self.turns]

    def changed(self) -> list:
        """The events that change the conversation without generating."""
        return self.changed_events

    def started(self) -> list:
        """The events that start a fresh conversation."""
        return self.started_events

    @staticmethod
    def redraw(conversation):
        """The Chatbot showing ``conversation``."""
        return ChatTab.redraw(conversation)

    @staticmethod
    def after_open() -> tuple:
        """Values for ``reset_outputs`` once a saved chat is open."""
        return ChatTab.cleared()


@dataclass
class TurnOptions:
    """What a turn reads from the page besides the message: typed, by name."""

    settings: dict  # decoding settings for ``parse_settings``
    inspect: InspectOptions
    use_rag: bool
    retrieval: dict | None  # retrieval settings, when the app has documents


@dataclass
class TurnOptionsReader:
    """The controls a turn reads, and their values read back by component, not position."""

    settings: SettingsPanel
    inspect: object  # the InspectPanel: what a reply records
    use_docs: gr.Checkbox
    docs: object = None  # the DocumentsPanel, when the app has documents

    @property
    def components(self) -> list:
        """The inputs to wire after a turn handler's own."""
        out = [*self.settings.components, *self.inspect.recording_inputs, self.use_docs]
        return out + (self.docs.retrieval_inputs if self.docs else [])

    def read(self, values) -> TurnOptions:
        """The options from the values Gradio passed for ``components``."""
        by = dict(zip(self.components, values, strict=True))
        return TurnOptions(
            settings=self.settings.read(by),
            inspect=self.inspect.read_recording(by),
            use_rag=bool(by[self.use_docs]),
            retrieval=self.docs.read_retrieval(by) if self.docs else None,
        )


class ChatTab:
    """Builds the tab (``build``) and handles its events; ``ui`` gives callers and personas."""

    def __init__(self, ui, service: ChatService):
        self.ui = ui
        self.service = service
        self._cancel: dict[str, threading.Event] = {}
        self._busy: set[str] = set()  # sessions with a turn under way
        self._lock = threading.Lock()
        self.options: TurnOptionsReader | None = None  # what a turn reads besides the message

    # ----- layout --------------------------------------------------------------------------
    def build(self, personas, conversation, own, user, panel: SettingsPanel) -> ChatControls:
        """The components of the tab, named, for the other panels to read and wire to."""
        selected = gr.State(None)  # the conversation index of the clicked message
        sent = gr.State("")  # the message being sent (the box is already empty)
        persona = gr.Dropdown(
            personas,
            value=personas[0][1],
            label="Persona",
            elem_id="persona",
            allow_custom_value=True,
        )
        chatbot = gr.Chatbot(
            value=render.chatbot_messages(conversation.value),
            label="Chat",
            show_label=False,  # the tab says it; a floating label would cover messages
            height="60vh",
            min_height=320,
            elem_id="chatbot",
            sanitize_html=True,
            buttons=["copy", "copy_all"],
            editable="user",
            feedback_options=("Like", "Dislike"),
            placeholder="Ask anything, or try one of the examples below.",
        )
        # What belongs to the selected message and to the last reply sits right under the
        # chat, above the input: visible without scrolling, on a phone too.
        with gr.Row(visible=False, elem_id="message-actions") as actions:
            action_label = gr.Markdown(elem_id="action-label")
            prev = gr.Button("‹ version", size="sm", elem_id="version-prev")
            next_ = gr.Button("version ›", size="sm", elem_id="version-next")
            retry = gr.Button("Retry", size="sm", elem_id="retry-message")
            delete = gr.Button("Delete pair", size="sm", elem_id="delete-pair")
            inspect = gr.Button("Inspect", size="sm", elem_id="inspect-message")
        with gr.Column(visible=False, elem_id="candidates") as candidates_row:
            with gr.Row():
                boxes = [
                    gr.Markdown(label=f"Candidate {i + 1}", elem_classes="candidate", visible=False)
                    for i in range(MAX_CANDIDATES)
                ]
            choice = gr.Radio([], label="Continue with candidate", elem_id="choice")
        sources = gr.Dataframe(
            headers=SOURCE_HEADERS,
            label="Sources used in the last answer",
            visible=False,
            interactive=False,
            wrap=True,
            column_widths=["7%", "22%", "20%", "9%", "42%"],
            elem_id="sources",
        )
        # With documents: what a plain search would answer, and each sentence's evidence.
        grounding = gr.Markdown(visible=False, elem_id="grounding")
        examples = gr.Dataset(
            components=[gr.Textbox(visible=False)],
            samples=self._examples(personas[0][1], {}),
            label="Try",
            elem_id="examples",
        )
        with gr.Row(elem_id="input-row", equal_height=True):
            with gr.Column(scale=0, min_width=110, elem_id="use-docs-box"):
                use_docs = gr.Checkbox(False, label="Use documents", elem_id="use-docs")
            with gr.Column(scale=6, min_width=160, elem_id="message-box"):
                message = gr.Textbox(
                    placeholder="Type a message and press Enter",
                    show_label=False,
                    elem_id="message",
                    autofocus=True,
                )
            send = gr.Button("Send", variant="primary", scale=1, min_width=70, elem_id="send")
            stop = gr.Button(
                "Stop", variant="stop", scale=1, min_width=70, elem_id="stop", interactive=False
            )
        stats = gr.Markdown(elem_id="stats-line", elem_classes="stats-line")
        with gr.Row():
            regen = gr.Button("Regenerate", size="sm", elem_id="regenerate")
            undo = gr.Button("Undo / edit last", size="sm", elem_id="undo")
            clear = gr.Button("New chat", size="sm", elem_id="clear")
            export = gr.Button("Export JSON", size="sm", elem_id="export")
        return ChatControls(
            conversation=conversation, own=own, user=user, panel=panel,
            slots=self.service.engine.concurrency, selected=selected, sent=sent,
            persona=persona, chatbot=chatbot, actions=actions, action_label=action_label,
            prev=prev, next=next_, retry=retry, delete=delete, inspect=inspect,
            candidates_row=candidates_row, boxes=boxes, choice=choice, sources=sources,
            grounding=grounding, examples=examples, use_docs=use_docs, message=message,
            send=send, stop=stop, stats=stats, regen=regen, undo=undo, clear=clear,
            export=export,
        )  # fmt: skip

    # ----- helpers ------------------------------------------------------------------------
    def _examples(self, persona_id, own) -> list[list[str]]:
        try:
            return [[e] for e in self.service.personas.get(persona_id, own).examples]
        except ChatStudioError:
            return []

    def _cancel_event(self, session: str) -> threading.Event:
        with self._lock:
            return self._cancel.setdefault(session, threading.Event())

    def forget(self, session: str) -> None:
        """A session ended."""
        with self._lock:
            self._cancel.pop(session, None)
            self._busy.discard(session)

    @boundary
    def accept(self, message, request: gr.Request):
        """Take the typed message out of the box, unless a reply is still being written:
        then it stays in the box with a notice (nothing typed is lost)."""
        session = self.ui.caller(request).session
        with self._lock:
            if session in self._busy:
                raise user_error(
                    "A reply is still being written: your message stays in the box. "
                    "Send it when the reply ends, or press Stop first."
                )
            if message and message.strip():
                self._busy.add(session)
        return message

    @boundary
    def idle(self, request: gr.Request):
        """A turn is over (or never began): Stop greys out, the next message may go."""
        with self._lock:
            self._busy.discard(self.ui.caller(request).session)
        return gr.update(interactive=False)

    @staticmethod
    def redraw(conversation):
        """The Chatbot showing ``conversation`` (with its likes)."""
        messages, _, marks = render.chatbot_view(conversation)
        return gr.update(value=messages, feedback_value=marks)

    def greeting(self, persona_id, own, user) -> list[dict]:
        """A fresh conversation: the persona's greeting, if it has one."""
        text = self.service.personas.get(persona_id, own).greeting_text(user or DEFAULT_USER)
        return [{"role": "assistant", "content": text}] if text else []

    # ----- one turn ------------------------------------------------------------------------
    def _stream(self, before, message, assemble, persona_id, own, user, values, request, undo):
        """Generate the reply to ``message`` after ``before``; ``assemble(reply)`` places it.

        ``undo`` is ``(conversation, box)``: what the chat and the message box go back
        to when the turn fails or is stopped before it began, so nothing typed is lost.
        """
        caller = self.ui.caller(request)
        with self._lock:
            self._busy.add(caller.session)  # until ``idle``, after the turn
        persona = self.ui.persona(persona_id, own)
        options = self.options.read(values)
        inspect = options.inspect
        if not self.service.capabilities.logprobs:
            inspect.top_logprobs = 0
        cancel = self._cancel_event(caller.session)
        cancel.clear()
        result = None
        yield self._outputs(assemble({"role": "assistant", "content": ""}), None, True)
        try:
            with self.ui.watch(caller.session, cancel):
                turn = ChatTurn(message, conv.history(before), persona, options.settings,
                                options.use_rag, options.retrieval, inspect,
                                user or DEFAULT_USER)  # fmt: skip
                for result in self.service.run(caller, turn, cancel):
                    if result.done and _stopped_before_start(result):
                        break  # as if never sent: the chat as it was, the message in the box
                    reply = {"role": "assistant", "content": result.reply}
                    if result.done:
                        reply["meta"] = _meta(result)
                    yield self._outputs(assemble(reply), result, not result.done)
            if result is not None and result.done and _stopped_before_start(result):
                yield self._outputs(undo[0], None, False, box=undo[1])
                gr.Info("Stopped before the model began: your message is back in the box.")
                return
        except Cancelled:
            if result is None:  # stopped before the model began: as if never sent
                yield self._outputs(undo[0], None, False, box=undo[1])
            return
        except ChatStudioError:
            yield self._outputs(undo[0], None, False, box=undo[1])
            raise  # the boundary shows it
        for notice in result.notices if result else []:
            gr.Info(notice)

    def _outputs(self, conversation, result, running: bool, box=None):
        """Values for the outputs of a turn (see ``wire``); ``box``: text for the message box."""
        n = result.settings["num_return_sequences"] if result else 1
        candidates = result.candidates if result else []
        per = (result.stats.get("candidates") or []) if result else []
        boxes = []
        for i in range(MAX_CANDIDATES):
            head = f"**Candidate {i + 1}**"
            if i < len(per):
                head += " · " + render.candidate_line(per[i])
            text = candidates[i] if i < len(candidates) else ""
            body = render.defang(text)  # model output: no images or fetching tags
            boxes.append(gr.update(value=f"{head}\n\n{body}", visible=n > 1 and i < n))
        done = bool(result and result.done)
        radio = gr.update(
            choices=[str(i + 1) for i in range(len(candidates))] if done and n > 1 else [],
            value="1" if done and n > 1 else None,
        )
        stats = render.stats_line(result.stats) if result else "generating…" if running else ""
        if result and not result.done:
            stats = render.progress_line(result.stats, result.settings)
        return [
            self.redraw(conversation),
            conversation,
            stats,
            gr.update(visible=n > 1),
            *boxes,
            radio,
            gr.update(
                value=sources_rows(result.sources) if result else [],
                visible=bool(result and result.sources),
            ),
            gr.update(
                value=render.grounding_markdown(result.attribution, result.extractive)
                if result
                else "",
                visible=bool(result and (result.attribution or result.extractive)),
            ),
            gr.update(interactive=running),
            gr.update() if box is None else box,
        ]

    # ----- events that generate ---------------------------------------------------------------
    @boundary
    def send(self, message, conversation, persona_id, own, user, request: gr.Request, *values):
        """Send the typed message."""
        if not message or not message.strip():
            raise user_error("Type a message first.")
        asked = {"role": "user", "content": message}
        yield from self._stream(
            conversation,
            message,
            lambda reply: conversation + [asked, reply],
            persona_id,
            own,
            user,
            values,
            request,
            (conversation, message),
        )

    @boundary
    def retry(self, index, conversation, persona_id, own, user, request: gr.Request, *values):
        """Answer again at reply ``index``; the old reply stays as a version."""
        if index is None or not 0 <= index < len(conversation):
            raise user_error("Select a reply to retry (click it), or send a message first.")
        if conversation[index]["role"] == "user":
            index += 1
        asked = conv.user_before(conversation, index)
        if asked is None:
            raise user_error("That message answers nothing; select a reply to a message.")
        before = conversation[:asked]
        message = conversation[asked]["content"]
        if index >= len(conversation):  # the user message has no reply yet
            place = lambda reply: conversation[: asked + 1] + [reply]  # noqa: E731
        else:
            place = lambda reply: conv.new_version(conversation, index, reply)  # noqa: E731
        undo = (conversation, None)
        yield from self._stream(
            before, message, place, persona_id, own, user, values, request, undo
        )

    @boundary
    def regenerate(self, conversation, persona_id, own, user, request: gr.Request, *values):
        """Answer the last message again (the old reply stays as a version)."""
        last = conv.last_user(conversation)
        if last is None:
            raise user_error("Nothing to regenerate yet: send a message first.")
        yield from self.retry(last, conversation, persona_id, own, user, request, *values)

    @boundary
    def edited(self, conversation, persona_id, own, user, evt: gr.EditData, request: gr.Request,
               *values):  # fmt: skip
        """A user message was edited in place: answer it anew; the old branch is kept."""
        index = render.display_index(conversation)[_index(evt.index)]
        text = evt.value if isinstance(evt.value, str) else str(evt.value)
        if conversation[index]["role"] != "user" or not text.strip():
            yield self._outputs(conversation, None, False)
            return
        edited = conv.new_version(conversation, index, {"role": "user", "content": text})
        before = conversation[:index]
        yield from self._stream(
            before,
            text,
            lambda reply: edited + [reply],
            persona_id,
            own,
            user,
            values,
            request,
            (conversation, None),
        )

    # ----- events that only change the conversation -------------------------------------------
    @boundary
    def stop(self, request: gr.Request):
        """Halt this session's generation (the backend itself, not only the display), and
        the Inspect tools it is running."""
        session = self.ui.caller(request).session
        self._cancel_event(session).set()
        self.ui.stop_jobs(session)

    def undo(self, conversation):
        """Remove the last exchange and put its message back in the box; the stats go too."""
        last = conv.last_user(conversation)
        if last is None:
            return self.redraw(conversation), conversation, gr.update(), ""
        kept = conversation[:last]
        return self.redraw(kept), kept, conversation[last]["content"], ""

    @staticmethod
    def cleared() -> tuple:
        """What belongs to the last reply, gone: stats, candidates, sources, grounding,
        the message actions and the selection (the outputs ``c.reset_outputs``)."""
        hide = gr.update(visible=False)
        no_sources = gr.update(visible=False, value=[])
        no_grounding = gr.update(visible=False, value="")
        return "", hide, no_sources, no_grounding, hide, None

    @boundary
    def new_chat(self, persona_id, own, user):
        """A fresh conversation opened by the persona's greeting; nothing of the old one stays."""
        fresh = self.greeting(persona_id, own, user)
        examples = gr.update(samples=self._examples(persona_id, own))
        return (self.redraw(fresh), fresh, *self.cleared(), examples)

    @boundary
    def choose_candidate(self, choice, conversation):
        """Continue the conversation with the picked candidate."""
        if not choice or not conversation or "meta" not in conversation[-1]:
            return gr.update(), conversation, gr.update()
        last = dict(conversation[-1])
        meta = dict(last["meta"])
        n = len(meta["candidates"])
        if not str(choice).isdigit() or not 1 <= int(choice) <= n:
            raise user_error(f"Pick a candidate from 1 to {n}.")
        meta["chosen"] = int(choice) - 1
        last.update(content=meta["candidates"][meta["chosen"]], meta=meta)
        conversation = conversation[:-1] + [last]
        return self.redraw(conversation), conversation, render.stats_line(render.shown_stats(meta))

    def select(self, conversation, evt: gr.SelectData):
        """A message was clicked: offer its versions, retry and delete."""
        shown = render.display_index(conversation)
        at = _index(evt.index)
        if at is None or at >= len(shown):
            return None, gr.update(visible=False), ""
        index = shown[at]
        return index, gr.update(visible=True), _action_label(conversation, index)

    @boundary
    def step(self, conversation, index, delta):
        """Show the previous or next version of the selected message."""
        if index is None or index >= len(conversation):
            raise user_error("Select a message first (click it).")
        moved = conv.step_version(conversation, index, delta)
        return self.redraw(moved), moved, _action_label(moved, index)

    @boundary
    def delete_pair(self, conversation, index):
        """Delete the selected message and its reply (or its question)."""
        if index is None or index >= len(conversation):
            raise user_error("Select a message first (click it).")
        kept = conv.delete_pair(conversation, index)
        return self.redraw(kept), kept, None, gr.update(visible=False)

    def liked(self, conversation, evt: gr.LikeData):
        """Store a like or dislike with its reply."""
        shown = render.display_index(conversation)
        at = _index(evt.index)
        if at is None or at >= len(shown):
            return conversation
        value = {True: "like", False: "dislike"}.get(evt.liked)
        return conv.set_feedback(conversation, shown[at], value)

    def export(self, conversation, persona_id):
        """The chat with all metadata as JSON, saved by the browser (nothing kept here)."""
        return render.export_json(conversation, self.service.info, persona_id), "chat.json"

    # ----- wiring -------------------------------------------------------------------------
    def wire(self, demo, c: ChatControls, inspect, download, docs=None) -> None:
        """Connect the tab's events (``inspect``: the recording settings it reads; ``docs``:
        the Documents tab, whose retrieval settings a turn with documents uses)."""
        hidden = {"api_visibility": "private"}
        self.options = TurnOptionsReader(c.panel, inspect, c.use_docs, docs)
        values = self.options.components
        outputs = [c.chatbot, c.conversation, c.stats, c.candidates_row, *c.boxes, c.choice]
        outputs += [c.sources, c.grounding, c.stop, c.message]
        run = dict(
            outputs=outputs,
            concurrency_limit=c.slots + 2,  # the prompt is built before a slot is taken
            concurrency_id=GENERATE,
            **hidden,
        )
        who = [c.persona, c.own, c.user]
        turns = []
        for trigger in (c.message.submit, c.send.click):
            # The message travels on in ``sent`` and the box empties. While a reply is being
            # written, ``accept`` refuses with a notice and the message stays in the box (it
            # is queued, so the notice reaches the page, but never waits for a slot; it sets
            # only the State, so the box shows no error badge over the text).
            event = trigger(self.accept, c.message, c.sent, concurrency_limit=None,
                            trigger_mode="multiple", **hidden)  # fmt: skip
            emptied = event.success(lambda: "", None, c.message, queue=False, **hidden)
            turns.append(emptied.then(self.send, [c.sent, c.conversation, *who, *values],
                                      **run))  # fmt: skip
        turns.append(c.regen.click(self.regenerate, [c.conversation, *who, *values], **run))
        turns.append(c.retry.click(self.retry, [c.selected, c.conversation, *who, *values], **run))
        turns.append(c.chatbot.retry(self.regenerate, [c.conversation, *who, *values], **run))
        turns.append(c.chatbot.edit(self.edited, [c.conversation, *who, *values], **run))
        for t in turns:
            t.then(self.idle, None, c.stop, **hidden)
        c.turns = turns
        c.examples.click(lambda s: s[0], c.examples, c.message, **hidden)
        c.stop.click(self.stop, None, None, queue=False, **hidden)
        changed = []  # events that change the conversation without generating
        undo_out = [c.chatbot, c.conversation, c.message, c.stats]
        changed.append(c.undo.click(self.undo, c.conversation, undo_out, **hidden))
        changed.append(c.chatbot.undo(self.undo, c.conversation, undo_out, **hidden))
        fresh = [c.chatbot, c.conversation, c.stats, c.candidates_row, c.sources, c.grounding]
        fresh += [c.actions, c.selected, c.examples]
        c.fresh_outputs = fresh
        started = [
            trigger(self.new_chat, who, fresh, **hidden)
            for trigger in (c.clear.click, c.chatbot.clear, c.persona.input)
        ]
        c.persona.change(lambda p, o: gr.update(samples=self._examples(p, o)),
                         [c.persona, c.own], c.examples, **hidden)  # fmt: skip
        changed.append(c.choice.input(self.choose_candidate, [c.choice, c.conversation],
                                      [c.chatbot, c.conversation, c.stats], **hidden))  # fmt: skip
        c.chatbot.select(self.select, c.conversation, [c.selected, c.actions, c.action_label],
                         **hidden)  # fmt: skip
        changed.append(c.chatbot.like(self.liked, c.conversation, c.conversation, **hidden))
        for button, delta in ((c.prev, -1), (c.next, +1)):
            changed.append(button.click(
                lambda cv, i, d=delta: self.step(cv, i, d), [c.conversation, c.selected],
                [c.chatbot, c.conversation, c.action_label], **hidden))  # fmt: skip
        changed.append(c.delete.click(self.delete_pair, [c.conversation, c.selected],
                       [c.chatbot, c.conversation, c.selected, c.actions], **hidden))  # fmt: skip
        c.changed_events, c.started_events = changed, started
        download.wire(c.export.click, self.export, [c.conversation, c.persona], **hidden)


_meta = conv.reply_meta  # what a finished reply keeps


def _stopped_before_start(result) -> bool:
    """Stopped before the model wrote a single token (nothing to show, nothing to keep)."""
    reason = result.stats.get("finish_reason")
    reasons = reason if isinstance(reason, list) else [reason]
    return (
        "cancelled" in reasons
        and not result.stats.get("completion_tokens")
        and not any((c or "").strip() for c in result.candidates or [result.reply])
    )


def _index(index) -> int | None:
    if isinstance(index, int):
        return index
    if isinstance(index, (list, tuple)) and index:
        return _index(index[0])
    return None


def _action_label(conversation, index) -> str:
    message = conversation[index]
    current, count = conv.versions_of(message)
    who = "your message" if message["role"] == "user" else "reply"
    nth = sum(1 for m in conversation[: index + 1] if m["role"] == message["role"])
    return f"Selected: {who} #{nth} · version **{current}/{count}**"
