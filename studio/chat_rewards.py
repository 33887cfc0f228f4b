"""Reward scores in the chat: each reply (its versions and candidates too) scored by one of
the caller's reward models, and a reply's candidates ranked by it (best of n by reward).

Plain functions over the conversation (``studio.conversations``): ``texts_to_score`` says
what to score, ``with_scores`` writes the scores into each reply's ``meta["reward"]``,
``shown_score`` and ``rank_order`` read them back. ``score`` runs it behind
``studio.training.Training``'s rules: only the caller's own reward models score.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass

from pydantic import Field

from chat.errors import InputError
from studio.requests import Name, _Request, parse_request

MAX_TEXTS = 64  # replies, versions and candidates scored in one request
MAX_MESSAGES = 2_000
CONTEXT_MESSAGES = 8  # the messages before a reply that the reward model reads
MAX_CHARS = 8_000  # studio.training.MAX_REWARD_CHARS


class ScoreChatRequest(_Request):
    """Score the open chat's replies (or only its last reply's candidates)."""

    adapter: Name = Field(min_length=1, description="One of your reward models (its id).")
    conversation: list[dict] = Field(max_length=MAX_MESSAGES, description="The open chat.")
    last_only: bool = Field(False, description="Only the last reply and its candidates.")


@dataclass
class Scored:
    """The chat with its scores, and how many texts were scored (of how many)."""

    conversation: list[dict]
    adapter: str
    scored: int
    wanted: int


def _replies(meta) -> list[str]:
    return [c for c in (meta or {}).get("candidates") or [] if isinstance(c, str)]


def texts_to_score(conversation: list[dict], last_only: bool = False) -> list[tuple[int, str]]:
    """``(reply index, text)`` for every text a reward can be given: each reply answering a
    user message, its candidates and its other versions; the newest reply first, no text
    twice for the same reply."""
    out: list[tuple[int, str]] = []
    indices = range(len(conversation) - 1, -1, -1)
    for i in [len(conversation) - 1] if last_only else indices:
        m = conversation[i] if 0 <= i < len(conversation) else None
        if (
            not m
            or m.get("role") != "assistant"
            or not any(x.get("role") == "user" for x in conversation[:i])
        ):
            continue
        texts = [m.get("content") or ""] + _replies(m.get("meta"))
        for v in m.get("versions") or []:
            texts += [v.get("content") or ""] + _replies(v.get("meta"))
        seen: set[str] = set()
        for t in texts:
            if isinstance(t, str) and t.strip() and t not in seen:
                seen.add(t)
                out.append((i, t))
    return out


def prompt_before(conversation: list[dict], index: int) -> list[dict]:
    """The messages a reward model reads before reply ``index`` (the last few, plain)."""
    return [{"role": m["role"], "content": str(m.get("content") or "")[:MAX_CHARS]}
            for m in conversation[:index]][-CONTEXT_MESSAGES:]  # fmt: skip


def _reward(meta: dict, content: str, scores: dict[str, float], adapter: str) -> dict | None:
    if content not in scores:
        return None
    cands = _replies(meta)
    return {"adapter": adapter, "score": scores[content],
            "candidates": [scores.get(c) for c in cands]}  # fmt: skip


def with_scores(conversation: list[dict], scores: dict[int, dict[str, float]], adapter: str):
    """``conversation`` with ``meta["reward"]`` (``{"adapter", "score", "candidates"}``) on
    every reply (and version) whose text was scored; ``scores``: reply index -> text -> score."""
    out = copy.deepcopy(conversation)
    for i, by_text in scores.items():
        m = out[i]
        if isinstance(m.get("meta"), dict):
            got = _reward(m["meta"], m.get("content") or "", by_text, adapter)
            if got:
                m["meta"]["reward"] = got
        for v in m.get("versions") or []:
            if isinstance(v.get("meta"), dict):
                got = _reward(v["meta"], v.get("content") or "", by_text, adapter)
                if got:
                    v["meta"]["reward"] = got
    return out


def shown_score(meta) -> float | None:
    """The reward of the reply shown: the picked candidate's, else the reply's."""
    reward = (meta or {}).get("reward") if isinstance(meta, dict) else None
    if not isinstance(reward, dict):
        return None
    cands, chosen = reward.get("candidates") or [], meta.get("chosen", 0)
    if isinstance(chosen, int) and 0 <= chosen < len(cands) and cands[chosen] is not None:
        return float(cands[chosen])
    score = reward.get("score")
    return float(score) if isinstance(score, (int, float)) else None


def rank_order(scores: list[float | None]) -> list[int]:
    """Indices best first (best of n by reward); unscored ones last, ties in their order."""
    return sorted(range(len(scores)),
                  key=lambda i: (scores[i] is None, -(scores[i] or 0.0)))  # fmt: skip


def score(training, caller, values: dict, cancel: threading.Event | None = None) -> Scored:
    """The chat with rewards from the caller's reward model ``values["adapter"]`` (another's,
    or none, is refused in one sentence); at most ``MAX_TEXTS`` texts, newest first."""
    req = parse_request(ScoreChatRequest, **values)
    wanted = texts_to_score(req.conversation, req.last_only)
    if not wanted:
        raise InputError("No reply to score yet: send a message first, then score the replies.")
    by_reply: dict[int, list[str]] = {}
    for i, text in wanted[:MAX_TEXTS]:
        by_reply.setdefault(i, []).append(text)
    scores: dict[int, dict[str, float]] = {}
    adapter = req.adapter
    for i, texts in by_reply.items():
        got, meta = training.score_texts(caller, prompt_before(req.conversation, i),
                                         [t[:MAX_CHARS] for t in texts], req.adapter,
                                         cancel)  # fmt: skip
        adapter = meta["id"]
        scores[i] = {t: s for t, s in zip(texts, got, strict=True)}
    done = with_scores(req.conversation, scores, adapter)
    return Scored(done, adapter, min(len(wanted), MAX_TEXTS), len(wanted))
