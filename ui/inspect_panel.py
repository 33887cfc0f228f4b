"""The Inspect tab: what the model did, not only what it said.

Five views: a reply's tokens coloured by probability (select one to see its
alternatives, or continue the reply with one of them), the prompt's anatomy,
the next-token explorer, perplexity with the "AI-written?" gauge, attention,
and a side-by-side comparison of decoding strategies. What the loaded backend
cannot show says so, with the backend's own reason.
"""

from __future__ import annotations

import gradio as gr

from chat.errors import Cancelled, ChatStudioError
from chat.perplexity import CAVEATS
from studio import conversations as conv
from studio.access import Access
from studio.service import ChatService, ChatTurn, inspect_options
from ui import inspect_render as draw
from ui.errors import boundary, typed_token_id, user_error

MODES = ["model probability", "after the sampler"]


def _unavailable(caps, feature: str) -> str:
    reason = caps.why_not(feature)
    return f"⚠️ Not available on this backend: {reason}" if reason else ""


def _no_beam(caps) -> str:
    """Why the beam rows and the classic comparison are off, or "" where beam search runs."""
    if "beam" in caps.strategies:
        return ""
    reason = caps.missing.get("beam", "beam search is not available on this backend")
    return f"*The classic comparison is off: {reason}.*"


class InspectPanel:
    """Builds the Inspect tab's contents; ``wire`` connects them to the chat's state."""

    def __init__(self, service: ChatService, access: Access):
        self.service = service
        self.access = access
        caps = service.capabilities
        gr.Markdown(
            "See what the model does: the probability of every token it wrote, what it "
            "would say next, how surprised it is by a text, and where it looks. "
            "Start with the **reply tokens** of your last answer."
        )
        with gr.Accordion("Reply tokens", open=True, elem_id="inspect-reply"):
            self.logprobs_note = gr.Markdown(_unavailable(caps, "logprobs"))
            with gr.Row():
                self.top_logprobs = gr.Slider(
                    0,
                    20,
                    value=10 if caps.logprobs else 0,
                    step=1,
                    label="alternatives recorded per token",
                    info="0 records no probabilities; costs little either way.",
                    interactive=caps.logprobs,
                    elem_id="top-logprobs",
                )
                self.threshold = gr.Slider(
                    0,
                    1,
                    value=inspect_options().confidence_threshold,
                    step=0.01,
                    label="low-confidence threshold",
                    info="A reply whose mean token probability is below this is marked.",
                    elem_id="confidence-threshold",
                )
            with gr.Row():
                self.reply_pick = gr.Dropdown([], label="Reply", elem_id="reply-pick", scale=3)
                self.mode = gr.Radio(MODES, value=MODES[0], label="Colour by", scale=2)
            self.confidence = gr.Markdown(elem_id="reply-confidence")
            self.tokens = gr.HighlightedText(
                label="Tokens: the redder, the less likely the model found it (select one)",
                elem_id="reply-tokens",
                show_legend=False,
                combine_adjacent=False,
            )
            self.alternatives = gr.HTML(elem_id="token-alternatives")
            with gr.Row():
                self.alt_pick = gr.Dropdown(
                    [], label="Alternative", elem_id="alt-pick", scale=3, allow_custom_value=True
                )
                self.branch_btn = gr.Button(
                    "Continue with this alternative", elem_id="branch", scale=2
                )
            self.branch_text = gr.Markdown(elem_id="branch-text")
            self.keep_btn = gr.Button("Keep this version", visible=False, elem_id="keep-branch")
            self.selected = gr.State(None)  # (reply index, token index)
        with gr.Accordion("Prompt anatomy", open=False, elem_id="inspect-anatomy"):
            self.anatomy = gr.HTML(elem_id="anatomy-bar")
            self.prompt_tokens = gr.HighlightedText(
                label="The exact prompt, token by token", elem_id="prompt-tokens"
            )
        with gr.Accordion("Next-token explorer", open=False, elem_id="inspect-next"):
            gr.Markdown(
                "Type a text and see which token the model predicts next, before and after "
                "the sampler (the decoding settings on the Chat tab). Append tokens one at "
                "a time: this is all a language model ever does."
            )
            self.nt_note = gr.Markdown(_unavailable(caps, "next_token"))
            self.nt_text = gr.Textbox(
                value="The capital of France is", lines=3, label="Text", elem_id="nt-text"
            )
            with gr.Row():
                self.nt_template = gr.Checkbox(
                    False,
                    label="as the assistant's reply to this message (persona and chat template)",
                    elem_id="nt-template",
                )
                self.nt_k = gr.Slider(2, 30, value=10, step=1, label="top k shown")
            self.nt_reply = gr.Textbox(
                label="The assistant's reply so far", visible=False, elem_id="nt-reply"
            )
            with gr.Row():
                self.nt_go = gr.Button("Predict", variant="primary", elem_id="nt-predict")
                self.nt_top = gr.Button("Append top token", elem_id="nt-append-top")
                self.nt_sampled = gr.Button("Append a sampled token", elem_id="nt-append-sampled")
                self.nt_undo = gr.Button("Undo a step", elem_id="nt-undo")
            self.nt_split = gr.HighlightedText(
                label="How the model reads it (token boundaries; hover for ids)",
                elem_id="nt-tokens",
            )
            self.nt_bars = gr.HTML(elem_id="nt-bars")
            with gr.Row():
                self.nt_pick = gr.Dropdown(
                    [], label="Append this token", elem_id="nt-pick", allow_custom_value=True
                )
                self.nt_append = gr.Button("Append", elem_id="nt-append")
            self.nt_result = gr.State(None)
            self.nt_steps = gr.State([])
        with gr.Accordion("Perplexity and the AI-text gauge", open=False, elem_id="inspect-ppl"):
            self.ppl_note = gr.Markdown(_unavailable(caps, "scoring"))
            self.ppl_text = gr.Textbox(lines=5, label="Text to score", elem_id="ppl-text")
            with gr.Row():
                self.ppl_last = gr.Button("Use the selected reply")
                self.ppl_source = gr.Button("Use its first source passage")
                self.ppl_go = gr.Button("Score", variant="primary", elem_id="ppl-score")
                self.ppl_stop = gr.Button("Stop", variant="stop", elem_id="ppl-stop")
            self.ppl_summary = gr.Markdown(elem_id="ppl-summary")
            self.ppl_view = gr.HighlightedText(
                label="Surprisal: the redder, the less the model expected the token",
                elem_id="ppl-tokens",
            )
            self.ppl_table = gr.Dataframe(
                headers=["token", "probability", "surprisal (nats)"],
                label="Most surprising tokens",
                interactive=False,
            )
            gr.Markdown(f"*{CAVEATS}*")
        with gr.Accordion("Attention", open=False, elem_id="inspect-attention"):
            self.att_note = gr.Markdown(_unavailable(caps, "attention"))
            self.att_text = gr.Textbox(
                value="The cat sat on the mat because it was tired.",
                lines=2,
                label="Text",
                elem_id="att-text",
            )
            with gr.Row():
                self.att_last = gr.Button("Use the selected reply")
                self.att_layer = gr.Number(
                    -1,
                    precision=0,
                    label="layer (numbered from 0; -1: the last)",
                    elem_id="att-layer",
                )
                self.att_head = gr.Textbox(  # a Number shows 0 when empty: it must start empty
                    "",
                    label="head (numbered from 0; empty: the average over heads)",
                    placeholder="average over heads",
                    elem_id="att-head",
                )
                self.att_go = gr.Button(
                    "Show attention", interactive=caps.attention, elem_id="att-show"
                )
            self.att_view = gr.HTML(elem_id="att-heatmap")
        with gr.Accordion("Compare decoding strategies", open=False, elem_id="inspect-compare"):
            gr.Markdown(
                "Your last message answered by greedy decoding, beam search and sampling at "
                "two temperatures (seed 42), with each reply's log-probability: the sum over "
                "its tokens, so the higher, the more likely the model finds it."
            )
            with gr.Row():
                self.cmp_go = gr.Button("Compare strategies", elem_id="compare")
                self.cmp_classic = gr.Button(
                    "Classic: beam_width 5 + repetition_penalty 1.2 vs greedy",
                    elem_id="compare-classic",
                    interactive="beam" in caps.strategies,
                )
                self.cmp_stop = gr.Button("Stop", variant="stop", elem_id="compare-stop")
            self.cmp_note = gr.Markdown(_no_beam(caps), elem_id="compare-note")
            self.cmp_table = gr.Dataframe(
                headers=["strategy", "reply", "log-probability", "mean per token", "tokens/s"],
                wrap=True,
                column_widths=["18%", "46%", "12%", "12%", "12%"],
                interactive=False,
                elem_id="compare-table",
            )

    @property
    def recording_inputs(self) -> list:
        """What a chat turn records about its tokens: its controls, for the turn's inputs."""
        return [self.top_logprobs, self.threshold]

    def read_recording(self, values: dict):
        """The ``InspectOptions`` from an event's values, keyed by component."""
        return inspect_options(
            top_logprobs=values[self.top_logprobs], confidence_threshold=values[self.threshold]
        )

    def refresh(self) -> list:
        """Updates of the capability notes and controls, for the backend loaded now."""
        caps = self.service.capabilities
        return [
            _unavailable(caps, "logprobs"),
            gr.update(interactive=caps.logprobs, value=10 if caps.logprobs else 0),
            _unavailable(caps, "next_token"),
            _unavailable(caps, "scoring"),
            _unavailable(caps, "attention"),
            gr.update(interactive=caps.attention),
            gr.update(interactive="beam" in caps.strategies),
            _no_beam(caps),
        ]

    @property
    def refreshed(self) -> list:
        """The components ``refresh`` updates, in its order."""
        return [
            self.logprobs_note,
            self.top_logprobs,
            self.nt_note,
            self.ppl_note,
            self.att_note,
            self.att_go,
            self.cmp_classic,
            self.cmp_note,
        ]

    # -- reply tokens -------------------------------------------------------------------

    @staticmethod
    def reply_choices(conversation: list[dict]) -> list[tuple[str, str]]:
        """``(label, key)`` for each reply, candidate and version that recorded its tokens
        (keys: ``"3"`` the reply shown at 3, ``"3:c1"`` its candidate 2, ``"3:v0"`` version 1)."""
        out = []
        n = 0
        for i, m in enumerate(conversation):
            if m["role"] != "assistant":
                continue
            n += 1
            meta = m.get("meta") or {}
            if _all_tokens(meta):
                out.append((f"Reply {n}: {_words(m['content'])}", str(i)))
            cands = meta.get("candidates") or []
            for k, text in enumerate(cands if len(cands) > 1 else []):
                if k != meta.get("chosen", 0) and len(_all_tokens(meta)) > k:
                    out.append((f"Reply {n}, candidate {k + 1}: {_words(text)}", f"{i}:c{k}"))
            versions = m.get("versions") or []
            for k, v in enumerate(versions):
                if k != m.get("current", 0) and _all_tokens(v.get("meta")):
                    label = f"Reply {n}, version {k + 1}/{len(versions)}: {_words(v['content'])}"
                    out.append((label, f"{i}:v{k}"))
        return out

    def refresh_replies(self, conversation, key=None):
        """The reply picker after a turn or an opened chat: ``key`` (else the newest reply
        shown) selected and shown."""
        choices = self.reply_choices(conversation)
        keys = [k for _, k in choices]
        value = key if key in keys else next((k for k in reversed(keys) if ":" not in k), None)
        return (gr.update(choices=choices, value=value), *self.show_reply(conversation, value))

    def show_reply(self, conversation, index, mode=MODES[0]):
        """Coloured tokens, confidence, anatomy and prompt tokens of one reply."""
        meta = _meta(conversation, index)
        if not meta:
            return "", [], "", "", [], None
        tokens = _tokens(meta)
        spans = draw.token_spans(tokens, use_sampler=mode == MODES[1])
        anatomy, prompt = "", []
        if meta.get("prompt") and meta.get("parts"):
            try:
                a = self.service.anatomy(meta["prompt_messages"], meta["parts"], meta["prompt"])
                anatomy = draw.stacked(a["parts"], a["n_ctx"])
                prompt = [(t["text"], str(i % 2)) for i, t in enumerate(a["tokens"])]
            except ChatStudioError as exc:
                anatomy = str(exc)
        conf = draw.confidence_line(meta["stats"].get("confidence"))
        return conf, spans, "", anatomy, prompt, None

    def select_token(self, conversation, index, evt: gr.SelectData):
        """The alternatives of the selected token, and the picker to branch with one."""
        meta = _meta(conversation, index)
        if not meta or evt.index is None:
            return "", gr.update(choices=[], value=None), None
        i = evt.index if isinstance(evt.index, int) else evt.index[0]
        token = _tokens(meta)[i]
        rows = draw.alternatives(token)
        note = f"Token {i + 1}: the model's probabilities; the chosen token is marked ✓."
        if rows and not rows[0]["chosen"] and meta["settings"]["strategy"] == "greedy":
            note += " The repetition penalty changed the greedy pick."
        choices = [
            (f"{draw.shown(a['text'])}  (p={a['prob']:.3f})", a["id"])
            for a in rows
            if not a["chosen"] and a["id"] >= 0
        ]
        return (
            draw.bars(rows, note=note),
            gr.update(choices=choices, value=choices[0][1] if choices else None),
            [index, i],
        )

    @boundary
    def branch(self, conversation, selected, alt_id, persona_id, own, request: gr.Request):
        """Regenerate the selected reply from the selected token on, with ``alt_id`` there."""
        caller = self.access.caller(request)
        if not selected or alt_id is None:
            raise user_error("Select a token of a reply, then an alternative, first.")
        key, position = selected
        meta, index = _meta(conversation, key), _where(key)[0]
        user_at = max(i for i in range(index) if conversation[i]["role"] == "user")
        history = [{"role": m["role"], "content": m["content"]} for m in conversation[:user_at]]
        tokens = _tokens(meta)
        forced = [t["id"] for t in tokens[:position]] + [typed_token_id(alt_id)]
        settings = {**meta["settings"], "num_return_sequences": 1}
        if settings["strategy"] == "beam":
            settings.update(strategy="greedy", num_beams=1)
        try:  # the service checks every id against the model before it runs
            options = inspect_options(
                top_logprobs=max(1, len(tokens[0]["top"])), reply_prefix_ids=forced
            )
            persona = self.service.personas.get(persona_id, own)
            turn = ChatTurn(conversation[user_at]["content"], history, persona, settings,
                            inspect=options)  # fmt: skip
            *_, result = self.service.run(caller, turn)
        except Cancelled:
            return conversation, gr.update(), gr.update()
        # The branch waits beside the reply, with its own stats, seed and tokens, until kept.
        reply = dict(conversation[index])
        reply["meta"] = dict(reply["meta"], branch=conv.reply_meta(result))
        conversation = conversation[:index] + [reply] + conversation[index + 1 :]
        text = f"**Branch** (starts with your chosen token):\n\n{draw.html.escape(result.reply)}"
        return conversation, text, gr.update(visible=True)

    @boundary
    def keep_branch(self, conversation, index):
        """Make the latest branch the reply, as a new version: the original reply, and what
        followed it, stay one step back (‹ version in the chat)."""
        index = _where(index)[0] if index is not None else None
        meta = (conversation[index].get("meta") or {}) if index is not None else {}
        branch = meta.get("branch")
        if not isinstance(branch, dict):
            raise user_error("Continue with an alternative first.")
        original = dict(conversation[index], meta={k: v for k, v in meta.items() if k != "branch"})
        before = conversation[:index] + [original] + conversation[index + 1 :]
        reply = {"role": "assistant", "content": branch["candidates"][0], "meta": branch}
        kept = conv.new_version(before, index, reply)
        return kept, gr.update(visible=False), "", gr.update(choices=self.reply_choices(kept),
                                                             value=str(index))  # fmt: skip


def _where(key) -> tuple[int | None, str, int]:
    """``(message index, kind, k)`` of a reply key: kind ``""``, ``"c"`` or ``"v"``."""
    if isinstance(key, int):
        return key, "", 0
    if not isinstance(key, str) or not key:
        return None, "", 0
    head, _, tail = key.partition(":")
    try:
        return int(head), tail[:1], int(tail[1:] or 0)
    except ValueError:
        return None, "", 0


def _meta(conversation, key) -> dict | None:
    """The meta of the reply, candidate or version ``key`` names (None without tokens)."""
    index, kind, k = _where(key)
    if index is None or not 0 <= index < len(conversation):
        return None
    message = conversation[index]
    meta = message.get("meta") or {}
    if kind == "v":
        versions = message.get("versions") or []
        meta = (versions[k].get("meta") or {}) if k < len(versions) else {}
    elif kind == "c":
        meta = dict(meta, chosen=k) if k < len(meta.get("tokens") or []) else {}
    return meta if meta.get("tokens") else None


def reply_tokens(conversation, key) -> list[dict] | None:
    """The recorded tokens of the reply, candidate or version ``key`` names (None if none)."""
    meta = _meta(conversation, key)
    return _tokens(meta) if meta else None


def reply_at(conversation, key) -> tuple[int, str, dict]:
    """``(message index, text, meta)`` of the reply, candidate or version ``key`` names."""
    index, kind, k = _where(key)
    if index is None or not 0 <= index < len(conversation):
        raise user_error("Pick a reply first (send a message on the Chat tab).")
    message = conversation[index]
    meta = message.get("meta") or {}
    text = message["content"]
    if kind == "v" and k < len(message.get("versions") or []):
        version = message["versions"][k]
        text, meta = version["content"], version.get("meta") or {}
    elif kind == "c" and k < len(meta.get("candidates") or []):
        text = meta["candidates"][k]
    return index, text, meta


def _all_tokens(meta) -> list:
    return (meta or {}).get("tokens") or []


def _words(text: str) -> str:
    words = text.split()
    return " ".join(words[:8]) + ("…" if len(words) > 8 else "")


def _tokens(meta: dict) -> list[dict]:
    """The tokens of the version of a reply that is shown."""
    chosen = meta.get("chosen", 0)
    return meta["tokens"][chosen if chosen < len(meta["tokens"]) else 0]
