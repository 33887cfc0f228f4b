"""Plain functions that draw the explain views as HTML: attribution colours, the logit-lens
table, neuron excerpts and the reliability diagram.

No Gradio here. Every text from the model, the user or a document is escaped.
Colours follow the SHAP convention: red pushes toward the target, blue away.
"""

from __future__ import annotations

import html

from ui.inspect_render import shown

TOWARD = (220, 38, 38)  # red
AWAY = (37, 99, 235)  # blue


def _shade(value: float | None, scale: float) -> str:
    if value is None or scale <= 0:
        return "transparent"
    r, g, b = TOWARD if value > 0 else AWAY
    alpha = min(1.0, abs(value) / scale) * 0.75
    return f"rgba({r},{g},{b},{alpha:.3f})"


def attribution_html(out: dict) -> str:
    """The input text coloured by attribution (segments or tokens), with a one-line summary."""
    if "segments" in out:
        pieces = [(s["text"], s["attribution"], s["label"]) for s in out["segments"]]
    else:
        values = out["attributions"]
        pieces = [
            (t, v, f"token {i}")
            for i, (t, v) in enumerate(zip(out["tokens"], values, strict=False))
        ]
    scale = max((abs(v) for _, v, _ in pieces if v is not None), default=0.0)
    spans = []
    for text, value, label in pieces:
        title = f"{label}: {value:+.4f}" if value is not None else "template (not removed)"
        style = f"background:{_shade(value, scale)};"
        if value is None:
            style += "opacity:0.55;"
        spans.append(
            f'<span class="attr-seg" style="{style}" title="{html.escape(title, quote=True)}">'
            f"{html.escape(text)}</span>"
        )
    return (
        '<div class="attr-view" style="white-space:pre-wrap;line-height:1.7;font-family:monospace;'
        "font-size:0.85em;border:1px solid var(--border-color-primary);padding:8px;"
        f'border-radius:6px;max-height:420px;overflow:auto">{"".join(spans)}</div>'
        '<div style="font-size:0.8em;margin-top:4px"><span style="background:rgba(220,38,38,0.6)">'
        "&nbsp;red&nbsp;</span> pushed toward the target · "
        '<span style="background:rgba(37,99,235,0.6)">&nbsp;blue&nbsp;</span> pushed away · '
        "grey: the chat template (kept)</div>"
    )


def attribution_summary(out: dict) -> str:
    """Markdown: what was explained, by which method, at what cost, and the sums."""
    target = out.get("target") or {}
    what = (
        f"token {target.get('index')} `{shown(target.get('text', ''))}`"
        if target.get("kind") == "token"
        else "the whole reply"
    )
    lines = [
        f"**Target:** {what} · log-probability {out['target_logprob']:.3f} · **method:** "
        f"{out['method'].replace('_', ' ')} · {html.escape(out.get('cost', ''))}"
    ]
    if "total_change" in out:
        lines.append(
            f"Removing every part changes the target by {out['total_change']:+.3f}; the "
            f"attributions sum to {out['sum_of_attributions']:+.3f}"
            + (" (ablation removes one part at a time, so the two need not agree)."
               if out["method"] == "ablation" else
               f" (gap {out['completeness_gap']:+.3f}).")
        )  # fmt: skip
    if out.get("completeness_gap") is not None and "total_change" not in out:
        change = out["target_logprob"] - out["baseline_logprob"]
        lines.append(
            f"Integrated gradients: attributions sum to {out['sum_of_attributions']:+.3f}, the "
            f"change they explain is {change:+.3f}: completeness gap "
            f"{out['completeness_gap']:+.3f}."
            + (" The gap is large: the path integral needs more steps than were taken, so read "
               "the colours as rough." if abs(out["completeness_gap"]) > 0.25 * abs(change) else "")
        )  # fmt: skip
    rows = [s for s in out.get("segments", []) if s["attribution"] is not None]
    if rows:
        best = max(rows, key=lambda s: s["attribution"])
        worst = min(rows, key=lambda s: s["attribution"])
        lines.append(
            f"Pushed toward it most: **{html.escape(best['label'])}** "
            f"({best['attribution']:+.3f}); "
            f"away most: **{html.escape(worst['label'])}** ({worst['attribution']:+.3f})."
        )
    if out.get("passages"):
        lines.append(f"**Documents:** {html.escape(out['passages']['verdict'])}")
    return "\n\n".join(lines)


def lens_html(out: dict) -> str:
    """Layers x positions table: each cell the top token, shaded by its probability."""
    tokens = out["tokens"]
    head = "".join(f"<th>{shown(t)}</th>" for t in tokens)
    body = []
    for layer, row in enumerate(out["cells"]):
        cells = "".join(
            f'<td title="p={c["prob"]:.3f}" '
            f'style="background:rgba(79,70,229,{min(1.0, c["prob"]) * 0.8:.3f})">'
            f"{shown(c['text'])}</td>"
            for c in row
        )
        body.append(f"<tr><th>{layer}</th>{cells}</tr>")
    return (
        '<div style="overflow:auto;max-height:520px"><table class="lens" style="font-size:0.75em;'
        'font-family:monospace;border-collapse:collapse"><thead><tr><th>layer</th>'
        f"{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )


def rise_html(out: dict) -> str:
    """The final answer's probability after each layer, as bars."""
    ans = out["answer"]
    rows = "".join(
        f'<div style="display:flex;gap:6px;align-items:center"><span style="width:5em">layer {i}'
        f'</span><span style="display:inline-block;height:0.8em;width:{p * 300:.1f}px;'
        f'background:#4f46e5"></span><span>{p:.3f}</span></div>'
        for i, p in enumerate(ans["by_layer"])
    )
    return (
        f"<div style='font-size:0.8em'><b>P(<code>{shown(ans['text'])}</code>) at the last "
        f"position, layer by layer</b>{rows}</div>"
    )


def neurons_html(out: dict) -> str:
    """The most active neurons per layer, and each token's strongest neurons."""
    layer_rows = "".join(
        "<tr><td>{}</td><td>{}</td></tr>".format(
            row[0]["layer"] if row else "",
            ", ".join(f"{n['neuron']} ({n['max']:.2f} at {n['at']})" for n in row),
        )
        for row in out["layers"]
    )
    token_rows = "".join(
        "<tr><td>{}</td><td>{}</td></tr>".format(
            shown(t["text"]),
            ", ".join(f"L{n['layer']}·{n['neuron']} ({n['activation']:.2f})" for n in t["neurons"]),
        )
        for t in out["tokens"]
    )
    return (
        "<p style='font-size:0.8em'>The first position is left out: the model parks huge "
        "activations there whatever the token (an attention sink).</p>"
        "<div style='display:flex;gap:16px;flex-wrap:wrap;font-size:0.8em'>"
        "<table><tr><th>layer</th><th>most active neurons (peak at position)</th></tr>"
        f"{layer_rows}</table>"
        f"<table><tr><th>token</th><th>strongest neurons</th></tr>{token_rows}</table></div>"
    )


def neuron_html(out: dict) -> str:
    """A neuron's top excerpts (the token highlighted) and its activation over a text."""
    top = max((e["activation"] for e in out["top"]), default=1.0) or 1.0
    rows = "".join(
        f"<tr><td>{e['activation']:.3f}</td><td style='font-family:monospace'>"
        f"{html.escape(e['before'])}<mark style='background:{_shade(e['activation'], top)}'>"
        f"{html.escape(e['token'])}</mark>{html.escape(e['after'])}</td></tr>"
        for e in out["top"]
    )
    text = ""
    if out.get("text"):
        scale = max((abs(t["activation"]) for t in out["text"][1:]), default=1.0) or 1.0
        spans = "".join(
            f"<span title='{t['activation']:.3f}' style='background:"
            f"{_shade(t['activation'] if i else None, scale)}'>{html.escape(t['text'])}</span>"
            for i, t in enumerate(out["text"])
        )
        text = (
            "<p><b>On your text</b> (first position left out):</p>"
            f"<div style='font-family:monospace'>{spans}</div>"
        )
    corpus = out.get("corpus", {})
    return (
        f"<p style='font-size:0.85em'><b>Layer {out['layer']}, neuron {out['neuron']}</b>: its top "
        f"activations over the reference corpus ({corpus.get('passages', '?')} passages).</p>"
        "<table style='font-size:0.8em'><tr><th>activation</th><th>context</th></tr>"
        f"{rows}</table>{text}"
    )


def reliability_html(out: dict) -> str:
    """Reliability diagram: per confidence bin, accuracy bar against the diagonal."""
    bars = []
    for b in out["bins"]:
        if not b["count"]:
            continue
        acc, conf = b["accuracy"], b["confidence"]
        bars.append(
            f'<div style="display:flex;gap:6px;align-items:center;font-size:0.8em">'
            f'<span style="width:7em">{b["low"]:.1f}–{b["high"]:.1f} ({b["count"]})</span>'
            f'<span style="position:relative;display:inline-block;width:300px;height:0.9em;'
            f'background:#eee"><span style="position:absolute;left:0;top:0;height:100%;'
            f'width:{acc * 300:.1f}px;background:#10b981"></span><span style="position:absolute;'
            f'left:{conf * 300:.1f}px;top:-2px;height:130%;width:2px;background:#111"></span>'
            f"</span><span>accuracy {acc:.2f} · confidence {conf:.2f}</span></div>"
        )
    marks = "".join(
        f"<li>{html.escape(name.replace('_', ' '))} {m['value']:.2f}: "
        + (f"in the {m['bin']['low']:.1f}–{m['bin']['high']:.1f} bin, where the model is right "
           f"{m['bin']['accuracy']:.0%} of the time" if m["bin"] else "no question landed there")
        + "</li>"
        for name, m in (out.get("threshold") or {}).items()
    )  # fmt: skip
    return (
        "<div><b>Reliability diagram</b>: green is how often the model was right in each "
        "confidence bin; the black tick is its mean confidence there. On the diagonal "
        f"(tick at the bar's end) it would be perfectly calibrated.</div>{''.join(bars)}"
        f"<ul style='font-size:0.8em'>{marks}</ul>"
    )


def calibration_summary(out: dict, other: dict | None = None) -> str:
    """Markdown: accuracy, chance, ECE; the other scoring side by side when it was run."""

    def line(o):
        return (
            f"| {o['scoring']} | {o['questions']} | {o['accuracy']:.0%} | {o['chance']:.0%} | "
            f"{o['mean_confidence']:.2f} | {o['ece']:.3f} |"
        )

    rows = [line(out)] + ([line(other)] if other else [])
    return (
        "| scoring | questions | accuracy | chance | mean confidence | ECE |\n"
        "|---|---|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n\n*cloze*: each option scored by its likelihood after the question; *letter*: the "
        "model asked to answer A–D through its chat template. A gap between them is format, "
        "not knowledge."
    )
