"""Text hygiene for whatever users send: no lone surrogates, no NUL bytes, no JSON too deep."""

from __future__ import annotations

import json
import re

from chat.errors import InputError

MAX_JSON_DEPTH = 64  # far more than any card or chat export nests

_SURROGATES = re.compile("[\ud800-\udfff]")


def drop_surrogates(text: str) -> str:
    """Join valid high+low surrogate pairs into their character; drop lone halves."""
    if not _SURROGATES.search(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "ignore")


def clean_text(text: str) -> str:
    """``text`` safe to encode as UTF-8 and to tokenize: lone surrogates and NULs removed."""
    return drop_surrogates(text).replace("\x00", "")


def load_json(text: str | bytes, what: str = "file"):
    """``json.loads``, refusing nesting past ``MAX_JSON_DEPTH`` with one sentence.

    Python's parser recurses once per level, so ``"[" * 200000`` would end in
    a RecursionError; whatever reads the value afterwards recurses too.
    Malformed JSON still raises ``json.JSONDecodeError`` (or ``UnicodeDecodeError``).
    """
    too_deep = InputError(
        f"{what}: JSON nested more than {MAX_JSON_DEPTH} levels deep; "
        "send a card or chat export as the app writes it."
    )
    try:
        value = json.loads(text)
    except RecursionError:
        raise too_deep from None
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            if depth > MAX_JSON_DEPTH:
                raise too_deep
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return value
