"""Chats become training data: supervised fine-tuning rows and preference pairs.

The recipe behind ChatGPT: supervised fine-tuning on prompt/completion data,
then a reward model trained on human preferences, then reinforcement learning.
This module turns a user's chats into the data the first two steps read:

- **sft**: every reply that was not disliked, both as ``{"messages": [...]}``
  (the conversation up to and including it) and as ``{"prompt", "completion"}``
  (the messages before it, and it), in the conversational form TRL reads;
- **preference**: ``{"prompt", "chosen", "rejected"}`` rows (the format of
  TRL's DPO and reward trainers): a liked reply against a disliked or
  regenerated one at the same place, and a picked candidate against each one
  not picked.

Exact and near duplicates are dropped (the same normalised text, or a
similarity ratio of 0.9 or more by ``difflib``), and the result says how many
went and why.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from dataclasses import dataclass, field

from chat.errors import InputError
from chat.rag_formats import has_markers

NEAR = 0.9  # difflib similarity ratio at which two rows count as the same
_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)


@dataclass
class Dataset:
    """The rows of an export, and what was dropped."""

    kind: str
    rows: list[dict] = field(default_factory=list)
    dropped: dict = field(default_factory=lambda: {"exact": 0, "near": 0})
    with_markers: int = 0  # replies left out for echoing the retrieval prompt's markers

    def jsonl(self) -> str:
        """One JSON object per line."""
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.rows)

    def summary(self) -> str:
        """``12 rows; dropped 3 exact and 1 near duplicate(s)``."""
        d = self.dropped
        line = f"{len(self.rows)} rows; dropped {d['exact']} exact and {d['near']} near"
        line += " duplicate(s)"
        if self.with_markers:
            line += f" and {self.with_markers} reply(ies) echoing the prompt's `<<<` markers"
        return line


def conversations_from(raw: object) -> list[list[dict]]:
    """Message lists from what the API or the page hands in (chats, exports or lists)."""
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list):
        raise InputError("conversations must be a list of chats (saved chats or chat exports)")
    out = []
    for i, item in enumerate(raw):
        messages = item.get("messages") if isinstance(item, dict) else item
        if not isinstance(messages, list) or not all(
            isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role")
            for m in messages
        ):
            raise InputError(f"conversations[{i}]: expected a list of {{role, content}} messages")
        out.append(messages)
    return out


def _plain(m: dict) -> dict:
    return {"role": m["role"], "content": m["content"]}


def _prefix(messages: list[dict], index: int) -> list[dict]:
    """What the model was given before reply ``index``: the exact messages if recorded."""
    meta = messages[index].get("meta") or {}
    sent = meta.get("prompt_messages")
    if isinstance(sent, list) and sent:
        return [_plain(m) for m in sent]
    return [_plain(m) for m in messages[:index]]


def sft(conversations: list[list[dict]]) -> Dataset:
    """Supervised rows in both shapes, for every reply not disliked."""
    data = Dataset("sft")
    for messages in conversations:
        for i, m in enumerate(messages):
            if m["role"] != "assistant" or m.get("feedback") == "dislike" or not m["content"]:
                continue
            if not any(x["role"] == "user" for x in messages[:i]):
                continue  # a greeting answers nothing
            if has_markers(m["content"]):  # echoed retrieval markers: never teach them
                data.with_markers += 1
                continue
            prompt = _prefix(messages, i)
            reply = {"role": "assistant", "content": m["content"]}
            data.rows.append({"messages": prompt + [reply]})
            data.rows.append({"prompt": prompt, "completion": [reply]})
    return _dedupe(data)


def preference(conversations: list[list[dict]]) -> Dataset:
    """Chosen/rejected pairs from likes, dislikes, retries and picked candidates."""
    data = Dataset("preference")
    for messages in conversations:
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            prompt = _prefix(messages, i)
            for chosen, rejected in _pairs(m):
                if has_markers(chosen):  # echoed retrieval markers: never the preferred reply
                    data.with_markers += 1
                    continue
                if chosen.strip() and rejected.strip() and chosen != rejected:
                    data.rows.append(
                        {
                            "prompt": prompt,
                            "chosen": [{"role": "assistant", "content": chosen}],
                            "rejected": [{"role": "assistant", "content": rejected}],
                        }
                    )
    return _dedupe(data)


def _pairs(message: dict) -> list[tuple[str, str]]:
    """(chosen, rejected) texts at one place in a conversation."""
    pairs = []
    versions = message.get("versions") or []
    if len(versions) > 1:
        current = message.get("current", len(versions) - 1)
        shown = dict(versions[current], content=message["content"],
                     feedback=message.get("feedback"))  # fmt: skip
        everyone = [shown if k == current else v for k, v in enumerate(versions)]
        liked = [v for v in everyone if v.get("feedback") == "like"]
        best = liked[0] if liked else shown
        if best.get("feedback") != "dislike":
            for v in everyone:
                if v is not best and v.get("feedback") != "like":
                    pairs.append((best["content"], v["content"]))
    meta = message.get("meta") or {}
    candidates = meta.get("candidates") or []
    if len(candidates) > 1:
        picked = candidates[meta.get("chosen", 0)]
        pairs += [(picked, c) for k, c in enumerate(candidates) if k != meta.get("chosen", 0)]
    return pairs


def export(kind: str, conversations: object) -> Dataset:
    """``sft`` or ``preference`` rows from chats (saved chats, exports, or message lists)."""
    chats = conversations_from(conversations)
    if kind == "sft":
        return sft(chats)
    if kind == "preference":
        return preference(chats)
    raise InputError(f"kind: choose 'sft' or 'preference', got {kind!r}")


# -- duplicates ------------------------------------------------------------------------------


def _text(row: dict) -> str:
    """All the text of a row, in order."""
    parts = []
    for value in row.values():
        for m in value if isinstance(value, list) else []:
            parts.append(m["content"])
    return "\n".join(parts)


def _normal(text: str) -> str:
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def _near(a: str, b: str) -> bool:
    """Similarity ratio >= NEAR (the cheap upper bounds first)."""
    m = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return m.real_quick_ratio() >= NEAR and m.quick_ratio() >= NEAR and m.ratio() >= NEAR


def _dedupe(data: Dataset) -> Dataset:
    """Drop exact duplicates (same normalised text) and near ones (similarity >= NEAR)."""
    seen: set[str] = set()
    kept: list[tuple[str, str]] = []
    rows = []
    for row in data.rows:
        shape = ",".join(sorted(row))
        text = _normal(_text(row))
        digest = hashlib.sha256(f"{shape}\x00{text}".encode()).hexdigest()
        if digest in seen:
            data.dropped["exact"] += 1
            continue
        if any(s == shape and _near(text, t) for t, s in kept):
            data.dropped["near"] += 1
            continue
        seen.add(digest)
        kept.append((text, shape))
        rows.append(row)
    data.rows = rows
    return data
