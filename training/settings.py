"""What a training run is asked to do: the method (LoRA, IA3, prefix and prompt tuning, LN
tuning, BitFit) and the run (SFT, reward model or DPO; steps, batch, lengths, split).

Bounded pydantic models with a description on every field: the Train tab builds its form
from them and the API validates against them, so the two can never disagree.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Method = Literal["lora", "ia3", "prefix", "prompt", "ln", "bitfit"]
Kind = Literal["sft", "reward", "dpo"]

METHOD_NAMES = {
    "lora": "LoRA (low-rank adapters)",
    "ia3": "IA3 (learned rescaling vectors)",
    "prefix": "Prefix tuning (learned keys and values at every layer)",
    "prompt": "Prompt tuning (learned virtual tokens at the input)",
    "ln": "LN tuning (norm weights only)",
    "bitfit": "BitFit (biases only; GPT-2-style models)",
}

# A learning rate that trains each method in tens of steps on the bundled 135M model. Prompt
# and prefix tuning change a few virtual tokens, so they need far larger steps than LoRA.
DEFAULT_LR = {
    "lora": 1e-3,
    "ia3": 1e-2,
    "prefix": 1e-2,
    "prompt": 3e-2,
    "ln": 3e-3,
    "bitfit": 3e-3,
}


class MethodSettings(BaseModel):
    """The parameter-efficient method and its own knobs."""

    model_config = ConfigDict(extra="forbid")

    method: Method = Field(
        "lora",
        description="Which parameters learn: LoRA adds small low-rank matrices; IA3 learns "
        "scaling vectors; prefix tuning learns keys and values; prompt tuning learns input "
        "tokens; LN tuning trains the norm weights; BitFit trains the biases (GPT-2 only).",
    )
    lora_r: int = Field(8, ge=1, le=64, description="LoRA rank: the width of each added matrix.")
    lora_alpha: int = Field(
        16, ge=1, le=128, description="LoRA alpha: the update is scaled by alpha / rank."
    )
    lora_dropout: float = Field(
        0.05, ge=0.0, le=0.5, description="LoRA dropout on the adapter's input while training."
    )
    target_modules: list[str] | None = Field(
        None,
        description="Layer names LoRA or IA3 adapts (e.g. q_proj, v_proj); empty means every "
        "linear layer.",
    )
    num_virtual_tokens: int = Field(
        8, ge=1, le=64, description="Prefix and prompt tuning: how many virtual tokens learn."
    )


class TrainSettings(BaseModel):
    """One training run."""

    model_config = ConfigDict(extra="forbid")

    kind: Kind = Field(
        "sft",
        description="sft: learn to write the replies; reward: learn to score replies from "
        "preference pairs; dpo: learn to prefer the chosen reply over the rejected one.",
    )
    method: MethodSettings = Field(
        default_factory=MethodSettings, description="The parameter-efficient method."
    )
    learning_rate: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="Step size; empty uses the method's default (prefix and prompt tuning need "
        "a far higher one than LoRA).",
    )
    epochs: int = Field(3, ge=1, le=10, description="Passes over the training split.")
    max_steps: int | None = Field(
        None, ge=1, le=2000, description="Stop after this many steps (overrides epochs)."
    )
    batch_size: int = Field(4, ge=1, le=16, description="Examples (or pairs) per step.")
    max_length: int = Field(
        256, ge=16, le=2048, description="Tokens per example, chat template included."
    )
    overlong: Literal["truncate", "drop"] = Field(
        "truncate", description="What happens to an example longer than max_length."
    )
    eval_share: float = Field(
        0.1, ge=0.0, le=0.5, description="Share of the examples held out for evaluation."
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed of the split and the training.")
    threads: int = Field(
        1, ge=1, le=16, description="CPU threads torch may use for training (chat keeps the rest)."
    )
    eval_every: int = Field(
        10, ge=1, le=1000, description="Evaluate and save a checkpoint every this many steps."
    )
    beta: float = Field(
        0.1,
        ge=0.01,
        le=1.0,
        description="DPO: how far the tuned model may move from the reference (small = far).",
    )
    start_from: str | None = Field(
        None, description="Adapter id to start from (DPO or reward from an SFT adapter)."
    )

    def lr(self) -> float:
        """The learning rate this run uses."""
        return self.learning_rate or DEFAULT_LR[self.method.method]
