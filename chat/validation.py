"""One sentence for a pydantic ``ValidationError``: the field, what was wrong, what to send.

Every bounded model (decoding and retrieval settings, persona cards, endpoint
arguments, comparison options, exported chats) reports its first mistake
through ``describe``, so a mistake reads the same wherever it is made::

    [prefix]field[0].name: what was wrong; send what it takes.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ValidationError


def describe(
    exc: ValidationError,
    model: type[BaseModel] | None = None,
    *,
    prefix: str = "",
    noun: str = "argument",
    hints: dict[str, str] | None = None,
    hint: str = "",
) -> str:
    """The first error of ``exc`` as one sentence.

    ``prefix`` goes first (``"Invalid decoding settings: "``, ``"bob.yaml: "``).
    An unknown field lists ``model``'s fields, called ``noun``\\ s. What to send
    comes from ``hints`` (by the innermost field named there, else ``hint``) or,
    without them, from ``model``'s schema; a value error says it already.
    """
    err = exc.errors(include_url=False)[0]
    loc = list(err["loc"])
    where = path(loc) or noun
    if err["type"] == "extra_forbidden" and model is not None:
        fields = ", ".join(model.model_fields)
        return f"{prefix}{where}: unknown {noun}; the {noun}s are: {fields}."
    if err["type"] == "missing":
        return f"{prefix}{where}: missing; send it."
    msg = re.sub(r" or instance of \w+", "", err["msg"].removeprefix("Value error, "))
    msg = msg[:1].lower() + msg[1:]
    advice = ""
    if err["type"] != "value_error":  # those say what to send already
        if hints is not None:
            named = [p for p in loc if isinstance(p, str) and p in hints]
            advice = hints[named[-1]] if named else hint
        elif model is not None and loc:
            advice = schema_hint(model, str(loc[0]))
    return f"{prefix}{where}: {msg}{'; ' + advice if advice else ''}."


def path(loc: list) -> str:
    """``history[0].role``: names joined by dots, list positions in brackets."""
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f"{'.' if i else ''}{part}"
    return out


def schema_hint(model: type[BaseModel], name: str) -> str:
    """What the field takes, read off its schema: 'send a whole number from 1 to 50'."""
    prop = model.model_json_schema().get("properties", {}).get(name)
    if prop is None:
        return ""
    kinds = [p for p in prop.get("anyOf", [prop]) if p.get("type") != "null"]
    nullable = len(kinds) < len(prop.get("anyOf", [prop]))
    kind = kinds[0] if kinds else {}
    words = {
        "integer": "a whole number",
        "number": "a number",
        "string": "text",
        "boolean": "true or false",
        "array": "a list",
        "object": "an object of name: value",
    }.get(kind.get("type"), "")
    if not words:
        return ""
    if "minimum" in kind and "maximum" in kind:
        words += f" from {kind['minimum']} to {kind['maximum']}"
    elif "maxLength" in kind:
        words += f" of at most {kind['maxLength']:,} characters"
    return f"send {words}" + (" or null" if nullable else "")
