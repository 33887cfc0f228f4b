"""The chat service: persona + documents + engine, shared by the UI and the API.

It checks every request against the limits before any model work, and runs
document retrieval within what the caller may read.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chat.engine import ChatEngine, TurnRequest, TurnResult
from chat.errors import InputError, SettingsError
from chat.inspection import DEFAULT_CONFIDENCE, Inspector, anatomy
from chat.settings import DecodingSettings, load_presets, parse_settings
from chat.text import clean_text
from personas import PersonaStore
from personas.cards import Persona
from studio.access import Caller
from studio.limits import Limits
from studio.requests import describe, whole_number


class InspectOptions(BaseModel):
    """What a chat turn records about its tokens."""

    model_config = ConfigDict(extra="forbid")

    top_logprobs: int = Field(
        0, ge=0, le=20, description="Alternatives recorded per token (0: no token probabilities)."
    )
    confidence_threshold: float = Field(
        DEFAULT_CONFIDENCE,
        ge=0.0,
        le=1.0,
        description="Mean token probability under which a reply is marked low confidence.",
    )
    reply_prefix_ids: list[int] = Field(
        default_factory=list,
        max_length=4096,
        description="Token ids the reply must start with (continue with an alternative).",
    )


def inspect_options(**values) -> InspectOptions:
    """Validated options; errors name the field."""
    try:
        return InspectOptions(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        raise SettingsError(describe(exc, InspectOptions)) from None


@dataclass
class ChatTurn:
    """One chat turn as the page and ``/chat`` ask the service for it.

    ``user`` is the name ``{{user}}`` stands for in the persona's texts; with
    ``use_rag``, ``retrieval`` holds the retrieval settings (top_k, min_score...).
    """

    message: str
    history: list[dict] | None
    persona: Persona
    settings: dict | DecodingSettings | None = None
    use_rag: bool = False
    retrieval: dict | None = None
    inspect: InspectOptions | None = None
    user: str = "User"


class ChatService:
    """Everything a chat turn needs, loaded once by ``main.py`` and passed in."""

    def __init__(
        self,
        engine: ChatEngine,
        personas: PersonaStore | None = None,
        documents=None,
        limits: Limits | None = None,
        cascade=None,
    ):
        self.engine = engine
        self.cascade = cascade  # a studio.cascade.Cascade, or None
        self.personas = personas or PersonaStore()
        self.documents = documents  # a studio.documents.DocumentAccess, or None
        self.limits = limits or Limits()
        self.presets = load_presets()
        self.inspector = Inspector(engine)

    @property
    def info(self):
        """The loaded model's ``ModelInfo``."""
        return self.engine.backend.info

    @property
    def capabilities(self):
        """What the loaded backend supports."""
        return self.engine.backend.capabilities

    def preset(self, name: str) -> DecodingSettings:
        """A preset by name; unknown names list the valid ones."""
        if name not in self.presets:
            raise SettingsError(
                f"Unknown preset {name!r}; choose one of: {', '.join(self.presets)}"
            )
        return self.presets[name]

    def base_settings(self, persona: Persona) -> DecodingSettings:
        """The persona's own settings (a preset name or overrides), else the defaults."""
        if isinstance(persona.settings, str):
            return self.preset(persona.settings)
        return parse_settings(persona.settings or {})

    def run(
        self, caller: Caller | None, turn: ChatTurn, cancel: threading.Event | None = None
    ) -> Iterator[TurnResult]:
        """Stream one turn; the last snapshot has ``done=True``.

        A set ``cancel`` (Stop, or nobody listening) halts it. With
        ``turn.use_rag`` the best passages from the shared documents and the
        caller's own uploads go into the prompt and come back as ``sources``.
        """
        started = time.perf_counter()
        inspect = turn.inspect or InspectOptions()
        # Check token ids, settings and limits before any model work (llama.cpp aborts
        # the process on a token id it lacks).
        self.info.check_token_ids(inspect.reply_prefix_ids, "reply_prefix_ids")
        decoding = parse_settings(turn.settings, base=self.base_settings(turn.persona))
        self.limits.check_chat(turn.message, turn.history, decoding.max_new_tokens)
        # Retrieve the passages the caller may read.
        passages, prompt_format = self._retrieve(caller, turn)
        retrieval_s = round(time.perf_counter() - started, 4)
        # Generate: on the loaded model, or checked by it and handed on (the cascade).
        results = self._generate(turn, decoding, inspect, passages, prompt_format, started,
                                 cancel)  # fmt: skip
        # Report retrieval, and ground the finished reply in its sources.
        for result in results:
            if not inspect.top_logprobs:
                result.tokens = None  # recorded for the cascade's verdict, not asked for
            if turn.use_rag:
                result.stats["retrieval_s"] = retrieval_s
                if result.done and not result.sources:
                    result.notices.append(
                        "No passage in your documents was similar enough to the question."
                    )
                elif result.done:
                    self._ground(result, turn.message)
            yield result

    def _retrieve(self, caller: Caller | None, turn: ChatTurn) -> tuple[list | None, str]:
        """The passages for the turn's message (None without retrieval), and the prompt
        format its retrieval settings ask for."""
        if not turn.use_rag:
            return None, "auto"
        if self.documents is None or caller is None:
            raise InputError("Document retrieval is not set up in this app.")
        from retrieval.settings import parse_retrieval

        retrieval = parse_retrieval(turn.retrieval)
        passages = None
        if isinstance(turn.message, str) and turn.message.strip():
            passages = self.documents.retrieve(caller, turn.message, retrieval)
        return passages, retrieval.prompt_format

    def _generate(self, turn: ChatTurn, decoding: DecodingSettings, inspect: InspectOptions,
                  passages, prompt_format: str, started: float, cancel):  # fmt: skip
        """The engine's snapshots of the turn, or the cascade's (which records token
        probabilities for its verdict, and has no beam search remotely)."""

        def on(engine, top_logprobs: int, forced: list[int], settings: DecodingSettings):
            return engine.stream_turn(
                TurnRequest(
                    turn.message,
                    turn.history,
                    turn.persona.prefix_messages(turn.user),
                    settings,
                    passages=passages,
                    suffix=turn.persona.suffix_messages(turn.user),
                    prompt_format=prompt_format,
                    top_logprobs=top_logprobs,
                    forced=forced,
                    confidence_threshold=inspect.confidence_threshold,
                    started_at=started,
                    max_seconds=self.limits.max_request_seconds,
                ),
                cancel,
            )

        cascade = (
            self.cascade if self.capabilities.logprobs and not inspect.reply_prefix_ids else None
        )
        if cascade is None:
            return on(self.engine, inspect.top_logprobs, inspect.reply_prefix_ids, decoding)
        remote = decoding
        if decoding.strategy == "beam":  # engines offer no beam search: greedy instead
            remote = decoding.model_copy(
                update={"strategy": "greedy", "num_beams": 1, "num_return_sequences": 1}
            )
        return cascade.run(
            on(self.engine, max(1, inspect.top_logprobs), [], decoding),
            lambda engine: on(engine, 0, [], remote),
            f"{self.info.model} ({self.info.device})",
        )

    def _ground(self, result: TurnResult, question: str) -> None:
        """Attribute the finished reply's sentences to its sources; pick the best quote."""
        from retrieval.attribution import ground

        started = time.perf_counter()
        passages = [s["text"] for s in result.sources]
        labels = [f"{s['source']}, {s.get('section') or ''}" for s in result.sources]
        found = ground(self.documents.embedder, question, result.reply, passages, labels)
        result.attribution, result.extractive = found["attribution"], found["extractive"]
        result.stats["attribution_s"] = round(time.perf_counter() - started, 4)

    # -- inspection ------------------------------------------------------------------

    def next_token(
        self,
        text: str,
        top_k: int = 10,
        settings: dict | DecodingSettings | None = None,
        template: bool = False,
        persona: Persona | None = None,
        history: list[dict] | None = None,
        reply_so_far: str = "",
        cancel=None,
    ) -> dict:
        """The next-token distribution after ``text``.

        With ``template``, ``text`` is a user message: the prompt is the
        persona's system prompt and examples, ``history`` and that message in
        the chat template, followed by ``reply_so_far`` (the assistant's reply
        as built so far), exactly as a chat turn would see it.
        """
        decoding = parse_settings(settings)
        top_k = whole_number(top_k, "top_k", 1, 50)
        if template:
            from chat.prompting import validate_history

            if not isinstance(text, str) or not text.strip():
                raise InputError("text is empty: type the message the assistant answers")
            self.limits.check_chat(text, history, 1)
            prefix = (persona or self.personas.get(None)).prefix_messages()
            messages = prefix + validate_history(history) + [{"role": "user", "content": text}]
            prompt = self.engine.backend.render(messages) + clean_text(reply_so_far or "")
            out = self.inspector.next_token(prompt, top_k, decoding, special=True, cancel=cancel)
        else:
            out = self.inspector.next_token(text, top_k, decoding, special=False, cancel=cancel)
        return out

    def piece(self, token_id) -> str:
        """How one token of the loaded model reads (an unknown id is refused)."""
        token_id = self.info.check_token_ids(token_id)[0]
        return self.engine.backend.piece(token_id)

    def perplexity(self, text: str, cancel=None) -> dict:
        """Perplexity, per-token surprisal and the AI-text gauge of ``text``."""
        return self.inspector.perplexity(text, cancel)

    def attention(self, text: str, layer: int = -1, head: int | None = None, cancel=None) -> dict:
        """One layer's attention (a head, or the average over heads) over ``text``."""
        self.capabilities.require("attention")  # its reason first, whatever the numbers
        layer = whole_number(layer, "layer", -4096, 4095)
        head = None if head in (None, "") else whole_number(head, "head", 0, 4095)
        return self.inspector.attention(text, layer, head, cancel)

    def anatomy(self, prompt_messages: list[dict], parts: dict, prompt: str) -> dict:
        """Where a reply's prompt tokens went, and the prompt split into tokens."""
        return anatomy(self.engine.backend, prompt_messages, parts, prompt)

    def compare(
        self,
        message: str,
        history: list[dict] | None,
        persona: Persona,
        strategies: list | None = None,
        max_new_tokens: int = 48,
        cancel=None,
    ) -> list[dict]:
        """The same turn under several decoding strategies, side by side.

        ``strategies``: ``[{"label", "settings"}]`` (at most ``MAX_STRATEGIES``),
        or None for the standard ones. Each strategy is held to the reply-token
        and time limits of a chat turn; a set ``cancel`` stops the comparison.
        """
        from chat.compare import compare, compare_options, plan

        options = compare_options(strategies=strategies, max_new_tokens=max_new_tokens)
        plans = plan(options)
        for _, settings in plans:
            self.limits.check_chat(message, history, settings.max_new_tokens)
        return compare(
            self.engine,
            message,
            history or [],
            persona.prefix_messages(),
            plans,
            cancel=cancel,
            max_seconds=self.limits.max_request_seconds,
        )
