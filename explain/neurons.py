"""MLP neurons: which fire on a text, and what a chosen neuron fires on over a corpus.

A neuron here is one unit of a decoder block's MLP hidden layer: the input of
its output projection (Llama ``down_proj``, GPT-2 ``c_proj``). The first
position is left out everywhere: the model parks huge activations on it (an
"attention sink"), whatever the token, so it would top every list and teach
nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chat.errors import Cancelled, InputError
from explain.model_parts import find_parts, neuron_count, run_capturing

SKIP_FIRST = 1  # positions left out (the attention sink)
CORPUS_CHUNK = 128  # tokens per forward pass when indexing a corpus
TOP_EXAMPLES = 12  # activations kept per neuron
CONTEXT = 8  # tokens of context shown on each side of an activation


def activations(model, torch, ids: list[int], device) -> np.ndarray:
    """``layers x positions x neurons`` activations of ``ids`` (float32)."""
    taken = run_capturing(model, torch, ids, device, find_parts(model).neurons, inputs=True)
    return np.stack([t[0].float().cpu().numpy() for t in taken])


def text_neurons(
    acts: np.ndarray, pieces: list[str], per_layer: int = 5, per_token: int = 3
) -> dict:
    """The most active neurons of each layer, and each token's strongest neurons."""
    if acts.shape[1] <= SKIP_FIRST:
        raise InputError("text: give at least two tokens (the first position is left out)")
    body = acts[:, SKIP_FIRST:, :]
    layers = []
    for layer, a in enumerate(body):
        peak = a.max(axis=0)
        best = np.argsort(peak)[::-1][:per_layer]
        layers.append(
            [
                {"layer": layer, "neuron": int(n), "max": round(float(peak[n]), 4),
                 "at": int(a[:, n].argmax()) + SKIP_FIRST}
                for n in best
            ]
        )  # fmt: skip
    tokens = []
    for p in range(body.shape[1]):
        flat = body[:, p, :].reshape(-1)
        best = np.argsort(flat)[::-1][:per_token]
        width = body.shape[2]
        tokens.append(
            {
                "position": p + SKIP_FIRST,
                "text": pieces[p + SKIP_FIRST],
                "neurons": [
                    {"layer": int(i // width), "neuron": int(i % width),
                     "activation": round(float(flat[i]), 4)}
                    for i in best
                ],
            }
        )  # fmt: skip
    return {"skipped_first": SKIP_FIRST, "layers": layers, "tokens": tokens}


@dataclass
class NeuronIndex:
    """Top activations of every neuron over a corpus: what each neuron fires on."""

    model: str
    corpus_hash: str
    chunks: list[list[int]]  # the corpus as token-id chunks
    values: np.ndarray  # layers x neurons x TOP_EXAMPLES activations, largest first
    where: np.ndarray  # layers x neurons x TOP_EXAMPLES x 2 (chunk, position)

    def save(self, path: Path) -> None:
        """Write the index atomically (a temp file, then a rename)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        flat = np.concatenate([np.array(c, dtype=np.int64) for c in self.chunks])
        lengths = np.array([len(c) for c in self.chunks], dtype=np.int64)
        np.savez(tmp, values=self.values, where=self.where, flat=flat, lengths=lengths,
                 meta=np.array([self.model, self.corpus_hash]))  # fmt: skip
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> NeuronIndex:
        """Read an index written by ``save``."""
        with np.load(path, allow_pickle=False) as z:
            bounds = np.cumsum(z["lengths"])[:-1]
            chunks = [c.tolist() for c in np.split(z["flat"], bounds)]
            model, corpus_hash = (str(x) for x in z["meta"])
            return cls(model, corpus_hash, chunks, z["values"], z["where"])


def corpus_hash(texts: list[str], model: str) -> str:
    """Identifies an index: the model and the exact corpus."""
    h = hashlib.sha256(model.encode())
    for t in texts:
        h.update(b"\0" + t.encode("utf-8", "replace"))
    return h.hexdigest()[:16]


def build_index(model, torch, tokenize, texts: list[str], device, name: str,
                progress=None, cancel=None) -> NeuronIndex:  # fmt: skip
    """Run the corpus through the model in chunks and keep each neuron's top activations."""
    parts = find_parts(model)
    n_layers, width = len(parts.layers), neuron_count(parts)
    chunks = []
    for text in texts:
        ids = tokenize(text)
        for start in range(0, len(ids), CORPUS_CHUNK):
            piece = ids[start : start + CORPUS_CHUNK]
            if len(piece) > SKIP_FIRST + 1:
                chunks.append(piece)
    if not chunks:
        raise InputError("The reference corpus is empty: add documents or persona texts.")
    values = np.full((n_layers, width, TOP_EXAMPLES), -np.inf, dtype=np.float32)
    where = np.zeros((n_layers, width, TOP_EXAMPLES, 2), dtype=np.int32)
    for c, ids in enumerate(chunks):
        if cancel is not None and cancel.is_set():
            raise Cancelled("Building the neuron index stopped.")
        acts = activations(model, torch, ids, device)[:, SKIP_FIRST:, :]  # L x T x N
        # Each neuron's best position in this chunk joins its running top list.
        pos = acts.argmax(axis=1)  # L x N
        best = np.take_along_axis(acts, pos[:, None, :], axis=1)[:, 0, :]
        low = values[:, :, -1]
        better = best > low
        if better.any():
            values[:, :, -1] = np.where(better, best, low)
            where[:, :, -1, 0] = np.where(better, c, where[:, :, -1, 0])
            where[:, :, -1, 1] = np.where(better, pos + SKIP_FIRST, where[:, :, -1, 1])
            order = np.argsort(-values, axis=2)
            values = np.take_along_axis(values, order, axis=2)
            where = np.take_along_axis(where, order[..., None], axis=2)
        if progress is not None:
            progress((c + 1) / len(chunks), f"indexed {c + 1}/{len(chunks)} passages")
    return NeuronIndex(name, corpus_hash(texts, name), chunks, values, where)


def top_examples(index: NeuronIndex, layer: int, neuron: int, piece) -> list[dict]:
    """A neuron's top activations over the corpus, each with its context."""
    check_neuron(index.values.shape[0], index.values.shape[1], layer, neuron)
    out = []
    for value, (c, p) in zip(index.values[layer, neuron], index.where[layer, neuron], strict=True):
        if not np.isfinite(value):
            continue
        ids = index.chunks[int(c)]
        lo, hi = max(0, p - CONTEXT), min(len(ids), p + CONTEXT + 1)
        out.append(
            {
                "activation": round(float(value), 4),
                "token": piece(ids[p]),
                "before": "".join(piece(i) for i in ids[lo:p]),
                "after": "".join(piece(i) for i in ids[p + 1 : hi]),
                "chunk": int(c),
                "position": int(p),
            }
        )
    return out


def check_neuron(n_layers: int, width: int, layer, neuron) -> tuple[int, int]:
    """``(layer, neuron)`` as ints within the model, or a one-sentence error."""
    try:
        layer, neuron = int(layer), int(neuron)
    except (TypeError, ValueError):
        raise InputError("layer and neuron: give whole numbers") from None
    if not 0 <= layer < n_layers:
        raise InputError(f"layer: this model has {n_layers} layers; choose 0 to {n_layers - 1}")
    if not 0 <= neuron < width:
        raise InputError(f"neuron: each layer has {width} neurons; choose 0 to {width - 1}")
    return layer, neuron
