""" "Let AI explain AI": a bigger model explains a neuron in words, and the words are scored.

The method (Bills et al., 2023, on GPT-2 neurons): show an explainer model a
neuron's top-activating excerpts with the activations marked, ask for a
one-line explanation; then ask a simulator (here the same engine) to predict,
from that explanation alone, the activation of every token of excerpts it has
not seen; the score is the correlation of predicted and real activations.

``complete(prompt) -> str`` is any text-completion function (a remote
OpenAI-compatible engine in the app); nothing here imports a client.
"""

from __future__ import annotations

import re

import numpy as np

from chat.errors import Cancelled, InputError

MAX_EXCERPTS = 6
SCALE = 10  # activations are shown and predicted on a 0..10 scale


def _scaled(values: list[float], top: float) -> list[int]:
    top = top if top > 0 else 1.0
    return [int(round(max(0.0, v) / top * SCALE)) for v in values]


def explanation_prompt(excerpts: list[dict], top: float) -> str:
    """The explainer's prompt: excerpts as ``token<<activation>>`` lines, 0..10."""
    lines = []
    for ex in excerpts[:MAX_EXCERPTS]:
        marked = [
            f"{t}<<{a}>>" if a else t
            for t, a in zip(ex["tokens"], _scaled(ex["activations"], top), strict=True)
        ]
        lines.append("".join(marked))
    return (
        "We are studying one neuron of a small language model. In each excerpt below, tokens "
        f"where the neuron fires are followed by <<activation>> on a 0-{SCALE} scale.\n\n"
        + "\n".join(f"Excerpt {i + 1}: {line}" for i, line in enumerate(lines))
        + "\n\nIn one short line, what does this neuron respond to? Answer with the "
        "explanation only."
    )


def simulation_prompt(explanation: str, tokens: list[str]) -> str:
    """The simulator's prompt: predict 0..10 for each numbered token from the explanation."""
    listing = "\n".join(f"{i}\t{t!r}" for i, t in enumerate(tokens))
    return (
        f"A neuron of a language model responds to: {explanation}\n"
        f"For each numbered token below, predict the neuron's activation from 0 to {SCALE}. "
        "Reply with one line per token: the number, a tab, the activation.\n\n" + listing
    )


def parse_simulation(text: str, n: int) -> list[float]:
    """Predicted activations by token number (missing ones are 0)."""
    out = [0.0] * n
    for line in text.splitlines():
        m = re.match(r"\s*(\d+)\s*[\t:,.)\-]*\s*.*?(\d+(?:\.\d+)?)\s*$", line)
        if m and int(m.group(1)) < n:
            out[int(m.group(1))] = min(float(SCALE), float(m.group(2)))
    return out


def explain_and_score(complete, train: list[dict], held_out: list[dict], cancel=None) -> dict:
    """Ask for an explanation from ``train`` excerpts; score it on ``held_out`` ones.

    Each excerpt is ``{tokens: [str], activations: [float]}``.
    """
    if not train or not held_out:
        raise InputError("Explaining a neuron needs its top excerpts: build the index first.")
    top = max(max(ex["activations"]) for ex in train + held_out)
    explanation = complete(explanation_prompt(train, top)).strip().splitlines()
    explanation = explanation[0].strip() if explanation else ""
    if not explanation:
        raise InputError("The engine gave no explanation; try again or use a larger model.")
    real, predicted = [], []
    for ex in held_out:
        if cancel is not None and cancel.is_set():
            raise Cancelled("Explaining the neuron stopped.")
        reply = complete(simulation_prompt(explanation, ex["tokens"]))
        predicted += parse_simulation(reply, len(ex["tokens"]))
        real += _scaled(ex["activations"], top)
    return {"explanation": explanation, "score": round(correlation(real, predicted), 4),
            "scored_tokens": len(real)}  # fmt: skip


def correlation(a: list[float], b: list[float]) -> float:
    """Pearson correlation; 0 when either side is constant."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])
