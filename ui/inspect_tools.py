"""Handlers of the Inspect tab's tools (next token, perplexity, attention, comparison),
their wiring, and the named API endpoints behind them.

Every handler that runs the model takes a generation slot like a chat turn
does, and works out its caller first.
"""

from __future__ import annotations

import math

import gradio as gr

from studio import requests as req
from studio.service import ChatService
from ui import inspect_render as draw
from ui.errors import boundary, typed_token_id, user_error
from ui.inspect_panel import InspectPanel, reply_at
from ui.settings_panel import SettingsPanel


class InspectTools:
    """The tools' handlers, bound to the service; ``wire`` connects them to the page."""

    def __init__(self, service: ChatService, panel: InspectPanel, ui):
        self.service = service
        self.panel = panel
        self.ui = ui  # the ChatUI: who calls; its ``job`` ends the work on Stop or departure
        self.settings: SettingsPanel | None = None  # the chat's decoding settings (``wire``)

    # -- next-token explorer -------------------------------------------------------------

    @boundary
    def predict(self, text, template, reply, k, persona_id, own, conversation,
                request: gr.Request, *settings_values):  # fmt: skip
        """Tokenization of the text, and the next-token distribution after it."""
        settings = self.settings.read(dict(zip(self.settings.components, settings_values,
                                               strict=True)))  # fmt: skip
        settings.update(num_return_sequences=1, num_beams=1)
        if settings["strategy"] == "beam":
            settings["strategy"] = "greedy"
        persona = self.service.personas.get(persona_id, own)
        history = _history(conversation) if template else None
        with self.ui.job(request) as cancel:
            out = self.service.next_token(
                text, k, settings, bool(template), persona, history, reply or "", cancel
            )
        rows = [dict(c) for c in out["candidates"]]
        split = [(t["text"], f"{t['id']}") for t in out["tokens"]]
        note = (
            f"{len(out['tokens'])} tokens in. The sampler ({' → '.join(out['sampler']['order'])}) "
            f"keeps {out['kept_count']} token(s); probabilities after it are renormalised."
        )
        picks = [(f"{draw.shown(c['text'])}  (p={c['prob']:.3f})", c["id"]) for c in rows]
        return (
            split,
            draw.bars(rows, note=note),
            gr.update(choices=picks, value=picks[0][1] if picks else None),
            out,
        )

    @boundary
    def step(self, how, request: gr.Request, text, template, reply, steps, result, picked, k,
             persona_id, own, conversation, *settings_values):  # fmt: skip
        """Append a token, then predict again: one step, so quick clicks never use stale data."""
        text, reply, steps = self.append(text, template, reply, steps, result, how, picked)
        shown = self.predict(text, template, reply, k, persona_id, own, conversation, request,
                             *settings_values)  # fmt: skip
        return (text, reply, steps, *shown)

    @boundary
    def back(self, text, template, reply, steps, k, persona_id, own, conversation,
             request: gr.Request, *settings):  # fmt: skip
        """Undo the last step, and predict again."""
        text, reply, steps = self.undo(text, reply, steps)
        return (text, reply, steps, *self.predict(text, template, reply, k, persona_id, own,
                                                  conversation, request, *settings))  # fmt: skip

    @boundary
    def append(self, text, template, reply, steps, result, how, picked):
        """Append the top, a sampled or the picked token; remember the step for Undo."""
        if not result:
            raise user_error("Press Predict first.")
        by_id = {c["id"]: c for c in result["candidates"]}
        if how == "top":
            token_id = result["candidates"][0]["id"]
        elif how == "sampled":
            token_id = result["sampled"]["id"]
        else:
            token_id = typed_token_id(picked)
        piece = by_id[token_id]["text"] if token_id in by_id else self._piece(token_id)
        steps = list(steps) + [(text, reply)]
        if template:
            return text, (reply or "") + piece, steps
        return text + piece, reply, steps

    def _piece(self, token_id: int) -> str:
        return self.service.piece(token_id)

    @staticmethod
    def undo(text, reply, steps):
        """Take back the last appended token."""
        if not steps:
            return text, reply, steps
        (text, reply), steps = steps[-1], list(steps[:-1])
        return text, reply, steps

    # -- perplexity, attention, comparison -------------------------------------------------

    @boundary
    def perplexity(self, text, request: gr.Request):
        """Summary, coloured surprisal, the most surprising tokens."""
        with self.ui.job(request) as cancel:
            out = self.service.perplexity(text, cancel)
        gauge = out["ai_score"]
        verdict = "reads machine-like" if gauge >= 0.5 else "reads human-like"
        summary = (
            f"**Perplexity {out['perplexity']:.2f}** (mean log-probability "
            f"{out['mean_logprob']:.3f}) · burstiness {out['burstiness']:.3f} · mean entropy "
            f"{out['entropy']:.3f} nats\n\n**AI-text gauge: {gauge:.2f}** ({verdict}; "
            f"uncalibrated, see the caveats below)\n\n*{out['method']}*"
        )
        table = [
            [draw.shown(t["text"]), round(math.exp(t["logprob"]), 4), round(-t["logprob"], 3)]
            for t in out["most_surprising"]
        ]
        return summary, draw.surprisal_spans(out["tokens"]), table

    @boundary
    def attention(self, text, layer, head, request: gr.Request):
        """The heatmap of one layer (a head, or the average over heads)."""
        head = str(head if head is not None else "").strip()
        if head and not head.lstrip("-").isdigit():
            raise user_error(f"head: a number from 0, or empty for the average; got {head!r}")
        head = int(head) if head else None
        with self.ui.job(request) as cancel:
            out = self.service.attention(text, -1 if layer is None else layer, head, cancel)
        which = "the average over heads" if head is None else f"head {head}"
        title = (  # numbered from 0, said once: layers 0..N-1, heads 0..H-1
            f"Layer {out['layer']} (layers 0–{out['layers'] - 1}), {which} "
            f"(heads 0–{out['heads'] - 1}). Rows attend to columns; each row sums to 1. "
            + " ".join(out["notices"])
        )
        return draw.heatmap(out["tokens"], out["weights"], title)

    @boundary
    def compare(self, conversation, persona_id, own, classic=False, progress=None, request=None):
        """The last message under several strategies: the table grows one row at a time."""
        from chat.compare import CLASSIC, STANDARD

        users = [i for i, m in enumerate(conversation) if m["role"] == "user"]
        if not users:
            raise user_error("Send a message on the Chat tab first: it is what gets compared.")
        last = users[-1]
        history = [{"role": m["role"], "content": m["content"]} for m in conversation[:last]]
        strategies, rows = CLASSIC if classic else STANDARD, []
        persona = self.service.personas.get(persona_id, own)
        with self.ui.job(request) as cancel:
            for i, (label, settings) in enumerate(strategies):
                if progress is not None:
                    progress((i, len(strategies)), desc=f"Generating: {label}", unit="replies")
                message = conversation[last]["content"]
                pair = [{"label": label, "settings": settings}]
                rows += self.service.compare(message, history, persona, pair, cancel=cancel)
                yield draw.comparison_rows(rows)

    @boundary
    def stop(self, request: gr.Request):
        """Stop this caller's running tools (the tab's Stop buttons; the chat's Stop too)."""
        self.ui.stop_jobs(self.ui.caller(request).session)

    def _compare_handler(self, classic: bool):
        """The page's handler for one comparison button (with Gradio's progress bar)."""

        @boundary
        def handler(conversation, persona_id, own, request: gr.Request,
                    progress=gr.Progress()):  # noqa: B008  # fmt: skip
            yield from self.compare(conversation, persona_id, own, classic, progress, request)

        return handler

    def _stepper(self, how: str):
        """The page's handler for one of the append buttons (``how``: top, sampled, pick)."""

        def handler(request: gr.Request, *values):
            return self.step(how, request, *values)

        return handler

    # -- API ------------------------------------------------------------------------------

    @boundary
    def api_next_token(
        self,
        text: str,
        top_k: int = 10,
        settings: dict | None = None,
        template: bool = False,
        persona: str = "assistant",
        reply_so_far: str = "",
        history: list[dict] | None = None,
        request: gr.Request = None,
    ) -> dict:
        """Next-token distribution after ``text``: its tokens, and candidates (raw and sampled).
        Like every tool's endpoint, it stops once nobody waits for its result."""
        r = req.parse_request(
            req.NextTokenRequest,
            text=text,
            top_k=top_k,
            settings=settings,
            template=template,
            persona=persona,
            reply_so_far=reply_so_far,
            history=history,
        )
        card = self.service.personas.get(r.persona)
        with self.ui.job(request) as cancel:
            return self.service.next_token(
                r.text, r.top_k, r.settings, r.template, card, r.history, r.reply_so_far, cancel
            )

    @boundary
    def api_perplexity(self, text: str, request: gr.Request = None) -> dict:
        """Perplexity, per-token log-probabilities, burstiness, entropy and the AI-text gauge."""
        text = req.parse_request(req.TextRequest, text=text).text
        with self.ui.job(request) as cancel:
            return self.service.perplexity(text, cancel)

    @boundary
    def api_attention(
        self, text: str, layer: int = -1, head: int | None = None, request: gr.Request = None
    ) -> dict:
        """Attention weights of a layer over ``text`` (averaged over heads when head is None)."""
        self.service.capabilities.require("attention")  # its reason first
        r = req.parse_request(req.AttentionRequest, text=text, layer=layer, head=head)
        with self.ui.job(request) as cancel:
            return self.service.attention(r.text, r.layer, r.head, cancel)

    @boundary
    def api_compare(
        self,
        message: str,
        history: list[dict] | None = None,
        persona: str = "assistant",
        strategies: list[dict] | None = None,
        max_new_tokens: int = 48,
        request: gr.Request = None,
    ) -> list[dict]:
        """One prompt under several decoding strategies (default: greedy, beam, two temperatures).

        ``strategies``: ``[{"label": ..., "settings": {...}}]``, at most four. Each
        strategy is held to the app's reply-token and time limits, and the
        comparison stops once nobody waits for its result.
        """
        card = self.service.personas.get(persona)
        with self.ui.job(request) as cancel:
            return self.service.compare(
                message, history, card, strategies or None, max_new_tokens, cancel
            )

    def api_model(self) -> dict:
        """What is loaded and what it can show: model info and capabilities (with reasons)."""
        info = self.service.info
        return {
            "model": info.model,
            "backend": info.backend,
            "device": info.device,
            "n_ctx": info.n_ctx,
            "chat_template": info.chat_template,
            "capabilities": self.service.capabilities.to_api(),
        }

    # -- wiring ---------------------------------------------------------------------------

    def wire(self, chat) -> None:
        """Connect the Inspect tab to the chat (``chat``: its conversation, persona, settings)."""
        self.settings = chat.panel  # the decoding settings the explorer's sampler shows
        # The named endpoints first: the page's own events must not take their names.
        api = {"concurrency_limit": chat.slots + 2, "concurrency_id": chat.generate}
        gr.api(self.api_next_token, api_name="next_token", **api)
        gr.api(self.api_perplexity, api_name="perplexity", **api)
        gr.api(self.api_attention, api_name="attention", **api)
        gr.api(self.api_compare, api_name="compare", **api)
        gr.api(self.api_model, api_name="model")
        p, hidden = self.panel, {"api_visibility": "private"}
        slot = {"concurrency_limit": chat.slots + 2, "concurrency_id": chat.generate, **hidden}
        show = [p.confidence, p.tokens, p.alternatives, p.anatomy, p.prompt_tokens, p.selected]
        chat.turn_done(p.refresh_replies, chat.conversation, [p.reply_pick, *show])
        for trigger in (p.reply_pick.change, p.mode.change):
            trigger(p.show_reply, [chat.conversation, p.reply_pick, p.mode], show, **hidden)
        p.tokens.select(
            p.select_token,
            [chat.conversation, p.reply_pick],
            [p.alternatives, p.alt_pick, p.selected],
            **hidden,
        )
        p.branch_btn.click(
            p.branch,
            [chat.conversation, p.selected, p.alt_pick, chat.persona, chat.own],
            [chat.conversation, p.branch_text, p.keep_btn],
            **slot,
        )
        kept = p.keep_btn.click(
            p.keep_branch,
            [chat.conversation, p.reply_pick],
            [chat.conversation, p.keep_btn, p.branch_text, p.reply_pick],
            **hidden,
        ).then(chat.redraw, chat.conversation, chat.chatbot, **hidden)
        chat.changed().append(kept)  # saved like any other change
        chat.on_open.append((p.refresh_replies, chat.conversation, [p.reply_pick, *show]))
        nt_in = [p.nt_text, p.nt_template, p.nt_reply, p.nt_k, chat.persona, chat.own]
        nt_in += [chat.conversation, *self.settings.components]
        nt_out = [p.nt_split, p.nt_bars, p.nt_pick, p.nt_result]
        p.nt_go.click(self.predict, nt_in, nt_out, **slot)
        p.nt_template.change(lambda t: gr.update(visible=t), p.nt_template, p.nt_reply, **hidden)
        step_in = [p.nt_text, p.nt_template, p.nt_reply, p.nt_steps, p.nt_result, p.nt_pick]
        step_in += nt_in[3:]
        step_out = [p.nt_text, p.nt_reply, p.nt_steps, *nt_out]
        for button, how in ((p.nt_top, "top"), (p.nt_sampled, "sampled"), (p.nt_append, "pick")):
            button.click(
                self._stepper(how),
                step_in,
                step_out,
                trigger_mode="once",
                **slot,
            )
        back_in = [p.nt_text, p.nt_template, p.nt_reply, p.nt_steps, *nt_in[3:]]
        p.nt_undo.click(self.back, back_in, step_out, trigger_mode="once", **slot)
        for button, target in ((p.ppl_last, p.ppl_text), (p.att_last, p.att_text)):
            button.click(_reply_text, [chat.conversation, p.reply_pick], target, **hidden)
        p.ppl_source.click(_source_text, [chat.conversation, p.reply_pick], p.ppl_text, **hidden)
        p.ppl_go.click(
            self.perplexity, p.ppl_text, [p.ppl_summary, p.ppl_view, p.ppl_table], **slot
        )
        p.att_go.click(self.attention, [p.att_text, p.att_layer, p.att_head], p.att_view, **slot)
        cmp_in = [chat.conversation, chat.persona, chat.own]
        for button, classic in ((p.cmp_go, False), (p.cmp_classic, True)):
            button.click(self._compare_handler(classic), cmp_in, p.cmp_table, **slot)
        for button in (p.ppl_stop, p.cmp_stop):
            button.click(self.stop, None, None, queue=False, **hidden)


def _history(conversation: list[dict]) -> list[dict]:
    """The conversation so far, as the history the explorer's message follows."""
    return [
        {"role": m["role"], "content": m["content"]}
        for m in conversation
        if m["role"] in ("user", "assistant")
    ]


def _reply_text(conversation: list[dict], index) -> str:
    """The text of the reply (version, candidate) picked in the Inspect tab."""
    return reply_at(conversation, index)[1]


def _source_text(conversation: list[dict], index) -> str:
    """The first retrieved passage the picked reply was given."""
    _, reply, meta = reply_at(conversation, index)
    sources = meta.get("sources") or []
    if not sources:
        raise user_error(f"That reply used no document passages ({reply[:30]}…).")
    return sources[0]["text"]
