"""Where the parts of a causal LM live: decoder layers, final norm, output head, MLP neurons.

Llama-style models (SmolLM2, Llama, Mistral, Qwen) and GPT-2-style ones name
them differently; every explain view goes through these few functions.
"""

from __future__ import annotations

from dataclasses import dataclass

from chat.errors import UnsupportedSettingError


@dataclass
class Parts:
    """The modules the explain views hook into."""

    layers: list  # decoder blocks, first to last
    norm: object  # the final norm applied before the output head
    head: object  # the output head (hidden state -> logits)
    neurons: list  # per layer, the module whose *input* is the MLP's neuron activations


def find_parts(model) -> Parts:
    """Locate the decoder blocks, final norm, head and MLP output projections of ``model``."""
    base = getattr(model, "model", None) or getattr(model, "transformer", None)
    layers = getattr(base, "layers", None) or getattr(base, "h", None)
    norm = getattr(base, "norm", None) or getattr(base, "ln_f", None)
    head = model.get_output_embeddings()
    if layers is None or norm is None or head is None:
        raise UnsupportedSettingError(
            f"Not available for this model: the explain views know Llama- and GPT-2-style "
            f"models, not {type(model).__name__}."
        )
    neurons = []
    for block in layers:
        mlp = block.mlp
        neurons.append(getattr(mlp, "down_proj", None) or getattr(mlp, "c_proj", None))
    if any(n is None for n in neurons):
        raise UnsupportedSettingError(
            "Not available for this model: no MLP output projection found in "
            f"{type(model).__name__}."
        )
    return Parts(list(layers), norm, head, neurons)


def run_capturing(model, torch, ids: list[int], device, modules, inputs: bool) -> list:
    """Run ``ids`` through ``model``; what each of ``modules`` took in (``inputs``) or gave out."""
    captured = []

    def took(_module, args):
        captured.append(args[0])

    def gave(_module, _args, output):
        captured.append(output[0] if isinstance(output, tuple) else output)

    hooks = [
        m.register_forward_pre_hook(took) if inputs else m.register_forward_hook(gave)
        for m in modules
    ]
    try:
        with torch.inference_mode():
            model(input_ids=torch.tensor([ids], device=device), use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    return captured


def neuron_count(parts: Parts) -> int:
    """Neurons per layer: the width of the MLP's hidden layer."""
    proj = parts.neurons[0]
    weight = proj.weight
    # nn.Linear stores (out, in); GPT-2's Conv1D stores (in, out).
    return int(weight.shape[1] if type(proj).__name__ != "Conv1D" else weight.shape[0])
