"""The input of a prediction cut into parts a learner can name, for attribution.

A prompt is the chat template's text with the messages' contents in it. Its
*parts* are those contents (the persona's system prompt, each example turn,
each earlier turn, each retrieved passage, the new message); the template's own
markup between them is fixed. *Sentences* cut every part further. Removing a
segment means deleting its text, which is how feature ablation and KernelSHAP
perturb the input here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from chat.errors import InputError

LEVELS = ("parts", "sentences")
MAX_SEGMENTS = 48  # attribution cost grows with this; more is unreadable anyway
_SENTENCE = re.compile(r"(?<=[.!?。！？])\s+|\n+")
# How chat.rag_formats marks each passage in a prompt.
_PASSAGE = re.compile(r"<<<REFERENCE \[(\d+)\][^\n]*>>>\n(.*?)\n<<<END \[\1\]>>>", re.DOTALL)


@dataclass(frozen=True)
class Segment:
    """A piece of the prompt text: ``fixed`` ones are template markup, never removed."""

    text: str
    label: str = ""
    kind: str = ""  # system, example, history, passage, message, fixed
    fixed: bool = False


def from_messages(
    render, messages: list[dict], roles: list[str], passages: list[str] = ()
) -> list[Segment]:
    """Segments of ``render(messages)``: each message's content a part, the rest fixed.

    ``roles`` names each message's part (``system``, ``example``, ``history``,
    ``message``); passages found inside a message become parts of their own.
    """
    prompt = render(messages)
    out: list[Segment] = []
    cursor = 0
    turn = 0
    for msg, kind in zip(messages, roles, strict=True):
        content = msg.get("content") or ""
        at = prompt.find(content, cursor) if content else -1
        if at < 0:
            continue  # the template changed the text: it stays in the fixed markup
        out.append(Segment(prompt[cursor:at], kind="fixed", fixed=True))
        if kind == "history":
            turn += 1
        label = _label(kind, msg.get("role", ""), turn)
        out += _split_passages(content, label, kind, passages)
        cursor = at + len(content)
    out.append(Segment(prompt[cursor:], kind="fixed", fixed=True))
    return _tidy(out)


def _tidy(segments: list[Segment]) -> list[Segment]:
    """Empty segments dropped; blank ones fixed (removing whitespace teaches nothing)."""
    return [
        s if s.fixed or s.text.strip() else Segment(s.text, kind="fixed", fixed=True)
        for s in segments
        if s.text
    ]


def _label(kind: str, role: str, turn: int) -> str:
    return {
        "system": "persona (system prompt)",
        "example": f"example turn ({role})",
        "history": f"earlier turn {turn} ({role})",
        "message": "your message",
        "suffix": "after-history instructions",
    }.get(kind, kind)


def _passage_spans(content: str, passages) -> list[tuple[int, int, int, int, str]]:
    """``(block start, text start, text end, block end, n)`` of each passage in ``content``:
    the app's marked blocks (the markers stay fixed), else the given passage texts."""
    found = [
        (m.start(), m.start(2), m.end(2), m.end(), m.group(1)) for m in _PASSAGE.finditer(content)
    ]
    if found:
        return found
    cursor = 0
    for n, passage in enumerate(passages, 1):
        at = content.find(passage, cursor) if passage else -1
        if at >= 0:
            found.append((at, at, at + len(passage), at + len(passage), str(n)))
            cursor = at + len(passage)
    return found


def _split_passages(content: str, label: str, kind: str, passages) -> list[Segment]:
    """The message with each passage it contains as a part of its own."""
    out, cursor = [], 0
    for block, start, end, block_end, n in _passage_spans(content, passages):
        if block > cursor:
            out.append(Segment(content[cursor:block], label, kind))
        out.append(Segment(content[block:start], kind="fixed", fixed=True))
        out.append(Segment(content[start:end], f"passage [{n}]", "passage"))
        out.append(Segment(content[end:block_end], kind="fixed", fixed=True))
        cursor = block_end
    if cursor < len(content):
        out.append(Segment(content[cursor:], label, kind))
    return out


def from_text(text: str) -> list[Segment]:
    """A plain text as one part (cut it further with ``sentences``)."""
    if not isinstance(text, str) or not text.strip():
        raise InputError("text is empty: type the text whose continuation you want explained")
    return [Segment(text, "text", "text")]


def sentences(segments: list[Segment]) -> list[Segment]:
    """Every non-fixed segment cut into sentences (and lines); the separators stay attached."""
    out, counts = [], {}
    for seg in segments:
        if seg.fixed:
            out.append(seg)
            continue
        for piece in _cut(seg.text):
            counts[seg.label] = counts.get(seg.label, 0) + 1
            out.append(Segment(piece, f"{seg.label} · sentence {counts[seg.label]}", seg.kind))
    return out


def _cut(text: str) -> list[str]:
    pieces, start = [], 0
    for m in _SENTENCE.finditer(text):
        if m.end() > start and text[start : m.start()].strip():
            pieces.append(text[start : m.end()])
            start = m.end()
    if start < len(text):
        if pieces and not text[start:].strip():
            pieces[-1] += text[start:]
        else:
            pieces.append(text[start:])
    return pieces or [text]


def at_level(segments: list[Segment], level: str) -> list[Segment]:
    """The segments for ``level`` (``parts`` or ``sentences``), bounded in number."""
    if level not in LEVELS:
        raise InputError(
            f"level: choose one of: {', '.join(LEVELS)} (or tokens, with a gradient method)"
        )
    out = _tidy(sentences(segments) if level == "sentences" else list(segments))
    free = sum(1 for s in out if not s.fixed)
    if free == 0:
        raise InputError("Nothing in this input can be removed to measure its effect.")
    if free > MAX_SEGMENTS:
        raise InputError(
            f"The input has {free} {level}; attribution takes at most {MAX_SEGMENTS}: "
            "choose parts instead of sentences, or a shorter chat."
        )
    return out


def join(segments: list[Segment], keep) -> str:
    """The prompt text with segment ``i`` kept where ``keep(i)`` (fixed ones always)."""
    return "".join(s.text for i, s in enumerate(segments) if s.fixed or keep(i))
