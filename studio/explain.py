"""The explain views on the loaded model: bounded requests in, plain dicts out.

Each call validates its request (a pydantic model, ids checked against the
model), holds a generation slot for the whole computation (so it never races a
chat reply), reports progress, and stops on ``cancel``. Results that take
minutes (the neuron index, calibration runs) are cached per model.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from chat.engine import TurnRequest
from chat.errors import InputError
from chat.settings import DecodingSettings
from chat.text import clean_text
from explain import attribution, calibration, neurons, segments
from explain.logit_lens import MAX_LENS_TOKENS, lens
from studio.requests import parse_request

MAX_TEXT_CHARS = 8_000
MAX_REPLY_TOKENS = 256


class AttributeRequest(BaseModel):
    """What to explain: a text's continuation, or one reply (a token of it, or all of it)."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(None, max_length=MAX_TEXT_CHARS, description="A plain input text.")
    messages: list[dict] | None = Field(
        None, max_length=200, description="A reply's exact prompt messages (``prompt_messages``)."
    )
    roles: list[Literal["system", "example", "history", "message", "suffix"]] | None = Field(
        None, max_length=200, description="What each message is (inferred when missing)."
    )
    passages: list[str] = Field(
        default_factory=list, max_length=16, description="Retrieved passages in the prompt."
    )
    reply: str | None = Field(None, max_length=MAX_TEXT_CHARS, description="The reply text.")
    reply_ids: list[int] | None = Field(
        None, max_length=MAX_REPLY_TOKENS, description="The reply's token ids (else tokenized)."
    )
    token: int | None = Field(None, ge=0, description="Reply token to explain; none: the reply.")
    level: Literal["parts", "sentences", "tokens"] = "parts"
    method: Literal["ablation", "kernel_shap", "input_x_gradient", "integrated_gradients"] = (
        "ablation"
    )
    n_samples: int = Field(40, ge=8, le=400, description="KernelSHAP: random subsets scored.")
    steps: int = Field(20, ge=4, le=64, description="Integrated gradients: interpolation steps.")

    @model_validator(mode="after")
    def _bounded(self):
        total = sum(len(str(m.get("content", ""))) for m in self.messages or [])
        total += sum(len(p) for p in self.passages)
        if total > 4 * MAX_TEXT_CHARS:
            raise ValueError(
                f"the messages hold {total:,} characters; explain at most {4 * MAX_TEXT_CHARS:,}"
            )
        return self


class TextRequest(BaseModel):
    """``/logit_lens`` and ``/neurons``: a text."""

    model_config = ConfigDict(extra="forbid")
    text: str = Field(max_length=MAX_TEXT_CHARS, description="The text to read.")


class NeuronRequest(BaseModel):
    """``/neuron``: the model checks layer and index against its own shape."""

    model_config = ConfigDict(extra="forbid")
    layer: int = Field(ge=0, le=4095, description="A layer, 0 for the first.")
    index: int = Field(ge=0, le=1_000_000, description="A neuron of that layer's MLP.")
    text: str | None = Field(None, max_length=MAX_TEXT_CHARS, description="Also show it here.")
    explain: bool = Field(False, description="Ask the cascade engine to explain it.")


class CalibrationRequest(BaseModel):
    """``/calibration``."""

    model_config = ConfigDict(extra="forbid")
    question_set: Literal["all", "capitals", "arithmetic"] = "all"
    scoring: Literal["cloze", "letter"] = "cloze"
    limit: int = Field(0, ge=0, le=1000, description="Questions to score (0: the whole set).")


class Explainer:
    """Attribution, logit lens, neurons and calibration on the service's current model."""

    def __init__(self, service, cache_dir: Path | None = None):
        self.service = service
        self.cache_dir = cache_dir
        self._calibration: dict[tuple, dict] = {}
        self._index: dict[str, neurons.NeuronIndex] = {}
        self._index_lock = threading.Lock()

    @property
    def backend(self):
        """The model in use now (it can change in the Model tab)."""
        return self.service.engine.backend

    def _slot(self, feature: str, cancel):
        return self.service.inspector.slot(feature, cancel)

    # -- attribution ---------------------------------------------------------------------

    def attribute(self, values: dict, progress=None, cancel=None) -> dict:
        """Signed attribution of the input's parts, sentences or tokens to the target."""
        req = parse_request(AttributeRequest, **{k: v for k, v in values.items() if v is not None})
        if req.level == "tokens" and req.method in attribution.PART_METHODS:
            raise InputError(
                "level tokens needs a gradient method: input_x_gradient or integrated_gradients"
            )
        if req.level != "tokens" and req.method in attribution.TOKEN_METHODS:
            raise InputError(f"{req.method} works over tokens: choose level tokens, or ablation")
        feature = "internals" if req.level == "tokens" else "scoring"
        with self._slot(feature, cancel) as b:
            segs = self._segments(b, req)
            target = self._target(b, req, segs)
            if req.level == "tokens":
                return self._tokens(b, req, segs, target, cancel)
            chosen = segments.at_level(segs, req.level)
            out = attribution.attribute_parts(
                b, chosen, target, req.method, req.n_samples, progress=progress, cancel=cancel
            )
            if any(s.kind == "passage" for s in chosen):
                out["passages"] = attribution.passage_reliance(b, chosen, target, cancel)
        out["target"] = self._describe(b, target)
        return out

    def _segments(self, b, req: AttributeRequest) -> list[segments.Segment]:
        if req.messages:
            roles = req.roles or _infer_roles(req.messages)
            if len(roles) != len(req.messages):
                raise InputError("roles: give one role per message, or none to infer them")
            messages = [
                {
                    "role": str(m.get("role", "user")),
                    "content": clean_text(str(m.get("content", ""))),
                }
                for m in req.messages
            ]
            return segments.from_messages(b.render, messages, list(roles), req.passages)
        if req.text:
            return segments.from_text(clean_text(req.text))
        raise InputError("Give the text, or a reply's messages, to explain.")

    def _target(self, b, req: AttributeRequest, segs) -> attribution.Target:
        if req.reply_ids:
            ids = [int(i) for i in req.reply_ids]
        elif req.reply:
            ids = b.tokenize(clean_text(req.reply), special=False)[:MAX_REPLY_TOKENS]
        else:  # a plain text: explain the model's own next token
            prompt = b.tokenize(segments.join(segs, lambda i: True), special=True)
            logits = b.next_logits(prompt)
            ids = [int(logits.argmax())]
        target = attribution.Target(ids, req.token if (req.reply_ids or req.reply) else 0)
        target.check(b.info)
        return target

    def _tokens(self, b, req, segs, target, cancel) -> dict:
        model, torch, device = b.internals()
        prompt_ids = b.tokenize(segments.join(segs, lambda i: True), special=True)
        eos = model.config.eos_token_id  # the integrated-gradients baseline token
        eos = eos[0] if isinstance(eos, list) else eos
        out = attribution.attribute_tokens(
            model, torch, prompt_ids, len(prompt_ids), target, req.method, req.steps, device,
            cancel, baseline_id=eos,
        )  # fmt: skip
        fed, _ = target.span()
        out["tokens"] = [b.piece(i) for i in list(prompt_ids) + fed]
        out["target"] = self._describe(b, target)
        return out

    @staticmethod
    def _describe(b, target: attribution.Target) -> dict:
        if target.index is None:
            return {"kind": "reply", "text": "".join(b.piece(i) for i in target.reply_ids)}
        tid = target.reply_ids[target.index]
        return {"kind": "token", "index": target.index, "id": tid, "text": b.piece(tid)}

    # -- logit lens and neurons ------------------------------------------------------------

    def _ids(self, b, text) -> list[int]:
        if not isinstance(text, str) or not text.strip():
            raise InputError("text is empty: type or paste some text first")
        if len(text) > MAX_TEXT_CHARS:
            raise InputError(f"text: at most {MAX_TEXT_CHARS:,} characters at a time")
        return b.tokenize(clean_text(text), special=True)

    def logit_lens(self, text: str, cancel=None) -> dict:
        """Every layer's next-token guess at every position (the last 64 positions)."""
        with self._slot("internals", cancel) as b:
            ids = self._ids(b, text)
            notices = []
            if len(ids) > MAX_LENS_TOKENS:
                notices.append(
                    f"The text has {len(ids)} tokens; the table shows the last {MAX_LENS_TOKENS}."
                )
            model, torch, device = b.internals()
            out = lens(model, torch, b.piece, ids, device)
        if len(ids) > MAX_LENS_TOKENS:
            out["cells"] = [row[-MAX_LENS_TOKENS:] for row in out["cells"]]
            out["tokens"] = out["tokens"][-MAX_LENS_TOKENS:]
        out["notices"] = notices
        return out

    def neurons(self, text: str, cancel=None) -> dict:
        """The most active neurons of each layer, and the strongest ones on each token."""
        with self._slot("internals", cancel) as b:
            ids = self._ids(b, text)[:512]
            model, torch, device = b.internals()
            acts = neurons.activations(model, torch, ids, device)
            return neurons.text_neurons(acts, [b.piece(i) for i in ids])

    def neuron(self, layer, index, text: str | None = None, progress=None, cancel=None) -> dict:
        """A neuron's top activations over the reference corpus, and over ``text`` if given."""
        with self._slot("internals", cancel) as b:
            model, torch, device = b.internals()
            idx = self._neuron_index(b, model, torch, device, progress, cancel)
            layer, index = neurons.check_neuron(*idx.values.shape[:2], layer, index)
            out = {
                "layer": layer,
                "neuron": index,
                "top": neurons.top_examples(idx, layer, index, b.piece),
            }
            if text:
                ids = self._ids(b, text)[:512]
                acts = neurons.activations(model, torch, ids, device)[layer, :, index]
                out["text"] = [
                    {"text": b.piece(i), "activation": round(float(a), 4)}
                    for i, a in zip(ids, acts, strict=True)
                ]
                out["skipped_first"] = neurons.SKIP_FIRST
        out["corpus"] = {"passages": len(idx.chunks), "id": idx.corpus_hash}
        return out

    def _neuron_index(self, b, model, torch, device, progress, cancel) -> neurons.NeuronIndex:
        texts = self.corpus()
        name = b.info.model
        key = neurons.corpus_hash(texts, name)
        with self._index_lock:
            if key in self._index:
                return self._index[key]
            path = self.cache_dir / f"neurons-{key}.npz" if self.cache_dir else None
            if path is not None and path.exists():
                try:
                    self._index[key] = neurons.NeuronIndex.load(path)
                    return self._index[key]
                except (OSError, ValueError, KeyError):
                    path.unlink(missing_ok=True)  # a broken cache is rebuilt
            tok = lambda t: b.tokenize(t, special=False)  # noqa: E731
            idx = neurons.build_index(model, torch, tok, texts, device, name, progress, cancel)
            if path is not None:
                try:
                    idx.save(path)
                except OSError:
                    pass  # a full disk only costs rebuilding next time
            self._index[key] = idx
            return idx

    def corpus(self) -> list[str]:
        """The reference corpus: the shipped persona texts and the calibration questions."""
        texts = []
        for card in self.service.personas.list():
            try:
                p = self.service.personas.get(card["id"])
            except Exception:  # noqa: BLE001 - a broken card is listed with its error elsewhere
                continue
            texts.append("\n".join(m["content"] for m in p.prefix_messages()))
        qs = calibration.load_questions("all")
        texts.append("\n".join(f"{q.question} {q.options[q.answer]}." for q in qs))
        return [t for t in texts if t.strip()]

    def explain_neuron(self, layer, index, cancel=None) -> dict:
        """A remote engine explains the neuron in one line; the line is scored by simulation."""
        from explain.autointerp import explain_and_score

        cascade = self.service.cascade
        if cascade is None:
            raise InputError(
                "Explaining a neuron needs a larger model: the bundled 135M model is too small to "
                "describe neurons. Start the app with --cascade-base-url URL (an OpenAI-compatible "
                "engine) and try again."
            )
        top = self.neuron(layer, index, cancel=cancel)["top"]
        with self._slot("internals", cancel) as b:
            idx = next(iter(self._index.values()))
            excerpts = [self._excerpt(b, idx, ex, int(layer), int(index)) for ex in top]
        excerpts = [e for e in excerpts if e]
        half = max(1, len(excerpts) * 2 // 3)

        def complete(prompt: str) -> str:
            settings = DecodingSettings(strategy="greedy", max_new_tokens=200)
            *_, final = cascade.engine.stream_turn(TurnRequest(prompt, [], [], settings), cancel)
            return final.reply

        out = explain_and_score(complete, excerpts[:half], excerpts[half:], cancel)
        out.update(layer=int(layer), neuron=int(index), engine=cascade.name)
        return out

    def _excerpt(self, b, idx, ex, layer, index) -> dict | None:
        ids = idx.chunks[ex["chunk"]]
        lo, hi = max(0, ex["position"] - 12), min(len(ids), ex["position"] + 4)
        model, torch, device = b.internals()
        acts = neurons.activations(model, torch, ids, device)[layer, lo:hi, index]
        return {"tokens": [b.piece(i) for i in ids[lo:hi]], "activations": [float(a) for a in acts]}

    # -- calibration -----------------------------------------------------------------------

    def calibration(self, question_set: str = "all", scoring: str = "cloze", limit: int = 0,
                    progress=None, cancel=None) -> dict:  # fmt: skip
        """Accuracy, ECE and the reliability diagram of the loaded model on shipped questions."""
        if scoring not in calibration.SCORINGS:
            raise InputError(f"scoring: choose one of: {', '.join(calibration.SCORINGS)}")
        try:
            limit = int(limit or 0)
        except (TypeError, ValueError):
            raise InputError("limit: give a whole number of questions (0: all)") from None
        questions = _sample(calibration.load_questions(question_set), limit)
        feature = "scoring" if scoring == "cloze" else "next_token"
        key = self._calibration_key(question_set, scoring, len(questions))
        if key in self._calibration:
            return self._calibration[key] | {"cached": True}
        with self._slot(feature, cancel) as b:
            out = calibration.run(b, questions, scoring, progress, cancel)
        out["threshold"] = self._threshold_note(out)
        self._calibration[key] = out
        return out | {"cached": False}

    def cached_calibration(self, question_set: str, scoring: str, limit: int = 0) -> dict | None:
        """A finished calibration run of the loaded model, if there is one (else None)."""
        try:
            n = len(_sample(calibration.load_questions(question_set), int(limit or 0)))
        except (InputError, TypeError, ValueError):
            return None
        return self._calibration.get(self._calibration_key(question_set, scoring, n))

    def _calibration_key(self, question_set: str, scoring: str, n: int) -> tuple:
        info = self.backend.info
        return (info.model, info.backend, question_set, scoring, n)

    def _threshold_note(self, out: dict) -> dict:
        """Where the app's own confidence thresholds fall on this model's curve."""
        from chat.inspection import DEFAULT_CONFIDENCE

        marks = {"low_confidence_marker": DEFAULT_CONFIDENCE}
        cascade = self.service.cascade
        if cascade is not None:
            marks["cascade_threshold"] = cascade.threshold
        return {
            name: {"value": value, "bin": calibration.where_on_curve(out["bins"], value)}
            for name, value in marks.items()
        }


def _sample(questions: list, limit: int) -> list:
    """``limit`` questions spread evenly over the set (all when 0)."""
    if limit <= 0 or limit >= len(questions):
        return questions
    return questions[:: max(1, len(questions) // limit)][:limit]


def _infer_roles(messages: list[dict]) -> list[str]:
    """Leading system message: the persona; the last user message: yours; the rest: history."""
    roles = []
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    for i, m in enumerate(messages):
        if i == 0 and m.get("role") == "system":
            roles.append("system")
        elif i == last_user:
            roles.append("message")
        elif i > last_user and m.get("role") == "system":
            roles.append("suffix")
        else:
            roles.append("history")
    return roles
