"""Plain functions that turn conversation data into what the chat UI shows.

No Gradio here: the conversation is a list of message dicts (``role``,
``content`` and, for replies, ``meta``); these helpers derive the Chatbot
value, the one-line statistics and the JSON export from it.
"""

from __future__ import annotations

import json
import re

from chat.backends.base import ModelInfo
from studio.chat_rewards import shown_score
from studio.conversations import versions_of
from ui import grounded

# Markdown images and HTML that makes a browser fetch something. Untrusted text
# (messages, persona fields, model output) shows them as links or text instead;
# the page's Content-Security-Policy blocks remote media in any case.
_IMAGE_BANG = re.compile(r"!(?=\[)")
_FETCHING_TAGS = re.compile(
    r"<(?=\s*/?\s*(?:img|image|picture|source|video|audio|track|iframe|frame|embed|object|"
    r"link|meta|base|svg|input|form|style|body|table|td|th)\b)",
    re.IGNORECASE,
)


def defang(text: str) -> str:
    """``text`` with images turned into links and fetching HTML tags shown as text."""
    return _FETCHING_TAGS.sub("&lt;", _IMAGE_BANG.sub("", text))


def shown_stats(meta: dict) -> dict:
    """The stats of the version shown: a picked candidate's own figures, not the turn's total."""
    stats = meta.get("stats") or {}
    per, chosen = stats.get("candidates") or [], meta.get("chosen", 0)
    if not isinstance(chosen, int) or not 0 <= chosen < len(per):
        return stats
    own = per[chosen]
    out = {k: v for k, v in stats.items() if k not in ("candidates", "confidence")}
    out |= {
        "candidate": f"{chosen + 1}/{len(per)}",
        "completion_tokens": own["completion_tokens"],
        "tokens_per_s": own.get("tokens_per_s") or 0,
        "finish_reason": own.get("finish_reason"),
        "logprob": own.get("logprob"),
        "mean_logprob": own.get("mean_logprob"),
    }
    return out


def candidate_line(own: dict) -> str:
    """``28 tokens · 31.0 tok/s · log-probability -20.1 (mean -0.72 per token)``."""
    parts = [f"{own['completion_tokens']} tokens"]
    if own.get("tokens_per_s"):
        parts.append(f"{own['tokens_per_s']:.1f} tok/s")
    if own.get("logprob") is not None:
        mean = own.get("mean_logprob")
        tail = f" (mean {mean:.2f} per token)" if mean is not None else ""
        parts.append(f"log-probability {own['logprob']:.2f}{tail}")
    return " · ".join(parts)


def stats_line(stats: dict) -> str:
    """``42 tokens · 35.1 tok/s · TTFT 0.08 s · seed 7`` for one reply."""
    parts = [f"{stats.get('completion_tokens', 0)} tokens"]
    if stats.get("candidate"):  # a picked candidate: its own figures (see shown_stats)
        parts = [f"candidate {stats['candidate']}", candidate_line(stats)]
    elif len(stats.get("candidates") or []) > 1:
        parts = [f"{len(stats['candidates'])} candidates · {parts[0]} in all"]
    # Replies saved before stats carried "remote" name their engine's backend instead.
    remote = stats.get("remote", stats.get("backend") == "openai")
    if remote or stats.get("answered_by"):
        who = stats.get("answered_by") or f"{stats.get('model')} ({stats.get('device')})"
        parts.insert(0, f"answered by {who}")
    if stats.get("tokens_per_s") and not stats.get("candidate"):
        parts.append(f"{stats['tokens_per_s']:.1f} tok/s")
    if stats.get("ttft_s") is not None:
        parts.append(f"TTFT {stats['ttft_s']:.2f} s")
    parts.append(f"seed {stats.get('seed')}")
    if stats.get("dropped_turns"):
        parts.append(f"{stats['dropped_turns']} old turn(s) dropped")
    conf = stats.get("confidence")
    if conf:
        parts.append(f"mean p {conf['mean_prob']:.2f}")
        if conf["low"]:
            parts.append("⚠ low confidence")
    reason = stats.get("finish_reason")
    if reason == "cancelled" or (isinstance(reason, list) and "cancelled" in reason):
        parts.append("stopped")
    return " · ".join(parts)


def progress_line(stats: dict, settings: dict) -> str:
    """The stats line while a reply is generated: what is known so far, and the time spent.

    Beam search keeps several hypotheses and sends the reply only when it is done,
    so the line says that rather than looking stuck.
    """
    elapsed = f"{stats.get('elapsed_s') or 0:.0f} s"
    if settings.get("strategy") == "beam" and not stats.get("completion_tokens"):
        return f"generating… beam search sends the whole reply at once when it is done · {elapsed}"
    return f"generating… {elapsed} · " + stats_line(stats)


def details_markdown(meta: dict) -> str:
    """Everything needed to reproduce a reply: settings, stats, the exact messages sent."""
    settings = json.dumps(meta.get("settings", {}), ensure_ascii=False, indent=1)
    stats = json.dumps(meta.get("stats", {}), ensure_ascii=False, indent=1)
    sent = json.dumps(meta.get("prompt_messages", []), ensure_ascii=False, indent=1)
    notices = "".join(f"\n- {n}" for n in meta.get("notices", []))
    fence = "````"  # four backticks survive triple backticks inside messages
    return (
        (f"**Notices**{notices}\n\n" if notices else "")
        + sources_markdown(meta.get("sources") or [])
        + f"**Settings**\n{fence}json\n{settings}\n{fence}\n"
        + f"**Stats**\n{fence}json\n{stats}\n{fence}\n"
        + f"**Messages sent**\n{fence}json\n{sent}\n{fence}"
    )


def fenced(text: str) -> str:
    """``text`` as a fenced block that no backtick run inside it can close.

    Document passages are untrusted: inside a code fence, their markup,
    scripts and image links are shown as text, never rendered.
    """
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def sources_markdown(sources: list[dict]) -> str:
    """Numbered sources with file, page or section, score and the passage (as text)."""
    if not sources:
        return ""
    parts = ["**Sources**"]
    for s in sources:
        where = f", page {s['page']}" if s.get("page") else ""
        where += f", {s['section']}" if s.get("section") else ""
        label = f"[{s['n']}] {s['source']}{where} (score {s['score']:.2f})"
        parts.append(fenced(label) + "\n" + fenced(s["text"]))
    return "\n".join(parts) + "\n\n"


def chatbot_messages(conversation: list[dict]) -> list[dict]:
    """The Chatbot value: each reply followed by a collapsible line of its statistics."""
    return chatbot_view(conversation)[0]


def display_index(conversation: list[dict]) -> list[int]:
    """For each message the Chatbot shows, the index of the conversation message it shows."""
    return chatbot_view(conversation)[1]


FEEDBACK = {"like": "Like", "dislike": "Dislike"}


def chatbot_view(conversation: list[dict]) -> tuple[list[dict], list[int], list[str | None]]:
    """In one pass: the Chatbot's messages, the conversation index each one shows, and the
    like/dislike mark of each (on a reply itself, not on its statistics line)."""
    out: list[dict] = []
    index: list[int] = []
    marks: list[str | None] = []
    for i, msg in enumerate(conversation):
        meta = msg.get("meta")
        if msg["role"] == "assistant" and meta and meta.get("attribution"):
            # An answer from documents: the app's own [n] after each sentence it could back.
            shown = grounded.attributed_markdown(msg["content"], meta["attribution"])
        else:
            shown = defang(msg["content"])
        out.append({"role": msg["role"], "content": shown})
        index.append(i)
        marks.append(FEEDBACK.get(msg.get("feedback")))
        if msg["role"] == "assistant" and meta and meta.get("stats"):
            title = stats_line(shown_stats(meta))
            current, count = versions_of(msg)
            if count > 1:
                title = f"version {current}/{count} · " + title
            reward = shown_score(meta)
            if reward is not None:  # scored by a reward model (ui.reward_chat)
                title += f" · reward {reward:+.3f}"
            out.append(
                {
                    "role": "assistant",
                    "content": details_markdown(meta),
                    "metadata": {"title": title, "status": "done"},
                }
            )
            index.append(i)
            marks.append(None)
    return out, index, marks


def grounding_markdown(attribution: list[dict], extractive: dict | None) -> str:
    """Under an answer from documents: the plain-search quote, then each sentence's evidence.

    All of it is untrusted text (model output, document passages), escaped.
    """
    parts = [grounded.extractive_markdown(extractive)] if extractive else []
    if attribution:
        rows = ["| answer sentence | source | support | evidence |", "|---|---|---|---|"]
        for sentence, source, support, evidence in grounded.evidence_rows(attribution):
            cells = [_cell(sentence), _cell(source) or "*not found in your documents*"]
            rows.append(f"| {cells[0]} | {cells[1]} | {support:.2f} | {_cell(evidence)} |")
        parts.append("**Which passage backs each sentence**\n\n" + "\n".join(rows))
    return "\n\n".join(parts)


def _cell(text: str) -> str:
    """Untrusted text as one Markdown table cell."""
    return " ".join(grounded.safe_text(text).split()).replace("|", "&#124;")


def model_banner(info: ModelInfo) -> str:
    """The line that says what is loaded and where it runs."""
    template = "chat template" if info.chat_template else "plain transcript (no chat template)"
    return (
        f"**Model** `{info.model}` · **Backend** {info.backend} · **Device** {info.device} · "
        f"**Context** {info.n_ctx} tokens · {template}"
    )


def export_json(conversation: list[dict], info: ModelInfo, persona: str) -> str:
    """The chat as JSON, with each reply's metadata, for saving or reproducing."""
    data = {
        "model": {
            "model": info.model,
            "backend": info.backend,
            "device": info.device,
            "n_ctx": info.n_ctx,
        },
        "persona": persona,
        "messages": conversation,
    }
    return json.dumps(data, ensure_ascii=False, indent=2)
