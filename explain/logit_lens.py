"""The logit lens: read the next-token prediction out of every layer.

After each decoder block the hidden state is put through the model's final
norm and output head, as if the model stopped there. Early layers predict
generic tokens; the answer forms somewhere in the middle. The last row is
exactly the model's real next-token distribution.
"""

from __future__ import annotations

import numpy as np

from chat.probs import log_softmax
from explain.model_parts import find_parts, run_capturing

MAX_LENS_TOKENS = 64  # a wider table is unreadable


def hidden_states(model, torch, ids: list[int], device) -> list:
    """The residual stream after every decoder block (pre final norm), one tensor per layer."""
    return run_capturing(model, torch, ids, device, find_parts(model).layers, inputs=False)


def lens(model, torch, tokenizer_piece, ids: list[int], device, answer: int | None = None) -> dict:
    """Per layer and position: the top token and its probability; the answer's rise at the end.

    ``answer`` is a token id to follow layer by layer at the last position
    (default: the model's final top token there).
    """
    parts = find_parts(model)
    states = hidden_states(model, torch, ids, device)
    with torch.inference_mode():
        rows = []
        for h in states:
            logits = parts.head(parts.norm(h))[0].float().cpu().numpy()  # positions x vocab
            lp = np.stack([log_softmax(row) for row in logits])
            best = lp.argmax(axis=1)
            rows.append(
                [
                    {
                        "id": int(b),
                        "text": tokenizer_piece(int(b)),
                        "prob": round(float(np.exp(lp[p, b])), 4),
                    }
                    for p, b in enumerate(best)
                ]
            )
    final = rows[-1][-1]["id"] if answer is None else int(answer)
    with torch.inference_mode():
        rise = []
        for h in states:
            logits = parts.head(parts.norm(h[:, -1:]))[0, -1].float().cpu().numpy()
            rise.append(round(float(np.exp(log_softmax(logits)[final])), 5))
    return {
        "tokens": [tokenizer_piece(int(i)) for i in ids],
        "layers": len(states),
        "cells": rows,  # cells[layer][position] = {id, text, prob}: after layer 0..N-1
        "answer": {"id": final, "text": tokenizer_piece(final), "by_layer": rise},
    }


def last_position_logprobs(model, torch, ids: list[int], device) -> list[np.ndarray]:
    """Per layer, the full next-token log-distribution the lens reads at the last position."""
    parts = find_parts(model)
    out = []
    with torch.inference_mode():
        for h in hidden_states(model, torch, ids, device):
            logits = parts.head(parts.norm(h[:, -1:]))[0, -1].float().cpu().numpy()
            out.append(log_softmax(logits))
    return out
