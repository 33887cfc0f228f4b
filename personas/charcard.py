"""Character card V2 import and export (JSON, or PNG with a ``chara`` text chunk).

The whole imported card is kept in ``Persona.character_card``, so exporting
an imported card gives back every field, including those our format has no
slot for (post_history_instructions, alternate_greetings, creator_notes, ...).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import struct
import zlib

from chat.errors import PersonaError
from chat.text import load_json
from personas.cards import MACROS, MAX_AVATAR_CHARS, Example, Persona

V2_FIELDS = (
    "name",
    "description",
    "personality",
    "scenario",
    "first_mes",
    "mes_example",
    "system_prompt",
    "post_history_instructions",
    "alternate_greetings",
    "tags",
    "creator_notes",
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_CARD_BYTES = 8 * 1024 * 1024
_MACRO = re.compile(r"\{\{(.*?)\}\}")


def _plain(text: object) -> str:
    """Card text with V2-only macros ({{original}}, ...) removed and ours normalised."""
    text = text if isinstance(text, str) else ""

    def keep_ours(match) -> str:
        name = match.group(1).strip().lower()
        return "{{" + name + "}}" if name in MACROS else ""

    return _MACRO.sub(keep_ours, text)


def _examples(mes_example: str) -> list[Example]:
    """Parse ``<START>`` blocks of ``{{user}}: ...`` / ``{{char}}: ...`` lines."""
    turns: list[Example] = []
    for line in mes_example.splitlines():
        stripped = line.strip()
        low = stripped.lower()
        if low.startswith("{{user}}:"):
            turns.append(Example(role="user", content=stripped[9:].strip()))
        elif low.startswith("{{char}}:"):
            turns.append(Example(role="assistant", content=stripped[9:].strip()))
        elif turns and stripped and not low.startswith("<start>"):
            turns[-1].content += "\n" + stripped
    return turns


def card_from_v2(raw: dict) -> Persona:
    """Map a character card V2 (or V1, fields at top level) onto a persona card."""
    if not isinstance(raw, dict):
        raise PersonaError("A character card must be a JSON object.")
    data = raw.get("data") if isinstance(raw.get("data"), dict) else raw
    name = _plain(data.get("name")).strip()
    if not name:
        raise PersonaError("The character card has no name.")
    parts = [_plain(data.get("system_prompt"))]
    desc = _plain(data.get("description"))
    if desc.strip():
        parts.append(desc)
    if _plain(data.get("personality")).strip():
        parts.append("{{char}}'s personality: " + _plain(data.get("personality")))
    if _plain(data.get("scenario")).strip():
        parts.append("Scenario: " + _plain(data.get("scenario")))
    summary = (_plain(data.get("creator_notes")) or desc).strip().splitlines()
    tags = data.get("tags") if isinstance(data.get("tags"), list) else []
    return Persona(
        name=name[:80],
        description=(summary[0] if summary else "")[:300],
        system_prompt="\n\n".join(p.strip() for p in parts if p.strip()),
        greeting=_plain(data.get("first_mes")),
        post_history_instructions=_plain(data.get("post_history_instructions")),
        example_dialogue=_examples(_plain(data.get("mes_example"))),
        tags=[str(t) for t in tags],
        character_card=raw,
    )


def card_to_v2(card: Persona) -> dict:
    """A character card V2 for ``card``; an imported card comes back whole."""
    if card.character_card is not None:
        raw = json.loads(json.dumps(card.character_card))
        data = raw.get("data") if isinstance(raw.get("data"), dict) else raw
        # Fields edited here go back; everything else stays exactly as imported.
        if card.name != _plain(data.get("name")).strip()[:80]:
            data["name"] = card.name
        if card.greeting != _plain(data.get("first_mes")):
            data["first_mes"] = card.greeting
        if card.post_history_instructions != _plain(data.get("post_history_instructions")):
            data["post_history_instructions"] = card.post_history_instructions
        if card.tags != [str(t) for t in data.get("tags") or []]:
            data["tags"] = list(card.tags)
        return raw
    mes_example = "".join(
        ("<START>\n" if e.role == "user" and i == 0 else "")
        + ("{{user}}: " if e.role == "user" else "{{char}}: ")
        + e.content
        + "\n"
        for i, e in enumerate(card.example_dialogue)
    )
    return {
        "spec": "chara_card_v2",
        "spec_version": "2.0",
        "data": {
            "name": card.name,
            "description": card.description,
            "personality": "",
            "scenario": "",
            "first_mes": card.greeting,
            "mes_example": mes_example,
            "system_prompt": card.system_prompt,
            "post_history_instructions": card.post_history_instructions,
            "alternate_greetings": [],
            "tags": list(card.tags),
            "creator_notes": card.description,
            "creator": "",
            "character_version": "",
            "extensions": {},
        },
    }


def read_png_chara(blob: bytes) -> dict:
    """The card JSON from a PNG's ``chara`` tEXt/zTXt/iTXt chunk (base64 JSON)."""
    if not blob.startswith(PNG_SIGNATURE):
        raise PersonaError("Not a PNG file.")
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(blob):
        (length,) = struct.unpack(">I", blob[pos : pos + 4])
        kind = blob[pos + 4 : pos + 8]
        body = blob[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind not in (b"tEXt", b"zTXt", b"iTXt"):
            if kind == b"IEND":
                break
            continue
        key, _, value = body.partition(b"\0")
        if key != b"chara":
            continue
        if kind == b"zTXt":
            value = zlib.decompressobj().decompress(value[1:], MAX_CARD_BYTES)
        elif kind == b"iTXt":
            value = value[2:].split(b"\0", 2)[-1]  # flags, language, translated keyword
        try:
            return load_json(base64.b64decode(value, validate=False).decode("utf-8"), "card")
        except (binascii.Error, UnicodeDecodeError, json.JSONDecodeError):
            raise PersonaError("The PNG's chara chunk is not base64-encoded card JSON.") from None
    raise PersonaError("This PNG carries no character card (no 'chara' text chunk).")


def write_png_chara(card: dict, image: bytes | None = None) -> bytes:
    """A PNG (a 1x1 pixel unless ``image`` is given) carrying ``card`` in a chara chunk."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    if image is None:
        image = (
            PNG_SIGNATURE
            + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0\xff\xff\xff"))
            + chunk(b"IEND", b"")
        )
    text = chunk(b"tEXt", b"chara\0" + base64.b64encode(json.dumps(card).encode("utf-8")))
    return image[: len(PNG_SIGNATURE)] + image[len(PNG_SIGNATURE) : -12] + text + image[-12:]


def import_card(blob: bytes, filename: str) -> Persona:
    """A persona from an uploaded ``.json`` or ``.png`` character card."""
    if len(blob) > MAX_CARD_BYTES:
        raise PersonaError(f"{filename}: card files are limited to {MAX_CARD_BYTES // 2**20} MB.")
    if blob.startswith(PNG_SIGNATURE):
        raw = read_png_chara(blob)
        card = card_from_v2(raw)
        return card.model_copy(update={"avatar": avatar_of(blob)})
    else:
        try:
            raw = load_json(blob.decode("utf-8"), filename)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise PersonaError(
                f"{filename}: not a character card: expected V2 JSON or a PNG with a chara chunk."
            ) from None
    return card_from_v2(raw)


AVATAR_PX = 96  # the thumbnail's longest side
MAX_AVATAR_PIXELS = 16_000_000  # larger pictures are not decoded (a decompression bomb)


def avatar_of(png: bytes) -> str:
    """A small JPEG thumbnail of a PNG card's picture as a data URL ('' if it cannot be read)."""
    import io

    try:
        from PIL import Image

        with Image.open(io.BytesIO(png)) as image:
            width, height = image.size
            if width * height > MAX_AVATAR_PIXELS:
                return ""
            image.thumbnail((AVATAR_PX, AVATAR_PX))
            out = io.BytesIO()
            image.convert("RGB").save(out, format="JPEG", quality=80)
    except Exception:  # a picture we cannot read is no reason to refuse the card
        return ""
    url = "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")
    return url if len(url) <= MAX_AVATAR_CHARS else ""
