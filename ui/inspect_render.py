"""Plain functions that draw what the model did: token colours, bars, heatmaps, stacked parts.

No Gradio here. Everything shown from the model or the user is escaped: the
HTML is built by the app itself and never contains a script, a remote
resource or unescaped model text.
"""

from __future__ import annotations

import html
import math

BAR = "#4f46e5"
SAMPLER_BAR = "#10b981"
PART_COLOURS = ["#6366f1", "#a855f7", "#0ea5e9", "#f59e0b", "#10b981", "#ef4444", "#e5e7eb"]


def shown(text: str) -> str:
    """A token made visible: spaces as ␣, newlines as ⏎, tabs as ⇥ (then escaped)."""
    visible = text.replace(" ", "␣").replace("\n", "⏎").replace("\t", "⇥")
    return html.escape(visible or "∅")


def prob_of(logprob: float | None) -> float | None:
    """``exp(logprob)``, or None."""
    return None if logprob is None else math.exp(logprob)


def token_spans(tokens: list[dict], use_sampler: bool = False) -> list[tuple[str, float | None]]:
    """HighlightedText value: each token shaded by how unlikely it was (1 - p; 0 = certain)."""
    out = []
    for t in tokens:
        lp = t.get("sampler_logprob") if use_sampler else t.get("logprob")
        p = prob_of(lp)
        out.append((t["text"], None if p is None else round(1 - p, 4)))
    return out


def surprisal_spans(tokens: list[dict]) -> list[tuple[str, float | None]]:
    """HighlightedText value for perplexity: shaded by surprisal (8 nats or more: full)."""
    return [
        (t["text"], None if t.get("logprob") is None else round(min(1.0, -t["logprob"] / 8), 4))
        for t in tokens
    ]


def confidence_line(conf: dict | None) -> str:
    """One line of Markdown about a reply's confidence."""
    if not conf:
        return ""
    worst = conf["least_likely"]
    line = (
        f"mean token probability **{conf['mean_prob']:.2f}** "
        f"(mean log-probability {conf['mean_logprob']:.2f}) · least likely token "
        f"`{shown(worst['text'])}` at p = {worst['prob']:.3f}"
    )
    if conf["low"]:
        line = f"⚠️ **low confidence** (below {conf['threshold']:.2f}) · " + line
    return line


def bars(rows: list[dict], chosen: int | None = None, note: str = "") -> str:
    """Horizontal bars: each token's probability under the model and after the sampler.

    ``rows``: ``{text, id, prob, sampler_prob (or None), chosen?}``; a row is marked ✓
    when its ``chosen`` is true or its id is ``chosen``.
    """
    if not rows:
        return ""
    shown_total = sum(r["prob"] for r in rows)
    lines = ['<div class="tok-bars">']
    if note:
        lines.append(f'<div class="tok-note">{html.escape(note)}</div>')
    header = (
        '<div class="tok-row tok-head"><span>token</span><span>model</span>'
        "<span>after the sampler</span></div>"
    )
    lines.append(header)
    for r in rows:
        mark = " ✓" if r.get("chosen") or (chosen is not None and r["id"] == chosen) else ""
        sp = r.get("sampler_prob")
        kept = f"{sp:.3f}" if sp is not None else _NOT_KEPT[r.get("kept", False) is None]
        lines.append(
            '<div class="tok-row">'
            f'<span class="tok-text" title="id {int(r["id"])}">{shown(r["text"])}{mark}</span>'
            f"{_bar(r['prob'], BAR)}{_bar(sp, SAMPLER_BAR, kept)}</div>"
        )
    rest = max(0.0, 1.0 - shown_total)
    lines.append(
        f'<div class="tok-row"><span class="tok-text">everything else</span>{_bar(rest, "#9ca3af")}'
        "<span></span></div></div>"
    )
    return "".join(lines)


_NOT_KEPT = {False: "removed by the sampler", True: "not recorded"}


def _bar(p: float | None, colour: str, label: str | None = None) -> str:
    if p is None:
        return f'<span class="tok-bar tok-off">{html.escape(label or "")}</span>'
    width = max(0.5, 100 * p)
    text = html.escape(label) if label else f"{p:.3f}"
    return (
        f'<span class="tok-bar"><span style="width:{width:.1f}%;background:{colour}"></span>'
        f"<em>{text}</em></span>"
    )


def same_token(a: dict, b: dict) -> bool:
    """Equal ids; a remote engine shares no ids (-1), so its tokens compare by text."""
    if a["id"] >= 0 and b["id"] >= 0:
        return a["id"] == b["id"]
    return a["text"] == b["text"]


def alternatives(token: dict) -> list[dict]:
    """Bar rows for one generated token's recorded alternatives (``chosen`` marks the pick).

    Each row's ``sampler_prob`` is its own probability after the sampler, as
    recorded at that step (the next-token explorer computes the same); ``kept``
    is None where the sampler's view was not recorded (beam search, a remote
    engine, an older reply).
    """
    known = any("kept" in a for a in token["top"])
    rows = []
    for a in token["top"]:
        row = {"text": a["text"], "id": a["id"], "prob": math.exp(a["logprob"])}
        rows.append(row | _after_sampler(a.get("sampler_logprob"), known))
    if not any(same_token(r, token) for r in rows):  # a forced or sampled outsider
        row = {"text": token["text"], "id": token["id"], "prob": math.exp(token["logprob"])}
        rows.append(row | _after_sampler(token.get("sampler_logprob"), known))
    for r in rows:
        r["chosen"] = same_token(r, token)
        if r["chosen"] and not known and token.get("sampler_logprob") is not None:
            r |= _after_sampler(token["sampler_logprob"], True)  # a reply saved before
    return rows


def _after_sampler(logprob: float | None, known: bool) -> dict:
    """``kept`` and ``sampler_prob`` of one row (None logprob: removed, when known)."""
    if not known:
        return {"kept": None, "sampler_prob": None}
    if logprob is None:
        return {"kept": False, "sampler_prob": None}
    return {"kept": True, "sampler_prob": math.exp(logprob)}


def heatmap(tokens: list[str], weights: list[list[float]], title: str) -> str:
    """An attention matrix as a grid: row = the token attending, column = the token attended to."""
    n = len(tokens)
    labels = [shown(t) for t in tokens]
    cell = max(6, min(28, 560 // max(n, 1)))
    head = "".join(f'<th class="hm-col"><span>{lab}</span></th>' for lab in labels)
    rows = []
    for i, row in enumerate(weights):
        cells = "".join(
            f'<td style="background:rgba(79,70,229,{min(1.0, w) ** 0.5:.3f});'
            f'width:{cell}px;height:{cell}px" title="{labels[i]} → {labels[j]}: {w:.3f}"></td>'
            for j, w in enumerate(row)
        )
        rows.append(f'<tr><th class="hm-row">{labels[i]}</th>{cells}</tr>')
    return (
        f'<div class="heatmap"><div class="hm-title">{html.escape(title)}</div>'
        f"<table><tr><th></th>{head}</tr>{''.join(rows)}</table></div>"
    )


def stacked(parts: list[dict], n_ctx: int) -> str:
    """The context window as one stacked bar of its parts, with a legend."""
    segments, legend = [], []
    for i, part in enumerate(parts):
        if part["tokens"] <= 0:
            continue
        colour = PART_COLOURS[i % len(PART_COLOURS)]
        width = 100 * part["tokens"] / max(n_ctx, 1)
        name = html.escape(part["part"])
        segments.append(
            f'<span style="width:{width:.2f}%;background:{colour}" '
            f'title="{name}: {part["tokens"]} tokens"></span>'
        )
        legend.append(
            f'<span class="lg"><i style="background:{colour}"></i>{name}: {part["tokens"]}</span>'
        )
    return (
        f'<div class="stack">{"".join(segments)}</div>'
        f'<div class="stack-legend">{"".join(legend)} · window {n_ctx} tokens</div>'
    )


def comparison_rows(rows: list[dict]) -> list[list]:
    """Dataframe rows for the decoding comparison."""
    out = []
    for r in rows:
        if "unavailable" in r:
            out.append([r["label"], r["unavailable"], "", "", ""])
        else:
            out.append([r["label"], r["text"], r["logprob"], r["mean_logprob"], r["tokens_per_s"]])
    return out


CSS = """
.tok-bars{font-size:13px}.tok-row{display:grid;grid-template-columns:11em 1fr 1fr;gap:8px;
align-items:center;margin:2px 0}.tok-head{font-weight:600;opacity:.7}
.tok-text{font-family:monospace;white-space:pre;overflow:hidden;text-overflow:ellipsis}
.tok-bar{position:relative;height:16px;background:#f3f4f6;border-radius:3px;display:block}
.tok-bar>span{position:absolute;left:0;top:0;bottom:0;border-radius:3px}
.tok-bar>em{position:relative;padding-left:4px;font-style:normal;font-size:11px}
.tok-off{font-size:11px;opacity:.6;background:none}.tok-note{margin-bottom:4px;opacity:.8}
.heatmap{overflow:auto;max-height:640px}.heatmap table{border-collapse:collapse}
.heatmap td{border:1px solid #fff;padding:0}.hm-row{text-align:right;font:11px monospace;
padding-right:4px;white-space:pre}.hm-col{font:11px monospace;vertical-align:bottom;height:6em}
.hm-col>span{writing-mode:vertical-rl;transform:rotate(180deg);white-space:pre}
.hm-title{font-weight:600;margin-bottom:4px}
.stack{display:flex;height:22px;border-radius:4px;overflow:hidden;background:#f3f4f6}
.stack>span{display:block;height:100%}.stack-legend{font-size:12px;margin-top:4px}
.lg{margin-right:10px}.lg>i{display:inline-block;width:10px;height:10px;margin-right:3px;
border-radius:2px}
"""
