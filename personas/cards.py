"""The persona card: a pydantic model with macro checking and prompt helpers."""

from __future__ import annotations

import datetime
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from chat.validation import describe

MACROS = ("user", "char", "date")
_MACRO = re.compile(r"\{\{(.*?)\}\}")
# A small picture inlined as a data URL: only these image types, only base64 characters.
_AVATAR = re.compile(r"data:image/(png|jpeg|webp);base64,[A-Za-z0-9+/]+={0,2}")
MAX_AVATAR_CHARS = 24_000


def check_macros(text: str) -> str:
    """Raise ``ValueError`` for ``{{...}}`` macros other than {{user}}, {{char}}, {{date}}."""
    for found in _MACRO.findall(text):
        if found.strip() not in MACROS:
            valid = ", ".join("{{" + m + "}}" for m in MACROS)
            raise ValueError(f"unknown macro {{{{{found}}}}}; the macros are {valid}")
    return text


class Example(BaseModel):
    """One few-shot message placed before the real conversation."""

    model_config = ConfigDict(extra="forbid")
    role: Literal["user", "assistant"]
    content: str

    _macros = field_validator("content")(check_macros)


class Persona(BaseModel):
    """A persona card, as stored in one YAML file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=80, description="Shown in the picker.")
    description: str = Field("", max_length=300, description="One line for the picker.")
    system_prompt: str = Field("", description="Who the assistant is and how it answers.")
    greeting: str = Field("", description="First assistant message of a new chat.")
    example_dialogue: list[Example] = Field(
        default_factory=list, description="Few-shot turns placed before the conversation."
    )
    settings: str | dict[str, Any] | None = Field(
        None, description="A preset name, or decoding settings overrides."
    )
    examples: list[str] = Field(
        default_factory=list,
        max_length=8,
        description="Example messages offered as clickable suggestions.",
    )
    post_history_instructions: str = Field(
        "",
        description="Sent after the conversation, just before the reply (character card V2).",
    )
    tags: list[str] = Field(default_factory=list)
    character_card: dict[str, Any] | None = Field(
        None, description="The imported character card V2, kept whole for a lossless export."
    )
    avatar: str = Field(
        "",
        max_length=MAX_AVATAR_CHARS,
        description="A small picture (a data:image/png|jpeg|webp;base64 URL), from a PNG card.",
    )

    @field_validator("avatar")
    @classmethod
    def _avatar(cls, value: str) -> str:
        if value and not _AVATAR.fullmatch(value):
            raise ValueError("avatar: expected a data:image/png, jpeg or webp base64 URL")
        return value

    _macros = field_validator(
        "name", "description", "system_prompt", "greeting", "post_history_instructions"
    )(check_macros)

    def expand(self, text: str, user: str = "User") -> str:
        """Expand ``{{user}}``, ``{{char}}`` and ``{{date}}`` in ``text``."""
        return (
            _MACRO.sub(lambda m: "{{" + m.group(1).strip() + "}}", text)
            .replace("{{user}}", user)
            .replace("{{char}}", self.name)
            .replace("{{date}}", datetime.date.today().isoformat())
        )

    def greeting_text(self, user: str = "User") -> str:
        """The greeting with macros expanded (empty when the card has none)."""
        return self.expand(self.greeting, user)

    def suffix_messages(self, user: str = "User") -> list[dict]:
        """The post-history instructions as a system message after the conversation."""
        text = self.expand(self.post_history_instructions, user).strip()
        return [{"role": "system", "content": text}] if text else []

    def prefix_messages(self, user: str = "User") -> list[dict]:
        """System prompt then example dialogue, as role/content messages."""
        out = []
        if self.system_prompt.strip():
            out.append({"role": "system", "content": self.expand(self.system_prompt, user)})
        out += [
            {"role": e.role, "content": self.expand(e.content, user)} for e in self.example_dialogue
        ]
        return out


def describe_error(source: str, exc: ValidationError) -> str:
    """``file.yaml: field: problem``: the card's first mistake."""
    return describe(exc, Persona, prefix=f"{source}: ", noun="field")
