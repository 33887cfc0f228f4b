"""Where persona cards live, and who may change them.

- **shipped** cards come with the app (this package) and are read-only;
- **shared** cards live under ``<data dir>/personas`` and are seen by everyone;
  only admins write them (on a private app, you are the admin);
- **mine**: a visitor's own cards, kept in the visitor's browser and sent
  with the requests that need them, so on a shared app nobody else sees or
  changes them. They are passed in as ``{id: yaml text}``.

Shared cards are saved atomically (write, then rename) as
``<slug>.yaml``; the slug comes from the name and can never point outside the
folder. A broken file is listed with its error and never stops the others.
Cards are parsed once: saving or deleting one touches only that card.
"""

from __future__ import annotations

import functools
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
MAX_CARD_CHARS = 64 * 1024  # a card's YAML text, read or written
MAX_OWN_CARDS = 30
OWN_PREFIX = "mine-"


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without aliases: a few bytes of nested ``*refs`` can expand to gigabytes."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in persona cards", mark
            )
        return super().compose_node(parent, index)


def slugify(name: str) -> str:
    """A safe file stem from any name: letters, digits and dashes only, never a path."""
    text = unicodedata.normalize("NFKC", name).lower()
    text = re.sub(r"[^\w]+", "-", text).strip("-_")[:60].strip("-_")
    return text or "persona"


def parse_card(text: str, source: str = "card") -> Persona:
    """Validate YAML text as a card; errors name ``source`` and the field.

    Refused before parsing: text over ``MAX_CARD_CHARS``; while parsing:
    aliases, tags other than plain YAML (``!!python/...``), deep nesting.
    """
    if not isinstance(text, str):
        raise PersonaError(f"{source}: a card must be YAML text")
    if len(text) > MAX_CARD_CHARS:
        raise PersonaError(
            f"{source}: {len(text):,} characters; a card may have at most {MAX_CARD_CHARS:,}"
        )
    try:
        data = yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        raise PersonaError(f"{source}: not valid YAML ({_first_line(exc)})") from None
    except RecursionError:
        raise PersonaError(f"{source}: nested too deeply to be a card") from None
    if not isinstance(data, dict):
        raise PersonaError(f"{source}: a card must be a mapping of field: value")
    try:
        return Persona.model_validate(data)
    except ValidationError as exc:
        raise PersonaError(describe_error(source, exc)) from None


@functools.lru_cache(maxsize=256)
def _parse_cached(text: str) -> Persona:
    return parse_card(text, "your card")


def card_to_yaml(card: Persona) -> str:
    """The card as YAML text (what the editor shows and what a save writes)."""
    data = card.model_dump(exclude_defaults=True)
    data = {"name": card.name, **data}
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=100)


def checked_yaml(card: Persona) -> str:
    """``card_to_yaml``, refused when too large to be read back."""
    text = card_to_yaml(card)
    if len(text) > MAX_CARD_CHARS:
        raise PersonaError(
            f"This card is {len(text):,} characters as YAML; a card may have at most "
            f"{MAX_CARD_CHARS:,}. Shorten its texts."
        )
    return text


def _first_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:200]


class PersonaStore:
    """Shipped and shared cards, with the errors of broken files; visitors' own cards on top."""

    def __init__(self, shared_dir: str | Path | None = None):
        self.shared_dir = Path(shared_dir).resolve() if shared_dir else None
        self.reload()

    def reload(self) -> None:
        """(Re)read every card from disk (at start; a save or delete does not need it)."""
        self._cards: dict[str, tuple[Persona, str]] = {}
        self._errors: dict[str, tuple[str, str]] = {}
        self._paths: dict[str, Path] = {}  # shared persona id -> its file
        shipped = resources.files("personas")
        for entry in sorted(shipped.iterdir(), key=lambda e: (e.name != "assistant.yaml", e.name)):
            if entry.name.endswith(".yaml"):
                self._load(entry.name.removesuffix(".yaml"), entry.name, entry.read_text, "shipped")
        if self.shared_dir and self.shared_dir.is_dir():
            for path in sorted(self.shared_dir.glob("*.yaml")):
                self._load_shared(path)

    def _load_shared(self, path: Path) -> str:
        pid = path.stem if path.stem not in self._cards else f"{path.stem}-shared"
        if pid in self._cards and self._paths.get(pid) != path:
            pid = f"{pid}-{len(self._paths)}"
        self._paths[pid] = path
        self._load(pid, path.name, path.read_text, "shared")
        return pid

    def _load(self, pid: str, name: str, read, source: str) -> None:
        self._cards.pop(pid, None)
        self._errors.pop(pid, None)
        try:
            if source == "shared" and self._paths[pid].stat().st_size > 4 * MAX_CARD_CHARS:
                raise PersonaError(f"{name}: the file is too large to be a card")
            self._cards[pid] = (parse_card(read(encoding="utf-8"), name), source)
        except (PersonaError, OSError, UnicodeDecodeError) as exc:
            self._errors[pid] = (str(exc), source)

    # -- reading ------------------------------------------------------------------

    def list(self, own: dict | None = None) -> list[dict]:
        """Every card as ``{id, name, description, source, error}``; broken ones last.

        ``own`` adds the caller's own cards (source ``mine``).
        """
        rows = [
            {"id": pid, "name": p.name, "description": p.description, "source": src, "error": None}
            for pid, (p, src) in self._cards.items()
        ]
        for pid, text in own_cards(own).items():
            try:
                p = _parse_cached(text)
                rows.append(_row(pid, p.name, p.description, "mine", None))
            except PersonaError as exc:
                rows.append(_row(pid, pid, "", "mine", str(exc)))
        rows += [_row(pid, pid, "", src, err) for pid, (err, src) in self._errors.items()]
        return rows

    def get(self, persona_id: str | None, own: dict | None = None) -> Persona:
        """The card with this id (the default assistant when empty); ``own`` cards too."""
        pid = persona_id or DEFAULT_PERSONA
        mine = own_cards(own)
        if pid in mine:
            return _parse_cached(mine[pid])
        if pid in self._errors and pid not in self._cards:
            raise PersonaError(f"Persona {pid!r} is broken: {self._errors[pid][0]}")
        if pid not in self._cards:
            valid = ", ".join([*self._cards, *mine])
            raise PersonaError(f"Unknown persona {pid!r}; valid personas are: {valid}")
        return self._cards[pid][0]

    def source(self, persona_id: str, own: dict | None = None) -> str:
        """``shipped``, ``shared`` or ``mine``."""
        if persona_id in own_cards(own):
            return "mine"
        self.get(persona_id)
        return self._cards[persona_id][1]

    # -- shared cards (admins) ---------------------------------------------------------

    def _shared_path(self, slug: str) -> Path:
        if self.shared_dir is None:
            raise PersonaError("No data directory is set, so shared personas cannot be saved.")
        folder = self.shared_dir.resolve()
        path = (folder / f"{slugify(slug)}.yaml").resolve()
        if path.parent != folder:  # defence in depth: slugify already forbids this
            raise PersonaError(f"Refusing to write outside {folder}")
        return path

    def save_shared(self, card: Persona) -> str:
        """Save ``card`` as a shared persona (atomically); returns its id."""
        text = checked_yaml(card)
        parse_card(text, card.name)  # what is written must read back
        path = self._shared_path(slugify(card.name))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".card-", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        existing = next((pid for pid, p in self._paths.items() if p == path), None)
        if existing is not None:
            self._load(existing, path.name, path.read_text, "shared")
            return existing
        return self._load_shared(path)

    def delete_shared(self, persona_id: str) -> None:
        """Delete a shared persona; shipped ones cannot be deleted."""
        if persona_id not in self._paths:
            if persona_id in self._cards or persona_id in self._errors:
                raise PersonaError(f"{persona_id!r} is a shipped persona and cannot be deleted.")
            raise PersonaError(f"Unknown persona {persona_id!r}")
        self._paths.pop(persona_id).unlink(missing_ok=True)
        self._cards.pop(persona_id, None)
        self._errors.pop(persona_id, None)


# -- a visitor's own cards ---------------------------------------------------------------


def own_cards(own: object) -> dict[str, str]:
    """The well-formed entries of a visitor's ``{id: yaml}`` cards (anything else ignored)."""
    if not isinstance(own, dict):
        return {}
    return {
        k: v
        for k, v in list(own.items())[:MAX_OWN_CARDS]
        if isinstance(k, str) and k.startswith(OWN_PREFIX) and isinstance(v, str)
    }


def add_own(own: object, card: Persona) -> tuple[dict[str, str], str]:
    """``own`` with ``card`` added (or replaced, by name); returns ``(cards, id)``."""
    cards = own_cards(own)
    text = checked_yaml(card)
    parse_card(text, card.name)
    pid = OWN_PREFIX + slugify(card.name)
    if pid not in cards and len(cards) >= MAX_OWN_CARDS:
        raise PersonaError(
            f"You can keep {MAX_OWN_CARDS} personas of your own; delete one to save another."
        )
    return {**cards, pid: text}, pid


def remove_own(own: object, persona_id: str) -> dict[str, str]:
    """``own`` without ``persona_id``."""
    cards = own_cards(own)
    if persona_id not in cards:
        raise PersonaError(f"{persona_id!r} is not one of your personas.")
    return {k: v for k, v in cards.items() if k != persona_id}


def _row(pid: str, name: str, description: str, source: str, error: str | None) -> dict:
    return {"id": pid, "name": name, "description": description, "source": source, "error": error}
