"""The parameter-efficient methods: which parameters of the base model learn.

LoRA, IA3, prefix tuning, prompt tuning and LN tuning come from ``peft``; BitFit (train the
biases only) is a few lines here, since peft has no config for it. Llama-style models have
no bias terms, so BitFit applies to GPT-2-style models only; LN tuning (the norm weights
only) is the closest thing on Llama.
"""

from __future__ import annotations

from training.errors import TrainingError
from training.settings import MethodSettings

BITFIT_FILE = "bitfit.safetensors"  # the trained biases (and head) of a BitFit adapter
HEADS = ("score", "classifier")  # a reward model's new head: always trained


def peft_config(settings: MethodSettings, task: str = "CAUSAL_LM"):
    """The ``peft`` config of a method (None for BitFit). ``task``: CAUSAL_LM or SEQ_CLS."""
    import peft

    m = settings.method
    targets = list(settings.target_modules) if settings.target_modules else None
    if m == "lora":
        return peft.LoraConfig(
            task_type=task,
            r=settings.lora_r,
            lora_alpha=settings.lora_alpha,
            lora_dropout=settings.lora_dropout,
            target_modules=targets or "all-linear",
        )
    if m == "ia3":
        # Without targets, peft's per-architecture defaults (attention keys/values and the
        # feed-forward output); given targets are rescaled on their outputs.
        return peft.IA3Config(task_type=task, target_modules=targets,
                              feedforward_modules=[] if targets else None)  # fmt: skip
    virtual = settings.num_virtual_tokens
    if m == "prefix":
        return peft.PrefixTuningConfig(task_type=task, num_virtual_tokens=virtual)
    if m == "prompt":
        return peft.PromptTuningConfig(task_type=task, num_virtual_tokens=virtual)
    if m == "ln":
        return peft.LNTuningConfig(task_type=task)
    return None  # bitfit


def apply_method(model, settings: MethodSettings, task: str = "CAUSAL_LM"):
    """``model`` ready to train with the method: a peft model, or (BitFit) the model itself with
    only its biases (and a reward head) trainable. Raises ``TrainingError`` when the model
    cannot take the method."""
    if settings.method == "bitfit":
        return bitfit(model)
    import peft

    try:
        return peft.get_peft_model(model, peft_config(settings, task))
    except (ValueError, KeyError, TypeError) as exc:
        arch = getattr(model.config, "model_type", "this model")
        raise TrainingError(
            f"{settings.method} cannot be applied to {arch} ({str(exc).splitlines()[0]}); "
            "choose LoRA, or name the target modules."
        ) from None


def bitfit(model):
    """Freeze everything but the bias terms (and a reward model's head)."""
    names = [n for n, _ in model.named_parameters() if n.endswith(".bias")]
    if not names:
        arch = getattr(model.config, "model_type", "this model")
        raise TrainingError(
            f"BitFit trains the bias terms, and {arch} has none (Llama-style models have no "
            "biases): choose LN tuning, which trains the norm weights only, or LoRA."
        )
    for n, p in model.named_parameters():
        p.requires_grad = n.endswith(".bias") or n.split(".")[0] in HEADS
    return model


def is_bitfit(model) -> bool:
    """Whether ``model`` was prepared by ``bitfit`` (not a peft model)."""
    return not hasattr(model, "peft_config")


def trainable_state(model) -> dict:
    """The trainable tensors of a BitFit model, by name (what its adapter file holds)."""
    return {n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def trainable_counts(model) -> tuple[int, int]:
    """``(trainable, total)`` parameters (prompt-learning virtual tokens included)."""
    if hasattr(model, "get_nb_trainable_parameters"):
        return tuple(int(x) for x in model.get_nb_trainable_parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
