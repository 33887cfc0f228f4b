"""Where persona cards live: shipped ones in this package, the user's under the data dir.

Shipped cards are read-only. User cards are saved atomically (write, then
rename) under ``<data dir>/personas/<slug>.yaml``; the slug comes from the name
and can never point outside that folder. A broken file is listed with its
error and never stops the other cards from loading.
"""

from __future__ import annotations

import os
import re
import tempfile
import unicodedata
from importlib import resources
from pathlib import Path

import yaml
from pydantic import ValidationError

from chat.errors import PersonaError
from personas.cards import Persona, describe_error

DEFAULT_PERSONA = "assistant"


def slugify(name: str) -> str:
    """A safe file stem from any name: letters, digits and dashes only, never a path."""
    text = unicodedata.normalize("NFKC", name).lower()
    text = re.sub(r"[^\w]+", "-", text).strip("-_")[:60].strip("-_")
    return text or "persona"


def parse_card(text: str, source: str = "card") -> Persona:
    """Validate YAML text as a card; errors name ``source`` and the field."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PersonaError(f"{source}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise PersonaError(f"{source}: a card must be a mapping of field: value")
    try:
        return Persona.model_validate(data)
    except ValidationError as exc:
        raise PersonaError(describe_error(source, exc)) from None


def card_to_yaml(card: Persona) -> str:
    """The card as YAML text (what the editor shows and what a save writes)."""
    data = card.model_dump(exclude_defaults=True)
    data = {"name": card.name, **data}
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=100)


class PersonaStore:
    """Shipped cards plus the user's own, with the errors of broken files."""

    def __init__(self, user_dir: str | Path | None = None):
        self.user_dir = Path(user_dir).resolve() if user_dir else None
        self.reload()

    def reload(self) -> None:
        """(Re)read every card from disk."""
        self._cards: dict[str, tuple[Persona, str]] = {}
        self._errors: dict[str, tuple[str, str]] = {}
        self._paths: dict[str, Path] = {}  # user persona id -> its file
        shipped = resources.files("personas")
        for entry in sorted(shipped.iterdir(), key=lambda e: (e.name != "assistant.yaml", e.name)):
            if entry.name.endswith(".yaml"):
                self._load(entry.name.removesuffix(".yaml"), entry.name, entry.read_text, "shipped")
        if self.user_dir and self.user_dir.is_dir():
            for path in sorted(self.user_dir.glob("*.yaml")):
                pid = path.stem if path.stem not in self._cards else f"{path.stem}-user"
                self._paths[pid] = path
                self._load(pid, path.name, path.read_text, "user")

    def _load(self, pid: str, name: str, read, source: str) -> None:
        try:
            self._cards[pid] = (parse_card(read(encoding="utf-8"), name), source)
        except (PersonaError, OSError, UnicodeDecodeError) as exc:
            self._errors[pid] = (str(exc), source)

    def list(self) -> list[dict]:
        """Every card as ``{id, name, description, source, error}``; broken ones last."""
        rows = [
            {"id": pid, "name": p.name, "description": p.description, "source": src, "error": None}
            for pid, (p, src) in self._cards.items()
        ]
        rows += [
            {"id": pid, "name": pid, "description": "", "source": src, "error": err}
            for pid, (err, src) in self._errors.items()
        ]
        return rows

    def get(self, persona_id: str | None) -> Persona:
        """The card with this id (the default assistant when empty)."""
        pid = persona_id or DEFAULT_PERSONA
        if pid in self._errors and pid not in self._cards:
            raise PersonaError(f"Persona {pid!r} is broken: {self._errors[pid][0]}")
        if pid not in self._cards:
            valid = ", ".join(self._cards)
            raise PersonaError(f"Unknown persona {pid!r}; valid personas are: {valid}")
        return self._cards[pid][0]

    def source(self, persona_id: str) -> str:
        """``shipped`` or ``user``."""
        self.get(persona_id)
        return self._cards[persona_id][1]

    def _user_path(self, slug: str) -> Path:
        if self.user_dir is None:
            raise PersonaError("No data directory is set, so user personas cannot be saved.")
        folder = self.user_dir.resolve()
        path = (folder / f"{slugify(slug)}.yaml").resolve()
        if path.parent != folder:  # defence in depth: slugify already forbids this
            raise PersonaError(f"Refusing to write outside {folder}")
        return path

    def save_user(self, card: Persona) -> str:
        """Save ``card`` as a user persona (atomically); returns its id."""
        path = self._user_path(slugify(card.name))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".card-", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(card_to_yaml(card))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.reload()
        return next(pid for pid, p in self._paths.items() if p == path)

    def delete_user(self, persona_id: str) -> None:
        """Delete a user persona; shipped ones cannot be deleted."""
        if persona_id not in self._paths:
            if persona_id in self._cards or persona_id in self._errors:
                raise PersonaError(f"{persona_id!r} is a shipped persona and cannot be deleted.")
            raise PersonaError(f"Unknown persona {persona_id!r}")
        self._paths[persona_id].unlink(missing_ok=True)
        self.reload()
