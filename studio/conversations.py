"""Conversations as the page keeps them: one list of messages, the single source of truth.

A message is ``{"role", "content"}``; a reply also carries ``meta`` (settings,
stats, the exact messages sent, candidates, sources...) and ``feedback``
("like", "dislike" or None). A message that was retried or edited keeps its
earlier **versions** (``versions``: every version's content, meta and the
conversation that followed it; ``current``: which one is shown), so stepping
between them (‹ 2/3 ›) brings back what followed each. Plain functions over
plain data: the page, the saved chats and the dataset export all use them.
"""

from __future__ import annotations

import copy
import time
import uuid

HEAVY_META = ("tokens", "prompt", "parts")  # large, and rebuilt on demand: never saved


def history(conversation: list[dict]) -> list[dict]:
    """The role/content history sent to the model (everything else stripped)."""
    return [{"role": m["role"], "content": m["content"]} for m in conversation]


def _version(message: dict, tail: list[dict]) -> dict:
    return {
        "content": message["content"],
        "meta": message.get("meta"),
        "feedback": message.get("feedback"),
        "tail": tail,
    }


def versions_of(message: dict) -> tuple[int, int]:
    """``(current, count)`` of a message's versions, 1-based (``(1, 1)`` when it has none)."""
    versions = message.get("versions") or []
    return (message.get("current", 0) + 1, len(versions)) if versions else (1, 1)


def new_version(conversation: list[dict], index: int, message: dict) -> list[dict]:
    """Replace message ``index`` by ``message`` as a new version; what followed is kept with
    the old version (and the conversation now ends at ``index``)."""
    old = conversation[index]
    versions = copy.deepcopy(old.get("versions") or [_version(old, [])])
    versions[old.get("current", 0)] = _version(old, conversation[index + 1 :])
    versions.append(_version(message, []))
    fresh = dict(message, versions=versions, current=len(versions) - 1)
    return conversation[:index] + [fresh]


def step_version(conversation: list[dict], index: int, delta: int) -> list[dict]:
    """Show the previous (-1) or next (+1) version of message ``index``, with what followed it."""
    message = conversation[index]
    versions = copy.deepcopy(message.get("versions") or [])
    if not versions:
        return conversation
    current = message.get("current", 0)
    target = max(0, min(len(versions) - 1, current + delta))
    if target == current:
        return conversation
    versions[current] = _version(message, conversation[index + 1 :])
    chosen = versions[target]
    shown = {k: v for k, v in message.items() if k not in ("meta", "feedback")}
    shown.update(content=chosen["content"], versions=versions, current=target)
    if chosen.get("meta") is not None:
        shown["meta"] = chosen["meta"]
    if chosen.get("feedback") is not None:
        shown["feedback"] = chosen["feedback"]
    return conversation[:index] + [shown] + list(chosen["tail"])


def delete_pair(conversation: list[dict], index: int) -> list[dict]:
    """Remove a user message and its reply (``index`` may point at either)."""
    if not 0 <= index < len(conversation):
        return conversation
    start = index if conversation[index]["role"] == "user" else index - 1
    while start > 0 and conversation[start]["role"] != "user":
        start -= 1
    end = start + 1
    while end < len(conversation) and conversation[end]["role"] != "user":
        end += 1
    return conversation[:start] + conversation[end:]


def set_feedback(conversation: list[dict], index: int, value: str | None) -> list[dict]:
    """Like (``"like"``), dislike (``"dislike"``) or clear (None) reply ``index``."""
    message = dict(conversation[index], feedback=value)
    return conversation[:index] + [message] + conversation[index + 1 :]


def last_user(conversation: list[dict]) -> int | None:
    """Index of the last user message."""
    return max((i for i, m in enumerate(conversation) if m["role"] == "user"), default=None)


def user_before(conversation: list[dict], index: int) -> int | None:
    """Index of the user message that reply ``index`` answers."""
    return max((i for i in range(index) if conversation[i]["role"] == "user"), default=None)


def light(conversation: list[dict]) -> list[dict]:
    """The conversation without the bulky per-token data, for saving in the browser."""

    def trim(message: dict) -> dict:
        out = dict(message)
        if isinstance(out.get("meta"), dict):
            out["meta"] = {k: v for k, v in out["meta"].items() if k not in HEAVY_META}
        if out.get("versions"):
            out["versions"] = [
                {**v, "meta": {k: x for k, x in (v.get("meta") or {}).items()
                               if k not in HEAVY_META} or None, "tail": light(v["tail"])}
                for v in out["versions"]
            ]  # fmt: skip
        return out

    return [trim(m) for m in conversation]


# -- saved chats ---------------------------------------------------------------------------

MAX_CHATS = 50


def new_chat_record(persona: str, messages: list[dict] | None = None) -> dict:
    """A saved chat: an id, a title (from the first message), the persona and the messages."""
    return {
        "id": uuid.uuid4().hex[:12],
        "title": "",
        "persona": persona,
        "updated": time.time(),
        "messages": light(messages or []),
    }


def title_of(chat: dict) -> str:
    """Its own title, else the first words of its first user message."""
    if chat.get("title"):
        return chat["title"]
    first = next((m["content"] for m in chat.get("messages", []) if m["role"] == "user"), "")
    words = " ".join(first.split()[:8])
    return words + ("…" if len(first.split()) > 8 else "") if words else "New chat"


def save_chat(chats: list[dict], chat_id: str, messages: list[dict], persona: str) -> list[dict]:
    """``chats`` with chat ``chat_id`` holding ``messages`` (added, newest first, if new)."""
    chats = [c for c in chats or [] if isinstance(c, dict) and c.get("id")]
    found = next((c for c in chats if c["id"] == chat_id), None)
    if found is None:
        found = new_chat_record(persona)
        found["id"] = chat_id
        chats.insert(0, found)
    found.update(messages=light(messages), persona=persona, updated=time.time())
    return sorted(chats, key=lambda c: c.get("updated", 0), reverse=True)[:MAX_CHATS]
