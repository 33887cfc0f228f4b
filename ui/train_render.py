"""The Train tab's views as plain HTML, Markdown and table rows (no Gradio here)."""

from __future__ import annotations

import html

CSS = """
#train-preview .loss { background: rgba(34,197,94,0.25); border-bottom: 2px solid #16a34a; }
#train-preview .ctx { opacity: 0.65; }
#train-preview pre { white-space: pre-wrap; word-break: break-word; }
#train-bar progress { width: 100%; height: 14px; }
.train-side { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 6px; }
"""


def counts_md(counts: dict, errors: list[str], n_errors: int | None = None) -> str:
    """``12 rows loaded · 2 exact and 1 near duplicates dropped · ... · train 8, held out 1``."""
    c = {k: int(v) for k, v in (counts or {}).items() if isinstance(v, (int, float))}
    parts = [f"**{c.get('loaded', 0)}** rows loaded"]
    parts.append(
        f"{c.get('duplicates', 0)} exact and {c.get('near_duplicates', 0)} near duplicate(s) "
        "dropped"
    )
    parts.append(f"{c.get('truncated', 0)} truncated and {c.get('dropped', 0)} dropped as too long")
    parts.append(f"**{c.get('train', 0)}** to train on, **{c.get('eval', 0)}** held out")
    out = " · ".join(parts)
    n_errors = len(errors) if n_errors is None else n_errors
    if n_errors:
        shown = "\n".join(f"- {html.escape(e)}" for e in errors[:10])
        more = f"\n- … and {n_errors - 10} more" if n_errors > 10 else ""
        out += f"\n\n**{n_errors} bad line(s)** (the others were loaded):\n{shown}{more}"
    return out


def preview_html(preview: dict) -> str:
    """One example as the model is trained on it: loss tokens highlighted, the token count."""
    spans = []
    for piece, loss in preview.get("tokens") or []:
        cls = "loss" if loss else "ctx"
        spans.append(f'<span class="{cls}">{html.escape(str(piece))}</span>')
    n = preview.get("n_tokens", len(spans))
    n_loss = sum(1 for _, loss in preview.get("tokens") or [] if loss)
    note = " (truncated to the maximum length)" if preview.get("truncated") else ""
    return (
        f"<p><b>{n}</b> tokens{note}; the <span class='loss'>highlighted</span> {n_loss} carry "
        "the loss (the assistant's reply): the model learns to write those, given the rest.</p>"
        f"<pre>{''.join(spans)}</pre>"
    )


def progress_html(status: dict) -> str:
    """A progress bar with the state, steps, elapsed and remaining time, and the last losses."""
    state = status.get("state", "starting")
    step, total = int(status.get("step") or 0), int(status.get("total_steps") or 0)
    elapsed = float(status.get("elapsed_s") or 0)
    remaining = status.get("remaining_s")
    bar = f"<progress value='{step}' max='{max(total, 1)}'></progress>"
    line = f"<b>{html.escape(state)}</b> · step {step} of {total or '?'} · {elapsed:.0f} s elapsed"
    if remaining is not None and state in ("starting", "running"):
        line += f" · about {float(remaining):.0f} s left"
    losses = status.get("train_loss") or []
    if losses:
        line += f" · train loss {float(losses[-1][1]):.4f}"
    evals = status.get("eval_loss") or []
    if evals:
        line += f" · eval loss {float(evals[-1][1]):.4f}"
    accuracy = [m[k] for m in status.get("metrics") or [] for k in ("eval_accuracy", "accuracy")
                if isinstance(m.get(k), (int, float))]  # fmt: skip
    if accuracy:  # a reward model's (its DPO chart stays hidden)
        line += f" · pairwise accuracy {float(accuracy[-1]):.2f}"
    msg = status.get("message") or ""
    tail = f"<div>{html.escape(msg)}</div>" if msg else ""
    if status.get("adapter"):
        tail += f"<div>Adapter saved: <code>{html.escape(str(status['adapter']))}</code></div>"
    return f"{bar}<div id='train-line'>{line}</div>{tail}"


def loss_rows(status: dict) -> list[dict]:
    """``{step, value, series}`` rows for the loss chart (train per step, eval per evaluation)."""
    rows = [{"step": int(s), "value": float(v), "series": "train loss"}
            for s, v in status.get("train_loss") or []]  # fmt: skip
    rows += [{"step": int(s), "value": float(v), "series": "eval loss"}
             for s, v in status.get("eval_loss") or []]  # fmt: skip
    return rows


LOSS_SERIES = ("train loss", "eval loss")
METRICS = {"rewards/margins": "reward margin", "rewards/accuracies": "preference accuracy",
           "accuracy": "pairwise accuracy", "eval_accuracy": "pairwise accuracy (held out)",
           "eval_rewards/accuracies": "preference accuracy (held out)"}  # fmt: skip
DPO_SERIES = ("reward margin", "preference accuracy", "preference accuracy (held out)")


def chart_rows(rows: list[dict], series: tuple[str, ...]) -> list[dict]:
    """``rows`` with one empty point (value NaN, not drawn) for every series named.

    The page's chart fixes its colour scale to the series in the first data it draws and
    later only swaps the data: the eval loss, which arrives with the first evaluation,
    was left out of the scale, so neither its line nor its legend entry was drawn.
    """
    return [{"step": 0, "value": float("nan"), "series": s} for s in series] + rows


def dpo_rows(status: dict) -> list[dict]:
    """The DPO chart's rows: empty for an SFT or reward job (the chart is then hidden)."""
    return [r for r in metric_rows(status) if r["series"] in DPO_SERIES]


def metric_rows(status: dict) -> list[dict]:
    """DPO's reward margins and preference accuracy (a reward model's accuracy) per step."""
    rows = []
    for m in status.get("metrics") or []:
        for key, label in METRICS.items():
            if isinstance(m.get(key), (int, float)):
                rows.append({"step": int(m.get("step", 0)), "value": float(m[key]),
                             "series": label})  # fmt: skip
    return rows


def adapter_rows(adapters: list[dict]) -> list[list]:
    """The adapters table: id, name, kind, method, steps, final losses, size."""
    out = []
    for a in adapters:
        train = a.get("train_loss") or []
        ev = a.get("eval_loss") or []
        out.append([
            a.get("id", ""), a.get("name", ""), a.get("kind", ""), a.get("method", ""),
            a.get("steps", 0),
            round(float(train[-1][1]), 4) if train else None,
            round(float(ev[-1][1]), 4) if ev else None,
            round(int(a.get("size_bytes") or 0) / 2**20, 2),
            str(a.get("created", ""))[:19],
        ])  # fmt: skip
    return out


ADAPTER_HEADERS = ["id", "name", "kind", "method", "steps", "train loss", "eval loss", "MB",
                   "created"]  # fmt: skip


COMPARE_HEADERS = ["method", "trainable", "share %", "adapter KB", "s per step", "extra MiB",
                   "train loss", "eval loss", "note"]  # fmt: skip


def compare_rows(rows: list[dict]) -> list[list]:
    """The "which PEFT method" table, one row per method."""

    def num(v, scale=1.0, digits=3):
        return round(float(v) * scale, digits) if isinstance(v, (int, float)) else None

    return [[r.get("method"), r.get("trainable"), num(r.get("share"), 100, 3),
             num(r.get("adapter_bytes"), 1 / 1024, 1), num(r.get("s_per_step")),
             num(r.get("peak_mib"), 1, 1), num(r.get("train_loss"), 1, 4),
             num(r.get("eval_loss"), 1, 4), r.get("note") or ""] for r in rows]  # fmt: skip


def ranked_md(replies: list[str], out: dict) -> str:
    """Best of n by reward: the candidates best first, with their scores."""
    lines = [f"Ranked by the reward model `{out['adapter']}` (higher is preferred):", ""]
    for rank, i in enumerate(out["order"], start=1):
        text = html.escape(replies[i][:300]).replace("|", "\\|")
        lines.append(f"{rank}. **{out['scores'][i]:+.3f}** · {text}")
    return "\n".join(lines)


def before_after_html(out: dict) -> str:
    """Base and tuned replies side by side, the most changed tokens, perplexity and reward."""
    esc = html.escape
    parts = [f"<p>Adapter <code>{esc(out['adapter'])}</code>; same prompt, seed and settings "
             "(greedy) for both models.</p>"]  # fmt: skip
    for row in out["rows"]:
        rewards = ""
        if "base_reward" in row:
            rewards = f" · reward {row['base_reward']:+.3f} → {row['tuned_reward']:+.3f}"
        parts.append(
            f"<div class='train-pair'><p><b>{esc(row['prompt'])}</b>"
            f"{' · identical replies' if row['same'] else ''}{rewards}</p>"
            "<div style='display:flex; gap:8px'>"
            f"<div class='train-side base-reply' style='flex:1'><i>base</i><br>{esc(row['base'])}"
            "</div>"
            f"<div class='train-side tuned-reply' style='flex:1'><i>tuned</i><br>"
            f"{esc(row['tuned'])}</div></div></div>"
        )  # fmt: skip
    changed = out.get("changed")
    if changed:
        items = ", ".join(
            f"<code>{esc(t['text'])}</code> {t['base']:.3f} → {t['tuned']:.3f}"
            for t in changed["most_changed"]
        )
        parts.append(f"<p>Tokens of the first reply whose probability moved most: {items}</p>")
    ppl = out.get("perplexity")
    if ppl:
        parts.append(
            f"<p>Perplexity of the held-out answers ({ppl['tokens']} tokens): base "
            f"<b>{ppl['base']:.3f}</b> → tuned <b>{ppl['tuned']:.3f}</b> (lower: the tuned model "
            "finds those answers less surprising).</p>"
        )
    return "".join(parts)


def chat_rewards_md(chat: list[dict], scored: list[dict]) -> str:
    """Each reply of the chat with its reward; its candidates ranked by reward (best of n)."""
    if not scored:
        return "That chat has no replies to score."
    lines = []
    for row in scored:
        reply = html.escape(chat[row["index"]]["content"][:200]).replace("\n", " ")
        lines.append(f"- **{row['score']:+.3f}** · {reply}")
        for k, c in enumerate(row["candidates"], start=1):
            lines.append(f"    {k}. {c['score']:+.3f} · {html.escape(c['text'][:120])}")
    return "\n".join(lines)
