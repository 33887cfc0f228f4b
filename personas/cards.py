"""Persona cards: validated with pydantic, loaded from YAML files in this package."""

from __future__ import annotations

import datetime
from importlib import resources
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chat.errors import PersonaError

DEFAULT_PERSONA = "assistant"


class Example(BaseModel):
    """One few-shot message placed before the real conversation."""

    model_config = ConfigDict(extra="forbid")
    role: Literal["user", "assistant"]
    content: str


class Persona(BaseModel):
    """A persona card."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=80)
    description: str = Field("", max_length=300, description="One line for the picker.")
    system_prompt: str = ""
    greeting: str = Field("", description="First assistant message of a new chat.")
    example_dialogue: list[Example] = Field(default_factory=list)
    settings: str | dict | None = Field(
        None, description="A preset name or decoding settings overrides."
    )
    tags: list[str] = Field(default_factory=list)

    def expand(self, text: str, user: str = "User") -> str:
        """Expand ``{{user}}``, ``{{char}}`` and ``{{date}}`` in ``text``."""
        return (
            text.replace("{{user}}", user)
            .replace("{{char}}", self.name)
            .replace("{{date}}", datetime.date.today().isoformat())
        )

    def prefix_messages(self, user: str = "User") -> list[dict]:
        """System prompt then example dialogue, as role/content messages."""
        out = []
        if self.system_prompt.strip():
            out.append({"role": "system", "content": self.expand(self.system_prompt, user)})
        out += [{"role": e.role, "content": self.expand(e.content, user)} for e in self.example_dialogue]
        return out


class PersonaStore:
    """The shipped persona cards (``personas/*.yaml``)."""

    def __init__(self):
        self._cards: dict[str, Persona] = {}
        self._errors: dict[str, str] = {}
        for entry in sorted(resources.files("personas").iterdir(), key=lambda e: e.name):
            if entry.name.endswith(".yaml"):
                pid = entry.name.removesuffix(".yaml")
                try:
                    self._cards[pid] = Persona.model_validate(yaml.safe_load(entry.read_text("utf-8")))
                except (ValidationError, yaml.YAMLError) as exc:
                    self._errors[pid] = f"{entry.name}: {exc}"

    def list(self) -> list[dict]:
        """Every card as ``{id, name, description, source, error}``."""
        rows = [
            {"id": pid, "name": p.name, "description": p.description, "source": "shipped", "error": None}
            for pid, p in self._cards.items()
        ]
        rows += [
            {"id": pid, "name": pid, "description": "", "source": "shipped", "error": err}
            for pid, err in self._errors.items()
        ]
        return rows

    def get(self, persona_id: str | None) -> Persona:
        """The card with this id (the default assistant when empty)."""
        pid = persona_id or DEFAULT_PERSONA
        if pid not in self._cards:
            valid = ", ".join(self._cards)
            raise PersonaError(f"Unknown persona {pid!r}; valid personas are: {valid}")
        return self._cards[pid]
