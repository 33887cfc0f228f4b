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
similarity ratio of 0.9 or more by ``difflib``, found through a MinHash index:
``training.dedup``), and the result says how many went and why.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from chat.errors import Cancelled, InputError
from chat.rag_formats import has_markers
from training.dedup import NearIndex, signature

MAX_MESSAGES = 20_000  # messages in one export request, all chats together
MAX_ROW_CHARS = 32_000_000  # characters of the rows built (each reply's row repeats its chat)

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


class _Turn(BaseModel):
    """A message as the model was sent it."""

    model_config = ConfigDict(extra="ignore")

    role: str
    content: str


class _Version(BaseModel):
    """An earlier (or the shown) version of a retried reply."""

    model_config = ConfigDict(extra="ignore")

    content: str
    feedback: str | None = None
    tail: list[_Message] | None = None  # what followed this version (an earlier branch)


class _Meta(BaseModel):
    """What a reply recorded that the export reads."""

    model_config = ConfigDict(extra="ignore")

    prompt_messages: list[_Turn] | None = None
    candidates: list[str] | None = None
    chosen: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _chosen_is_a_candidate(self):
        if self.candidates and self.chosen >= len(self.candidates):
            n = len(self.candidates)
            raise ValueError(
                f"chosen is {self.chosen} but there are {n} candidates; "
                f"send an index from 0 to {n - 1}"
            )
        return self


class _Message(_Turn):
    """One message of a saved chat (only the fields the export reads are checked)."""

    feedback: str | None = None
    versions: list[_Version] | None = None
    current: int | None = Field(None, ge=0)
    meta: _Meta | None = None

    @model_validator(mode="after")
    def _current_is_a_version(self):
        if self.versions and self.current is not None and self.current >= len(self.versions):
            n = len(self.versions)
            raise ValueError(
                f"current is {self.current} but there are {n} versions; "
                f"send an index from 0 to {n - 1}"
            )
        return self


_Version.model_rebuild()
_MESSAGES = TypeAdapter(list[_Message])
_HINTS = {
    "versions": "send versions as a list of {content, feedback} objects",
    "meta": "send meta as an object whose candidates are texts and chosen an index into them",
    "prompt_messages": "send prompt_messages as a list of {role, content} messages",
}
_HINTS["candidates"] = _HINTS["chosen"] = _HINTS["meta"]
_HINT = "send each chat as a list of {role, content} messages (saved chats or chat exports)"


def conversations_from(raw: object) -> list[list[dict]]:
    """Message lists from what the API or the page hands in (chats, exports or lists)."""
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list):
        raise InputError("conversations must be a list of chats (saved chats or chat exports)")
    out, count = [], 0
    for i, item in enumerate(raw):
        messages = item.get("messages") if isinstance(item, dict) else item
        try:
            _MESSAGES.validate_python(messages)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
            msg = re.sub(r" or instance of \w+", "", err["msg"].removeprefix("Value error, "))
            if err["type"] != "value_error":  # those say what to send already
                names = [p for p in err["loc"] if isinstance(p, str) and p in _HINTS]
                msg += "; " + (_HINTS[names[-1]] if names else _HINT)
            raise InputError(f"conversations[{i}]{where}: {msg}.") from None
        count += len(messages)
        if count > MAX_MESSAGES:
            raise InputError(
                f"conversations: more than {MAX_MESSAGES:,} messages in one export; "
                "export fewer chats at a time."
            )
        out.append(messages)
    return out


class Budget:
    """What one export may cost: stop when ``cancel`` is set or the time is up."""

    def __init__(self, cancel: threading.Event | None = None, seconds: float | None = None):
        self.cancel = cancel
        self.seconds = seconds
        self.deadline = None if seconds is None else time.monotonic() + seconds
        self.chars = 0

    def check(self, row: dict | None = None) -> None:
        """Raise if the export was cancelled, ran out of time or built too much text."""
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled("The export was cancelled.")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise InputError(
                f"The export took longer than the {self.seconds:g} s this app allows one "
                "request (--max-request-seconds); export fewer chats at a time."
            )
        if row is not None:
            self.chars += sum(len(m["content"]) for v in row.values() for m in v)
            if self.chars > MAX_ROW_CHARS:
                raise InputError(
                    f"The rows of this export would hold over {MAX_ROW_CHARS:,} characters "
                    "(each reply's row repeats its chat so far); export fewer or shorter chats."
                )


def _plain(m: dict) -> dict:
    return {"role": m["role"], "content": m["content"]}


def _prefix(messages: list[dict], index: int) -> list[dict]:
    """What the model was given before reply ``index``: the exact messages if recorded."""
    meta = messages[index].get("meta") or {}
    sent = meta.get("prompt_messages")
    if isinstance(sent, list) and sent:
        return [_plain(m) for m in sent]
    return [_plain(m) for m in messages[:index]]


def sft(conversations: list[list[dict]], budget: Budget | None = None) -> Dataset:
    """Supervised rows in both shapes, for every reply not disliked."""
    budget = budget or Budget()
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
            budget.check(data.rows[-1])
            budget.check(data.rows[-2])
    return _dedupe(data, budget)


def places(messages: list[dict], start: int = 0):
    """Every ``(messages, i)`` place of a conversation: the branch shown, then each branch
    kept behind an earlier version (an edited message or a retried reply) with what followed."""
    for i in range(start, len(messages)):
        yield messages, i
        versions = messages[i].get("versions") or []
        current = messages[i].get("current", len(versions) - 1)
        for k, v in enumerate(versions):
            tail = v.get("tail") if isinstance(v, dict) else None
            if k == current or not tail or not isinstance(v.get("content"), str):
                continue
            alt = {"role": messages[i]["role"], "content": v["content"], "meta": v.get("meta"),
                   "feedback": v.get("feedback")}  # fmt: skip
            yield from places(messages[:i] + [alt] + list(tail), i + 1)


def preference(conversations: list[list[dict]], budget: Budget | None = None) -> Dataset:
    """Chosen/rejected pairs from likes, dislikes, retries and picked candidates, on every
    branch of every conversation (not only the one shown)."""
    budget = budget or Budget()
    data = Dataset("preference")
    for conversation in conversations:
        for messages, i in places(conversation):
            m = messages[i]
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
                    budget.check(data.rows[-1])
    return _dedupe(data, budget)


def _pairs(message: dict) -> list[tuple[str, str]]:
    """(chosen, rejected) texts at one place in a conversation."""
    pairs = []
    versions = message.get("versions") or []
    if len(versions) > 1:
        current = message.get("current")
        current = len(versions) - 1 if current is None else current
        shown = dict(versions[current], content=message["content"],
                     feedback=message.get("feedback"))  # fmt: skip
        everyone = [shown if k == current else v for k, v in enumerate(versions)]
        liked = [v for v in everyone if v.get("feedback") == "like"]
        best = liked[0] if liked else shown
        if best.get("feedback") != "dislike":
            for v in everyone:
                if v is not best and v.get("feedback") != "like":
                    pairs.append((best["content"], v["content"]))
    metas = [message.get("meta")]  # the picked candidate against the others, in every version
    current = message.get("current", len(versions) - 1)
    metas += [v.get("meta") for k, v in enumerate(versions) if k != current]
    for meta in metas:
        candidates = (meta or {}).get("candidates") or []
        if len(candidates) > 1:
            chosen = meta.get("chosen", 0)
            pairs += [(candidates[chosen], c) for k, c in enumerate(candidates) if k != chosen]
    return pairs


def export(kind: str, conversations: object, budget: Budget | None = None) -> Dataset:
    """``sft`` or ``preference`` rows from chats (saved chats, exports, or message lists).

    At most ``MAX_MESSAGES`` messages and ``MAX_ROW_CHARS`` characters of rows;
    ``budget`` stops the work when cancelled or out of time.
    """
    if kind not in ("sft", "preference"):
        raise InputError(f"kind: choose 'sft' or 'preference', got {kind!r}")
    chats = conversations_from(conversations)
    return (sft if kind == "sft" else preference)(chats, budget)


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


def _dedupe(data: Dataset, budget: Budget | None = None) -> Dataset:
    """Drop exact duplicates (same normalised text) and near ones (similarity >= 0.9)."""
    budget = budget or Budget()
    seen: set[str] = set()
    kept: dict[str, NearIndex] = {}  # one index per row shape
    rows = []
    for row in data.rows:
        budget.check()
        shape = ",".join(sorted(row))
        text = _normal(_text(row))
        digest = hashlib.sha256(f"{shape}\x00{text}".encode()).hexdigest()
        if digest in seen:
            data.dropped["exact"] += 1
            continue
        index = kept.setdefault(shape, NearIndex())
        sig = signature(text)
        if index.find(text, sig):
            data.dropped["near"] += 1
            continue
        seen.add(digest)
        index.add(text, sig)
        rows.append(row)
    data.rows = rows
    return data
