"""The chat service: persona + settings + engine, shared by the UI and the API."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from chat.engine import ChatEngine, TurnResult
from chat.errors import InputError, SettingsError
from chat.settings import DecodingSettings, load_presets, parse_settings
from personas import PersonaStore


class ChatService:
    """Everything a chat turn needs, loaded once by ``main.py`` and passed in."""

    def __init__(self, engine: ChatEngine, personas: PersonaStore | None = None, documents=None):
        self.engine = engine
        self.personas = personas or PersonaStore()
        self.documents = documents  # a retrieval.service.RetrievalService, or None
        self.presets = load_presets()

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

    def base_settings(self, persona_id: str | None) -> DecodingSettings:
        """The persona's own settings (a preset name or overrides), else the defaults."""
        persona = self.personas.get(persona_id)
        if isinstance(persona.settings, str):
            return self.preset(persona.settings)
        return parse_settings(persona.settings or {})

    def run(
        self,
        message: str,
        history: list[dict] | None,
        persona_id: str | None,
        settings: dict | DecodingSettings | None,
        use_rag: bool = False,
        cancel: threading.Event | None = None,
        collections: list[str] | None = None,
        retrieval=None,
    ) -> Iterator[TurnResult]:
        """Stream one turn; the last snapshot has ``done=True``.

        With ``use_rag`` the best passages from ``collections`` (retrieval
        settings ``retrieval``) go into the prompt and come back as ``sources``.
        """
        started = time.perf_counter()
        persona = self.personas.get(persona_id)
        decoding = parse_settings(settings, base=self.base_settings(persona_id))
        passages = None
        if use_rag:
            if self.documents is None:
                raise InputError("Document retrieval is not set up in this app.")
            from retrieval.settings import parse_retrieval

            if isinstance(message, str) and message.strip():
                passages = self.documents.retrieve(
                    message, collections or [], parse_retrieval(retrieval)
                )
        retrieval_s = round(time.perf_counter() - started, 4)
        for result in self.engine.stream_turn(
            message, history, persona.prefix_messages(), decoding, cancel, passages, started
        ):
            if use_rag:
                result.stats["retrieval_s"] = retrieval_s
                if result.done and not result.sources:
                    result.notices.append(
                        "No passage in your documents was similar enough to the question."
                    )
            yield result
