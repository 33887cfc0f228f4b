"""Text hygiene for whatever users send: no lone surrogates, no NUL bytes."""

from __future__ import annotations

import re

_SURROGATES = re.compile("[\ud800-\udfff]")


def drop_surrogates(text: str) -> str:
    """Join valid high+low surrogate pairs into their character; drop lone halves."""
    if not _SURROGATES.search(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "ignore")


def clean_text(text: str) -> str:
    """``text`` safe to encode as UTF-8 and to tokenize: lone surrogates and NULs removed."""
    return drop_surrogates(text).replace("\x00", "")
