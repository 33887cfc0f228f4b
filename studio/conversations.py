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
import json
import math
import time
import uuid

HEAVY_META = ("prompt", "parts")  # the rendered prompt and its parts: rebuilt, never saved
# What the saved chats of one browser may take (its storage holds about 5 MB): past this,
# the token probabilities of the oldest chats go first, never their messages.
SAVED_BUDGET_CHARS = 2_500_000


def reply_meta(result) -> dict:
    """What a finished reply keeps: everything needed to reproduce and inspect it."""
    return {
        "settings": result.settings,
        "stats": result.stats,
        "prompt_messages": result.prompt_messages,
        "notices": result.notices,
        "candidates": result.candidates,
        "chosen": 0,
        "sources": result.sources,
        "tokens": result.tokens,
        "prompt": result.prompt,
        "parts": result.parts,
        "attribution": result.attribution,
        "extractive": result.extractive,
    }


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


def _light_meta(meta, tokens: bool = True) -> dict | None:
    """A reply's meta for saving: no rendered prompt; token probabilities rounded (or gone)."""
    if not isinstance(meta, dict):
        return None
    out = {k: v for k, v in meta.items() if k not in HEAVY_META and k != "branch"}
    if out.get("tokens") and tokens:
        out["tokens"] = [[_token(t) for t in cand] for cand in out["tokens"] if cand]
    elif "tokens" in out:
        out["tokens"] = None
    return out or None


def _token(t: dict) -> dict:
    def r(x):
        if isinstance(x, float):
            return round(x, 4) if math.isfinite(x) else -99.0  # JSON has no infinity
        return x

    if not isinstance(t, dict):
        return t
    out = {"text": t.get("text"), "id": t.get("id"), "logprob": r(t.get("logprob"))}
    if t.get("sampler_logprob") is not None:
        out["sampler_logprob"] = r(t["sampler_logprob"])
    out["top"] = [{"text": a["text"], "id": a["id"], "logprob": r(a["logprob"])}
                  for a in t.get("top") or []]  # fmt: skip
    return out


def light(conversation: list[dict], tokens: bool = True) -> list[dict]:
    """The conversation for saving in the browser: every reply, version and candidate with
    its stats and (rounded) token probabilities, without the rendered prompt."""

    def trim(message: dict) -> dict:
        out = dict(message)
        if "meta" in out:
            out["meta"] = _light_meta(out["meta"], tokens)
        if out.get("versions"):
            out["versions"] = [
                {**v, "meta": _light_meta(v.get("meta"), tokens),
                 "tail": light(v.get("tail") or [], tokens)}
                for v in out["versions"]
            ]  # fmt: skip
        return out

    return [trim(m) for m in conversation]


def fit_budget(chats: list[dict], budget: int = SAVED_BUDGET_CHARS) -> list[dict]:
    """``chats`` (newest first) within ``budget`` characters of JSON: the oldest chats lose
    their token probabilities first; messages and stats are never dropped."""
    size = len(json.dumps(chats, ensure_ascii=False))
    for k in range(len(chats) - 1, -1, -1):
        if size <= budget:
            break
        before = len(json.dumps(chats[k], ensure_ascii=False))
        chats[k] = dict(chats[k], messages=light(chats[k].get("messages") or [], tokens=False))
        size -= before - len(json.dumps(chats[k], ensure_ascii=False))
    return chats


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


def save_chat(
    chats: list[dict], chat_id: str, messages: list[dict], persona: str, model: str | None = None
) -> list[dict]:
    """``chats`` with chat ``chat_id`` holding ``messages`` (added, newest first, if new)."""
    chats = [c for c in chats or [] if isinstance(c, dict) and c.get("id")]
    found = next((c for c in chats if c["id"] == chat_id), None)
    if found is None:
        found = new_chat_record(persona)
        found["id"] = chat_id
        chats.insert(0, found)
    found.update(messages=light(messages), persona=persona, updated=time.time())
    if model:
        found["model"] = model
    chats = sorted(chats, key=lambda c: c.get("updated", 0), reverse=True)[:MAX_CHATS]
    return fit_budget(chats)
