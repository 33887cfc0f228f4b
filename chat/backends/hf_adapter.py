"""A trained adapter on a transformers model, for chatting and inspecting.

An adapter folder is what the app's training saves (``training/``): a peft adapter
(``adapter_config.json`` + weights) or BitFit's trained biases (``bitfit.safetensors``),
with ``adapter_meta.json`` naming the base model and, for a DPO run started from an SFT
adapter, that adapter (``start_from``, a sibling folder), which goes in first.

The result is always the plain transformers model class, so every Inspect and Explain
view finds its layers where it expects them: merged (the low-rank update added into the
weights), or applied (peft's layers wrapped around the untouched base weights).
"""

from __future__ import annotations

import json
from pathlib import Path

from chat.errors import ModelLoadError

META = "adapter_meta.json"
BITFIT_FILE = "bitfit.safetensors"
_PROMPT_LEARNING = {"PREFIX_TUNING", "PROMPT_TUNING", "P_TUNING", "MULTITASK_PROMPT_TUNING"}


def read_meta(folder: Path) -> dict:
    """The adapter's ``adapter_meta.json`` ({} when it has none, e.g. a bare peft folder)."""
    path = Path(folder) / META
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise ModelLoadError(
            f"The adapter's {META} is damaged; train it again or pick another adapter."
        ) from None


def adapter_name(folder: Path) -> str:
    """How the adapter is shown: its name from the meta, else its folder's name."""
    return str(read_meta(folder).get("name") or Path(folder).name)


def apply_adapter(model, folder: str | Path, merge: bool = True, _depth: int = 0):
    """``model`` with the adapter in ``folder`` in it; raises ``ModelLoadError`` with a fix."""
    folder = Path(folder)
    meta = read_meta(folder)
    if meta.get("kind") == "reward":
        raise ModelLoadError(
            f"{adapter_name(folder)} is a reward model: it scores replies, it does not write "
            "them. Pick an SFT or DPO adapter to chat with."
        )
    parent = meta.get("start_from")
    if parent:
        if _depth > 4:
            raise ModelLoadError(f"{folder.name}: its chain of start_from adapters is too long.")
        model = apply_adapter(model, folder.parent / parent, merge=True, _depth=_depth + 1)
    if (folder / BITFIT_FILE).is_file():
        return _bitfit(model, folder)
    if not (folder / "adapter_config.json").is_file():
        raise ModelLoadError(
            f"No adapter in {folder.name} (no adapter_config.json); pick a trained adapter "
            "from the list."
        )
    config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    if config.get("peft_type") in _PROMPT_LEARNING:
        raise ModelLoadError(
            "Prefix and prompt tuning add virtual tokens in front of every prompt, which the "
            "chat and its per-token views cannot show; chat with a LoRA, IA3 or LN tuning "
            "adapter, or compare this one on the Train tab's before/after view."
        )
    try:
        from peft import PeftModel
    except ImportError:
        raise ModelLoadError(
            "Chatting with an adapter needs peft: pip install -r requirements.txt"
        ) from None
    _unmark_quantized(model)
    try:
        tuned = PeftModel.from_pretrained(model, str(folder))
    except Exception as exc:  # wrong base model: shapes or module names do not match
        base = meta.get("base_model", "named in its adapter_meta.json")
        raise ModelLoadError(
            f"The adapter {adapter_name(folder)} does not fit this model ({type(exc).__name__}: "
            f"{exc}); load the base model it was trained on ({Path(str(base)).name})."
        ) from None
    return tuned.merge_and_unload() if merge else tuned.get_base_model()


def adapter_tokenizer(folder: str | Path):
    """The tokenizer saved with the adapter (its chat template as trained), or None."""
    folder = Path(folder)
    if not (folder / "tokenizer_config.json").is_file():
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except Exception as exc:  # a damaged copy: say so rather than chat with another template
        raise ModelLoadError(
            f"The tokenizer saved with {adapter_name(folder)} does not load ({exc}); "
            "train the adapter again."
        ) from None


def _bitfit(model, folder: Path):
    """Load BitFit's trained tensors (biases, maybe the head) over the model's own."""
    from safetensors.torch import load_file

    result = model.load_state_dict(load_file(str(folder / BITFIT_FILE)), strict=False)
    if result.unexpected_keys:
        raise ModelLoadError(
            f"The BitFit adapter {adapter_name(folder)} does not fit this model; load the base "
            "model it was trained on."
        )
    return model


def _unmark_quantized(model) -> None:
    """A GGUF model dequantized by transformers is plain fp32 but marked quantized; peft
    would then refuse to merge into it. (``training.model.unmark_quantized`` does the same
    for training; the chat runtime does not import the training package.)"""
    if getattr(model, "hf_quantizer", None) is None and not getattr(model, "is_quantized", False):
        return
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.quantization_method = None
