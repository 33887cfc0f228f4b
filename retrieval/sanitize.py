"""Hygiene for what users upload: file names, bytes that claim to be text, and text.

Pure functions, no I/O; the loaders turn their verdicts into ``DocumentError``.
"""

from __future__ import annotations

import re
import unicodedata

from chat.text import drop_surrogates

MAX_NAME_CHARS = 200
FALLBACK_NAME = "document"
SNIFF_BYTES = 8192
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_MAGIC = (
    (b"%PDF", "a PDF"),
    (b"PK\x03\x04", "a zip archive (e.g. .docx)"),
    (b"PK\x05\x06", "a zip archive"),
    (b"\x89PNG", "a PNG image"),
    (b"GIF8", "a GIF image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x7fELF", "an executable"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\xd0\xcf\x11\xe0", "an old Office file (.doc/.xls)"),
)

# Line separators that str.splitlines() honours; all become "\n".
_NEWLINES = re.compile(r"\r\n|[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
# C0 controls except \t and \n, DEL, and C1 controls.
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Bidi overrides/isolates can make "evil\u202etxt.exe" display as "evilexe.txt".
_BIDI = re.compile(r"[\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def sanitize_text(text: str) -> str:
    """Drop NULs, lone surrogates and control characters; NFC-normalize; newlines become \\n."""
    text = drop_surrogates(text)
    text = unicodedata.normalize("NFC", text)
    text = _NEWLINES.sub("\n", text)
    return _CONTROLS.sub("", text)


def safe_filename(name: str) -> str:
    """A display label for an uploaded file: last path component, no controls, <= 200 chars.

    The result is only ever stored as metadata and shown to the user; it is never a path.
    """
    name = _BIDI.sub("", sanitize_text(str(name)).replace("\n", "").replace("\t", " "))
    parts = [p.strip() for p in re.split(r"[\\/]", name)]
    parts = [p for p in parts if p not in ("", ".", "..")]
    if not parts:
        return FALLBACK_NAME
    name = parts[-1]
    if len(name) > MAX_NAME_CHARS:
        stem, dot, suffix = name.rpartition(".")
        if dot and stem and 0 < len(suffix) <= 16:
            name = stem[: MAX_NAME_CHARS - len(suffix) - 1].rstrip() + "." + suffix
        else:
            name = name[:MAX_NAME_CHARS].rstrip()
    return name or FALLBACK_NAME


def _utf8(data: bytes) -> str | None:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None


def sniff_binary(data: bytes) -> str | None:
    """What ``data`` looks like when it is not text (e.g. "a PNG image"); None for text."""
    if data[:2] in _UTF16_BOMS:  # UTF-16 as saved by Windows Notepad contains NULs
        try:
            data.decode("utf-16")
            return None
        except UnicodeDecodeError:
            return "invalid UTF-16"
    head = data.lstrip()[:16]
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    if b"\x00" in data[:SNIFF_BYTES]:
        return "it contains NUL bytes"
    if _utf8(data) is None:
        sample = data[: 8 * SNIFF_BYTES]
        controls = sum(1 for b in sample if (b < 32 and b not in b"\t\n\r\f") or b == 0x7F)
        if controls > len(sample) // 100:
            return "it is not valid UTF-8 and has control bytes"
    return None


def decode_text(data: bytes) -> str | None:
    """Decode bytes that passed ``sniff_binary``: UTF-16 (BOM), UTF-8, else cp1252/latin-1.

    The legacy fallback is used only when at most 30% of the bytes are non-ASCII, i.e. the
    content is clearly text; otherwise (e.g. Greek or Cyrillic in a legacy code page) the
    result would be mojibake, so None is returned and the user is asked for UTF-8.
    """
    if data[:2] in _UTF16_BOMS:
        return data.decode("utf-16")
    text = _utf8(data)
    if text is not None:
        return text
    sample = data[: 8 * SNIFF_BYTES]
    if sum(1 for b in sample if b >= 0x80) > len(sample) * 3 // 10:
        return None
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:  # cp1252 leaves five bytes undefined; latin-1 maps them all
        return data.decode("latin-1")
