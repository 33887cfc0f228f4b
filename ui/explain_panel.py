"""The Inspect tab's explain views: why a token, the logit lens, neurons, calibration.

Each runs in a generation slot, shows progress, and stops on its Stop button
or when the visitor leaves. The named endpoints (``/attribute``,
``/logit_lens``, ``/neurons``, ``/neuron``, ``/calibration``) run the same
code and return plain JSON.
"""

from __future__ import annotations

import gradio as gr

from chat.errors import ChatStudioError
from studio.explain import CalibrationRequest, Explainer, NeuronRequest, TextRequest
from studio.requests import parse_request
from ui import explain_render as draw
from ui.errors import boundary, user_error
from ui.grounded import safe_text
from ui.inspect_panel import reply_at, reply_tokens

TARGETS = ["the selected token", "the whole reply"]
LEVELS = ["parts", "sentences", "tokens"]
METHODS = {
    "parts": ["ablation", "kernel_shap"],
    "sentences": ["ablation", "kernel_shap"],
    "tokens": ["input_x_gradient", "integrated_gradients"],
}


def _note(caps, feature: str) -> str:
    reason = caps.why_not(feature)
    return f"⚠️ Not available on this backend: {reason}" if reason else ""


class ExplainPanel:
    """Builds the explain accordions; ``wire`` connects them to the chat and the Inspect tab."""

    def __init__(self, explainer: Explainer, app):
        self.explainer = explainer
        self.app = app  # the ChatUI: who is calling, and watching for departed clients
        caps = explainer.service.capabilities
        with gr.Accordion("Why this token? (attribution)", open=False, elem_id="explain-attr"):
            gr.Markdown(
                "Which parts of the input pushed the selected token (or the whole reply) and "
                "which way: remove a part and see how much less likely the target becomes "
                "(ablation), or average over many removals (KernelSHAP), or follow the "
                "gradient to every token (transformers backend)."
            )
            with gr.Row():
                self.target = gr.Radio(
                    TARGETS, value=TARGETS[0], label="Explain", elem_id="attr-target"
                )
                self.level = gr.Radio(LEVELS, value="sentences", label="Over", elem_id="attr-level")
                self.method = gr.Radio(METHODS["sentences"], value="ablation", label="Method",
                                       elem_id="attr-method")  # fmt: skip
            with gr.Row():
                self.attr_go = gr.Button("Explain", variant="primary", elem_id="attr-go")
                self.attr_stop = gr.Button("Stop", elem_id="attr-stop")
            self.attr_summary = gr.Markdown(elem_id="attr-summary")
            self.attr_view = gr.HTML(elem_id="attr-view")
        with gr.Accordion("Logit lens: the answer forming layer by layer", open=False,
                          elem_id="explain-lens"):  # fmt: skip
            self.lens_note = gr.Markdown(_note(caps, "internals"))
            self.lens_text = gr.Textbox("The capital of France is", lines=2, label="Text",
                                        elem_id="lens-text")  # fmt: skip
            self.lens_go = gr.Button("Read every layer", variant="primary", elem_id="lens-go")
            self.lens_rise = gr.HTML(elem_id="lens-rise")
            self.lens_view = gr.HTML(elem_id="lens-view")
        with gr.Accordion("Neurons", open=False, elem_id="explain-neurons"):
            self.neu_note = gr.Markdown(_note(caps, "internals"))
            self.neu_text = gr.Textbox("Paris is the capital of France.", lines=2, label="Text",
                                       elem_id="neu-text")  # fmt: skip
            self.neu_go = gr.Button("Most active neurons", elem_id="neu-go")
            self.neu_view = gr.HTML(elem_id="neu-view")
            with gr.Row():
                self.neu_layer = gr.Number(
                    10, precision=0, label="layer (0 = first)", elem_id="neu-layer"
                )
                self.neu_index = gr.Number(0, precision=0, label="neuron", elem_id="neu-index")
                self.neu_show = gr.Button("What does it fire on?", elem_id="neu-show")
                self.neu_explain = gr.Button("Explain this neuron (needs an engine)",
                                             elem_id="neu-explain")  # fmt: skip
                self.neu_stop = gr.Button("Stop", elem_id="neu-stop")
            self.neu_detail = gr.HTML(elem_id="neu-detail")
            self.neu_words = gr.Markdown(elem_id="neu-words")
        with gr.Accordion("Does confidence track accuracy?", open=False, elem_id="explain-calib"):
            gr.Markdown(
                "Shipped multiple-choice questions (capital cities, arithmetic) scored two ways. "
                "A calibrated model is right 80% of the time when it is 80% sure."
            )
            with gr.Row():
                self.cal_set = gr.Dropdown(["all", "capitals", "arithmetic"], value="capitals",
                                           label="Questions", elem_id="cal-set")  # fmt: skip
                self.cal_scoring = gr.Radio(["cloze", "letter"], value="cloze", label="Scoring",
                                            elem_id="cal-scoring")  # fmt: skip
                self.cal_limit = gr.Slider(0, 260, value=60, step=10,
                                           label="questions (0: all of the set)")  # fmt: skip
            with gr.Row():
                self.cal_go = gr.Button("Run", variant="primary", elem_id="cal-go")
                self.cal_stop = gr.Button("Stop", elem_id="cal-stop")
            self.cal_summary = gr.Markdown(elem_id="cal-summary")
            self.cal_view = gr.HTML(elem_id="cal-view")

    def refresh(self) -> list:
        """Capability notes for the backend loaded now."""
        caps = self.explainer.service.capabilities
        return [_note(caps, "internals"), _note(caps, "internals")]

    @property
    def refreshed(self) -> list:
        """The components ``refresh`` updates, in its order."""
        return [self.lens_note, self.neu_note]

    # -- running one job ---------------------------------------------------------------

    def _job(self, request):
        """A cancel event for this caller's job: set by Stop, the time limit, or when the
        client leaves (``ChatUI.job``)."""
        return self.app.job(request, self.explainer.service.limits.max_request_seconds)

    def stop(self, request: gr.Request):
        """Stop this caller's running explain job."""
        try:
            caller = self.app.caller(request)
        except ChatStudioError:
            return
        self.app.stop_jobs(caller.session)

    @staticmethod
    def _progress(progress):
        return lambda fraction, note: progress(fraction, desc=note)

    # -- handlers ----------------------------------------------------------------------

    @boundary
    def attribute(self, conversation, index, selected, target, level, method,
                  request: gr.Request, progress=gr.Progress()):  # noqa: B008  # fmt: skip
        """Attribution of the selected reply token (or the whole reply) to its prompt."""
        values = _reply_request(conversation, index, selected, target == TARGETS[0])
        values.update(level=level, method=method)
        with self._job(request) as cancel:
            out = self.explainer.attribute(values, self._progress(progress), cancel)
        return draw.attribution_summary(out), draw.attribution_html(out)

    @boundary
    def logit_lens(self, text, request: gr.Request, progress=gr.Progress()):  # noqa: B008
        """Every layer's top next token at every position, and the answer's rise."""
        progress(0, desc="Reading the prediction after every layer")
        with self._job(request) as cancel:
            out = self.explainer.logit_lens(text, cancel)
        return draw.rise_html(out), draw.lens_html(out)

    @boundary
    def neurons(self, text, request: gr.Request, progress=gr.Progress()):  # noqa: B008
        """The most active neurons of the text."""
        progress(0, desc="Recording every layer's neurons")
        with self._job(request) as cancel:
            return draw.neurons_html(self.explainer.neurons(text, cancel))

    @boundary
    def neuron(self, layer, index, text, request: gr.Request, progress=gr.Progress()):  # noqa: B008
        """A neuron's top activations over the reference corpus and over the text."""
        with self._job(request) as cancel:
            out = self.explainer.neuron(layer, index, text, self._progress(progress), cancel)
        return draw.neuron_html(out)

    @boundary
    def explain_neuron(self, layer, index, request: gr.Request, progress=gr.Progress()):  # noqa: B008
        """A remote engine's one-line explanation of the neuron, and its score."""
        with self._job(request) as cancel:
            out = self.explainer.explain_neuron(layer, index, cancel)
        return (
            f"**Explanation** ({safe_text(out['engine'])}): {safe_text(out['explanation'])}"
            f"\n\n**Score** (correlation of simulated and real activations over "
            f"{out['scored_tokens']} tokens): {out['score']:.2f}"
        )

    @boundary
    def calibration(self, question_set, scoring, limit, request: gr.Request,
                    progress=gr.Progress()):  # noqa: B008  # fmt: skip
        """Accuracy, ECE and the reliability diagram; the other scoring beside it if cached."""
        with self._job(request) as cancel:
            out = self.explainer.calibration(
                question_set, scoring, limit, self._progress(progress), cancel
            )
        other = self.explainer.cached_calibration(
            question_set, "letter" if scoring == "cloze" else "cloze", limit
        )
        return draw.calibration_summary(out, other), draw.reliability_html(out)

    # -- API -----------------------------------------------------------------------------

    @boundary
    def api_attribute(self, text: str | None = None, messages: list[dict] | None = None,
                      reply: str | None = None, token: int | None = None, level: str = "parts",
                      method: str = "ablation", reply_ids: list[int] | None = None,
                      n_samples: int = 40, steps: int = 20,
                      request: gr.Request = None) -> dict:  # fmt: skip
        """Signed attribution of the input (a text, or a reply's ``prompt_messages``) to a reply
        token (``token``: its index) or the whole reply; ``level`` parts, sentences or tokens."""
        values = dict(text=text, messages=messages, reply=reply, token=token, level=level,
                      method=method, reply_ids=reply_ids, n_samples=n_samples,
                      steps=steps)  # fmt: skip
        with self._job(request) as cancel:
            return self.explainer.attribute(values, None, cancel)

    @boundary
    def api_logit_lens(self, text: str, request: gr.Request = None) -> dict:
        """Per layer and position, the top next token and its probability."""
        with self._job(request) as cancel:
            req = parse_request(TextRequest, text=text)
            return self.explainer.logit_lens(req.text, cancel)

    @boundary
    def api_neurons(self, text: str, request: gr.Request = None) -> dict:
        """The most active MLP neurons per layer, and each token's strongest ones."""
        with self._job(request) as cancel:
            req = parse_request(TextRequest, text=text)
            return self.explainer.neurons(req.text, cancel)

    @boundary
    def api_neuron(self, layer: int, index: int, text: str | None = None, explain: bool = False,
                   request: gr.Request = None) -> dict:  # fmt: skip
        """A neuron's top activations over the reference corpus (and ``text``); with
        ``explain``, a remote engine's explanation and its simulation score."""
        with self._job(request) as cancel:
            req = parse_request(NeuronRequest, layer=layer, index=index, text=text, explain=explain)
            out = self.explainer.neuron(req.layer, req.index, req.text, None, cancel)
            if req.explain:
                out["explanation"] = self.explainer.explain_neuron(req.layer, req.index, cancel)
            return out

    @boundary
    def api_calibration(self, question_set: str = "all", scoring: str = "cloze", limit: int = 0,
                        request: gr.Request = None) -> dict:  # fmt: skip
        """Accuracy, ECE and reliability bins of the loaded model on shipped questions."""
        with self._job(request) as cancel:
            req = parse_request(
                CalibrationRequest, question_set=question_set, scoring=scoring, limit=limit
            )
            return self.explainer.calibration(
                req.question_set, req.scoring, req.limit, None, cancel
            )

    # -- wiring --------------------------------------------------------------------------

    def wire(self, chat, inspect) -> None:
        """Connect to the chat's conversation and the Inspect tab's selected reply and token."""
        api = {"concurrency_limit": chat.slots + 2, "concurrency_id": chat.generate}
        gr.api(self.api_attribute, api_name="attribute", **api)
        gr.api(self.api_logit_lens, api_name="logit_lens", **api)
        gr.api(self.api_neurons, api_name="neurons", **api)
        gr.api(self.api_neuron, api_name="neuron", **api)
        gr.api(self.api_calibration, api_name="calibration", **api)
        hidden = {"api_visibility": "private"}
        slot = {**api, **hidden}
        self.level.change(
            lambda lv: gr.update(choices=METHODS[lv], value=METHODS[lv][0]),
            self.level, self.method, **hidden,
        )  # fmt: skip
        self.attr_go.click(
            self.attribute,
            [chat.conversation, inspect.reply_pick, inspect.selected, self.target, self.level,
             self.method],
            [self.attr_summary, self.attr_view], **slot,
        )  # fmt: skip
        self.lens_go.click(
            self.logit_lens, self.lens_text, [self.lens_rise, self.lens_view], **slot
        )
        self.neu_go.click(self.neurons, self.neu_text, self.neu_view, **slot)
        self.neu_show.click(
            self.neuron, [self.neu_layer, self.neu_index, self.neu_text], self.neu_detail, **slot
        )
        self.neu_explain.click(
            self.explain_neuron, [self.neu_layer, self.neu_index], self.neu_words, **slot
        )
        self.cal_go.click(
            self.calibration, [self.cal_set, self.cal_scoring, self.cal_limit],
            [self.cal_summary, self.cal_view], **slot,
        )  # fmt: skip
        for button in (self.attr_stop, self.neu_stop, self.cal_stop):
            button.click(self.stop, None, None, **hidden)


def _reply_request(conversation, key, selected, one_token: bool) -> dict:
    """The attribution request for the reply (candidate, version) picked in the Inspect tab."""
    _, text, meta = reply_at(conversation or [], key)
    messages = meta.get("prompt_messages")
    if not messages:
        raise user_error("This reply has no recorded prompt: send a new message and try again.")
    values = {"messages": messages, "roles": _roles(messages, meta.get("parts") or {})}
    tokens = reply_tokens(conversation, key)
    if tokens:
        values["reply_ids"] = [t["id"] for t in tokens][:256]
    else:
        values["reply"] = text
    if one_token:
        if not selected or selected[0] != key:
            raise user_error(
                "Select a token of this reply in Reply tokens above, or explain the whole reply."
            )
        values["token"] = int(selected[1])
    return values


def _roles(messages: list[dict], parts: dict) -> list[str] | None:
    """Each prompt message's part, from how the prompt was built (``parts``)."""
    prefix, history = parts.get("prefix"), parts.get("history")
    if prefix is None or history is None:
        return None
    roles = []
    for i in range(len(messages)):
        if i < prefix:
            roles.append("system" if i == 0 and messages[0].get("role") == "system" else "example")
        elif i < prefix + history:
            roles.append("history")
        elif i == prefix + history:
            roles.append("message")
        else:
            roles.append("suffix")
    return roles
