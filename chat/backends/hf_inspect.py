"""What a transformers model shows of its insides: raw logits, scores, attention.

- While streaming, a forward hook on the output layer keeps each step's raw
  logits (the model's own distribution, before any sampler step), so every
  generated token gets its probability and alternatives.
- For several candidates or beams, ``generate(output_logits=True)`` keeps the
  raw logits of every step; a beam's token at step t was scored on row
  ``beam_indices[t]``.
- Attention needs the eager implementation (sdpa returns no weights): the
  model is switched for that one forward pass and back.
"""

from __future__ import annotations

import queue

import numpy as np

from chat.probs import TRANSFORMERS_ORDER, apply_sampler, batch_stats, token_info


class LogitsTap:
    """A forward hook that queues the raw logits of the last position at each step."""

    def __init__(self, model):
        self.rows: queue.Queue = queue.Queue()
        layer = model.get_output_embeddings()
        self._handle = layer.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        logits = output[0] if isinstance(output, tuple) else output
        self.rows.put(logits[:, -1, :].detach().float().cpu().numpy())

    def next_row(self) -> np.ndarray:
        """The raw logits of the next step (batch row 0)."""
        return self.rows.get(timeout=60)[0]

    def close(self) -> None:
        """Remove the hook."""
        self._handle.remove()


def info_for(backend, logits: np.ndarray, token: int, text: str, request, seen: list[int]):
    """The TokenInfo of ``token`` picked from raw ``logits``, with the sampler's view."""
    s = request.settings
    sampler = apply_sampler(
        logits,
        "greedy" if s.strategy == "beam" else s.strategy,
        s.temperature,
        s.top_k,
        s.top_p,
        s.repetition_penalty,
        seen,
        TRANSFORMERS_ORDER,
        penalty_last_n=None,
    )
    if s.strategy == "beam":
        sampler = None  # beams keep several hypotheses: no single sampler distribution
    return token_info(logits, token, request.top_logprobs, backend.piece, text, sampler)


def candidate_infos(backend, out, prompt_len: int, request, rows: list[list[int]]):
    """TokenInfos for each returned sequence of a ``generate(output_logits=True)`` call."""
    beams = getattr(out, "beam_indices", None)
    result = []
    for r, ids in enumerate(rows):
        pieces = pieces_of(backend.tokenizer, ids)
        seen = list(out.sequences[r, :prompt_len].tolist())
        infos = []
        for t, (token, piece) in enumerate(zip(ids, pieces, strict=True)):
            row = r if beams is None else int(beams[r, t])
            if row < 0:
                break
            logits = out.logits[t][row].float().cpu().numpy()
            infos.append(info_for(backend, logits, token, piece, request, seen))
            seen.append(token)
        result.append(infos)
    return result


def pieces_of(tokenizer, ids: list[int]) -> list[str]:
    """Each token's share of the decoded text ("" while a character is incomplete)."""
    pieces, prefix, read = [], 0, 0
    for i in range(len(ids)):
        before = tokenizer.decode(ids[prefix:read], skip_special_tokens=True)
        after = tokenizer.decode(ids[prefix : i + 1], skip_special_tokens=True)
        if len(after) > len(before) and not after.endswith("\ufffd"):
            pieces.append(after[len(before) :])
            prefix, read = read, i + 1
        else:
            pieces.append("")
    return pieces


def next_logits(model, torch, ids: list[int], device) -> np.ndarray:
    """Raw logits for the position after ``ids``."""
    with torch.inference_mode():
        x = torch.tensor([ids], dtype=torch.long, device=device)
        out = model(input_ids=x, logits_to_keep=1)
    return out.logits[0, -1].float().cpu().numpy()


def score(model, torch, ids: list[int], first: int, device) -> tuple[np.ndarray, np.ndarray]:
    """Log-probability and entropy of each token ``ids[i]``, ``i >= first``, given the rest."""
    first = max(1, first)
    with torch.inference_mode():
        x = torch.tensor([ids], dtype=torch.long, device=device)
        logits = model(input_ids=x).logits[0, first - 1 : len(ids) - 1].float().cpu().numpy()
    return batch_stats(logits, ids[first:])


def attention(model, torch, ids: list[int], layer: int, device) -> tuple[np.ndarray, int]:
    """``(heads x n x n weights of layer, number of layers)`` with eager attention."""
    before = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.inference_mode():
            x = torch.tensor([ids], dtype=torch.long, device=device)
            out = model(input_ids=x, output_attentions=True)
    finally:
        model.set_attn_implementation(before)
    layers = out.attentions
    n = len(layers)
    if not -n <= layer < n:
        from chat.errors import InputError

        raise InputError(f"layer: this model has {n} layers; choose 0 to {n - 1} (-1: the last)")
    return layers[layer][0].float().cpu().numpy(), n
