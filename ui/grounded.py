"""Grounded answers for display: the reply with app-added citations, the evidence, the quote.

Pure functions over the ``attribution`` and ``extractive`` data of a ``/chat``
result (retrieval/attribution.py); no Gradio here. Model and document text is
untrusted: it is HTML-escaped and Markdown images are defused, so neither can
run a script or load a remote image in the page.
"""

from __future__ import annotations

import html
import re

NOT_FOUND = "(not found in your documents)"
PARTLY = "partly supported"
# "![alt](url)" loads url when rendered; "!" + escaped "[" no longer forms an image.
_IMAGE_RE = re.compile(r"!\s*\[")


def safe_text(text: str) -> str:
    """``text`` escaped for Markdown with HTML: no tags, entities or images take effect."""
    escaped = html.escape(text or "", quote=True)
    return _IMAGE_RE.sub("!&#91;", escaped)


def attributed_markdown(reply_text: str, attribution: list[dict]) -> str:
    """The reply, each supported sentence followed by its ``[n]``, the others marked.

    Hovering an ``[n]`` shows the passage sentence that supports it.

    The ``[n]`` are the app's, from the attribution, not the model's own
    markers (which ``attribution`` has already taken out of the sentences).
    Without attribution the reply is shown escaped as it is.
    """
    if not attribution:
        return safe_text(reply_text)
    parts = []
    for entry in attribution:
        sentence = safe_text(entry["sentence"])
        if entry.get("source") is not None:
            # The supporting passage sentence shows on hover (an escaped title attribute).
            evidence = safe_text(" ".join(str(entry.get("evidence", "")).split()))
            marker = f"[{int(entry['source'])}]"
            parts.append(f'{sentence} <span class="cite" title="{evidence}">{marker}</span>')
        elif entry.get("status") == "partly":
            parts.append(f"{sentence} *({safe_text(partly_note(entry))})*")
        else:
            parts.append(f"{sentence} *{NOT_FOUND}*")
    return " ".join(parts)


def partly_note(entry: dict) -> str:
    """ "partly supported [n]: <why>" for a sentence whose close evidence fails a check."""
    near = entry.get("evidence_source")
    where = f" [{int(near)}]" if near is not None else ""
    return f"{PARTLY}{where}: {entry.get('reason') or 'the passage does not state all of it'}"


def evidence_rows(attribution: list[dict]) -> list[list]:
    """Rows ``[sentence, source, support, evidence]`` for a table of the evidence.

    ``source`` is "[n]", "partly supported [n]: why", or "" (not found).
    """
    return [
        [
            entry["sentence"],
            f"[{int(entry['source'])}]"
            if entry.get("source") is not None
            else partly_note(entry) if entry.get("status") == "partly" else "",
            round(float(entry.get("support", 0.0)), 2),
            entry.get("evidence", ""),
        ]
        for entry in attribution
    ]


def extractive_markdown(extractive: dict | None) -> str:
    """ "From your documents": the passage with its best sentence in ``<mark>``; "" without."""
    if not extractive:
        return ""
    passage, start, end = extractive["passage"], extractive["start"], extractive["end"]
    quoted = (
        safe_text(passage[:start])
        + "<mark>"
        + safe_text(passage[start:end])
        + "</mark>"
        + safe_text(passage[end:])
    )
    quoted = " ".join(quoted.split())  # one paragraph: a passage's newlines could start markup
    return f"**From your documents** [{int(extractive['source'])}]\n\n> {quoted}"
