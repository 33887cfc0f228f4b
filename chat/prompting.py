"""Prompt building: persona + history + new message, fitted into the context window.

Models with a chat template (in the tokenizer or the GGUF metadata) get it;
base models without one (GPT-2) get a plain transcript and stop strings so the
model does not write the user's next turn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from chat.errors import Cancelled, InputError
from chat.rag_formats import FORMATS, RagFormat
from chat.text import clean_text

TRANSCRIPT_STOPS = ["\nUser:", "\nAssistant:"]
# Room kept free so that a tokenizer merging differently at the prompt/reply
# seam never pushes us over the window.
SAFETY_TOKENS = 4
MIN_MESSAGE_TOKENS = 16


def render_transcript(messages: list[dict]) -> str:
    """Render ``system`` text, then ``User:``/``Assistant:`` turns, ending with ``Assistant:``."""
    lines: list[str] = []
    for msg in messages:
        content = msg["content"].strip()
        if msg["role"] == "system":
            lines.append(content + "\n")
        elif msg["role"] == "user":
            lines.append(f"User: {content}")
        else:
            lines.append(f"Assistant: {content}")
    lines.append("Assistant:")
    return "\n".join(lines)


class Renderer(Protocol):
    """The parts of a backend that prompt fitting needs."""

    def render(self, messages: list[dict]) -> str: ...
    def count_tokens(self, prompt: str) -> int: ...
    def truncate(self, text: str, max_tokens: int) -> str: ...


def with_context(message: str, passages: list, rag_format: RagFormat | None = None) -> str:
    """The user's message with numbered, clearly delimited reference passages.

    ``rag_format`` (default: the original ``reference-blocks``) decides the layout.
    """
    if not passages:
        return message
    return (rag_format or FORMATS["reference-blocks"]).build(message, passages)


@dataclass
class FittedPrompt:
    """A prompt that fits the window, and what had to give way for it."""

    messages: list[dict]
    prompt: str
    prompt_tokens: int
    max_new_tokens: int
    dropped_turns: int = 0
    notices: list[str] = field(default_factory=list)
    passages: list = field(default_factory=list)  # the retrieved passages kept, numbered [1]..


def _estimate_start(backend, prefix, turns, message, passages, limit, attempt) -> int:
    """How many of the oldest turns to drop, from the newest turns' own token counts."""
    base = attempt(len(turns), len(passages))[2]  # prefix, passages and message alone
    if not turns:
        return 0
    pair = [{"role": "user", "content": ""}, {"role": "assistant", "content": ""}]
    empty = [{"role": "user", "content": ""}]
    per_message = (
        max(
            0,
            backend.count_tokens(backend.render(prefix + pair + empty))
            - backend.count_tokens(backend.render(prefix + empty)),
        )
        / 2
    )
    total = base
    for start in range(len(turns) - 1, -1, -1):
        for m in turns[start]:
            total += backend.count_tokens(m["content"]) + per_message
        if total > limit:
            return start + 1
    return 0


def _most_turns(fits, start: int, n_turns: int, limit: int):
    """``(start, attempt)`` keeping the most turns that fit, searching from ``start``.

    ``fits(s)`` renders the prompt without the ``s`` oldest turns; the token
    count only falls as ``s`` grows. Steps of 1, 2, 4... away from the guess,
    then a binary search between the last fitting and first failing ``s``.
    """
    found = fits(start)
    if found[2] <= limit:  # try keeping older turns too
        good, good_found, step = start, found, 1
        bad = None
        while good > 0:
            s = max(0, good - step)
            f = fits(s)
            if f[2] > limit:
                bad = s
                break
            good, good_found, step = s, f, step * 2
        lo, hi = (bad, good) if bad is not None else (good, good)
    else:  # drop more turns
        bad, step = start, 1
        good = good_found = None
        while bad < n_turns:
            s = min(n_turns, bad + step)
            f = fits(s)
            if f[2] <= limit:
                good, good_found = s, f
                break
            bad, step = s, step * 2
        if good is None:
            return None
        lo, hi = bad, good
    while hi - lo > 1:  # invariant: lo fails, hi fits
        mid = (lo + hi) // 2
        f = fits(mid)
        if f[2] <= limit:
            hi, good_found = mid, f
        else:
            lo = mid
    return hi, good_found


def validate_history(history: object) -> list[dict]:
    """Check history is a list of ``{role: user|assistant, content: str}``; return a copy."""
    if history is None:
        return []
    if not isinstance(history, list):
        raise InputError("history must be a list of {role, content} messages")
    clean = []
    for i, msg in enumerate(history):
        if not isinstance(msg, dict) or not isinstance(msg.get("content"), str):
            raise InputError(f"history[{i}] must be an object with 'role' and text 'content'")
        if msg.get("role") not in ("user", "assistant"):
            raise InputError(
                f"history[{i}].role must be 'user' or 'assistant', got {msg.get('role')!r}"
            )
        clean.append({"role": msg["role"], "content": clean_text(msg["content"])})
    return clean


def split_turns(history: list[dict]) -> list[list[dict]]:
    """Group history into turns: a user message and the replies that follow it."""
    turns: list[list[dict]] = []
    for msg in history:
        if msg["role"] == "user" or not turns:
            turns.append([msg])
        else:
            turns[-1].append(msg)
    return turns


@dataclass
class PromptRequest:
    """What goes into one prompt, and the window it must fit with its reply.

    ``prefix`` is the persona's system prompt and few-shot examples; ``suffix``
    messages always follow the new message (a character card's post-history
    instructions); ``passages`` are retrieved chunks (best first), laid out by
    ``rag_format`` (see ``chat.rag_formats``; it may keep only the best few).
    """

    prefix: list[dict]
    history: list[dict]
    message: str
    n_ctx: int
    max_new_tokens: int
    passages: list | None = None
    suffix: list[dict] | None = None
    rag_format: RagFormat | None = None


def fit_prompt(backend: Renderer, request: PromptRequest, cancel=None) -> FittedPrompt:
    """Fit ``prefix + history + message + suffix`` and the reply into ``n_ctx`` tokens.

    History goes oldest turn first, then retrieved passages lowest score
    first; the prefix (system prompt and few-shot examples) and the new
    message stay. A message too long on its own is cut, and if even that is
    not enough the reply budget shrinks. Each concession is reported in
    ``notices``.

    Fast for any history: the newest turns are counted one by one only until
    the window is full, which estimates how many turns fit; the estimate is
    then checked on the rendered prompt, stepping a turn at a time (then in
    growing steps) until the most turns that fit are found. Every prompt
    rendered is about the size of the window, whatever the history's length.
    ``cancel`` (a ``threading.Event``) is checked between renders and raises
    ``Cancelled``.
    """
    r, notices = request, []
    # Cap the reply so that a prompt still fits beside it.
    budget = r.n_ctx - SAFETY_TOKENS
    max_new_tokens = r.max_new_tokens
    if max_new_tokens > budget // 2:
        notices.append(
            f"max_new_tokens {max_new_tokens} leaves no room for a prompt in a "
            f"{r.n_ctx}-token window; the reply is capped at {budget // 2} tokens."
        )
        max_new_tokens = budget // 2
    limit = budget - max_new_tokens
    turns = split_turns(r.history)
    passages = list(r.passages or [])
    if r.rag_format is not None and r.rag_format.max_passages is not None:
        passages = passages[: r.rag_format.max_passages]
    suffix = list(r.suffix or [])

    def attempt(start: int, n_passages: int):
        if cancel is not None and cancel.is_set():
            raise Cancelled("The request was cancelled while its prompt was being built.")
        context = with_context(r.message, passages[:n_passages], r.rag_format)
        user = {"role": "user", "content": context}
        messages = r.prefix + [m for t in turns[start:] for m in t] + [user] + suffix
        prompt = backend.render(messages)
        return messages, prompt, backend.count_tokens(prompt)

    def done(start: int, n_passages: int, found) -> FittedPrompt:
        messages, prompt, n_prompt = found
        if start:
            notices.append(f"Dropped the {start} oldest turn(s) to fit the context window.")
        if n_passages < len(passages):
            notices.append(
                f"Dropped {len(passages) - n_passages} lowest-scoring retrieved passage(s) "
                "to fit the context window."
            )
        kept = passages[:n_passages]
        return FittedPrompt(messages, prompt, n_prompt, max_new_tokens, start, notices, kept)

    # Keep the most turns that fit beside every passage: estimated, then checked.
    start = _estimate_start(backend, r.prefix, turns, r.message, passages, limit, attempt)
    fits = lambda start: attempt(start, len(passages))  # noqa: E731
    best = _most_turns(fits, start, len(turns), limit)
    if best is not None:
        return done(best[0], len(passages), best[1])
    # No turn fits: drop the lowest-scoring passages until the prompt does.
    for n_passages in range(len(passages) - 1, -1, -1):
        found = attempt(len(turns), n_passages)
        if found[2] <= limit:
            return done(len(turns), n_passages, found)
    if turns:
        notices.append(f"Dropped all {len(turns)} earlier turn(s) to fit the context window.")
    if passages:
        notices.append("Dropped every retrieved passage: the message alone fills the window.")
    # The prefix and the message alone are too long: cut the message (the reply if need be).
    return _cut_message(backend, r, budget, max_new_tokens, len(turns), notices)


def _cut_message(backend: Renderer, r: PromptRequest, budget: int, max_new_tokens: int,
                 dropped: int, notices: list[str]) -> FittedPrompt:  # fmt: skip
    """The prefix, the message cut to what fits, and the suffix (the reply capped first
    if even a short message would not fit)."""
    suffix = list(r.suffix or [])
    overhead = backend.count_tokens(
        backend.render(r.prefix + [{"role": "user", "content": ""}] + suffix)
    )
    allowed = budget - max_new_tokens - overhead
    if allowed < MIN_MESSAGE_TOKENS:
        max_new_tokens = max(1, budget - overhead - MIN_MESSAGE_TOKENS)
        allowed = budget - max_new_tokens - overhead
        if allowed < 1:
            raise InputError(
                f"The persona's system prompt and examples take {overhead} tokens, which "
                f"leaves no room in this model's {r.n_ctx}-token window. Shorten the persona "
                "or load a model with a larger context (--n-ctx)."
            )
        notices.append(f"The reply is capped at {max_new_tokens} tokens to fit the window.")
    cut = backend.truncate(r.message, allowed)
    while True:
        messages = r.prefix + [{"role": "user", "content": cut}] + suffix
        prompt = backend.render(messages)
        n_prompt = backend.count_tokens(prompt)
        if n_prompt + max_new_tokens <= budget or not cut:
            break
        allowed = max(0, allowed - max(1, n_prompt + max_new_tokens - budget))
        cut = backend.truncate(r.message, allowed)
    notices.append(
        f"Your message was too long for the context window and was cut to its first "
        f"{backend.count_tokens(cut) if cut else 0} tokens."
    )
    return FittedPrompt(messages, prompt, n_prompt, max_new_tokens, dropped, notices)
