"""Decoding settings: one pydantic model that drives the UI controls and the API.

Bounds and descriptions live on the fields, so the sliders in the UI and the
validation of ``/chat`` can never disagree. Hugging Face ``generate()`` names
(``do_sample``, ``beam_width``, ``max_length``) are accepted too, because users
arrive with settings copied from ``pipeline('text-generation')`` examples.
"""

from __future__ import annotations

from importlib import resources
from typing import Any, Literal

import yaml
from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from chat.errors import SettingsError
from chat.validation import describe

Strategy = Literal["greedy", "sample", "beam"]
STRATEGIES: tuple[str, ...] = ("greedy", "sample", "beam")
MAX_CANDIDATES = 4
# What each strategy leaves unused: the UI greys these out and a reply does not record them.
IGNORED_BY: dict[str, tuple[str, ...]] = {
    "greedy": ("temperature", "top_p", "top_k", "num_beams"),
    "sample": ("num_beams",),
    "beam": ("temperature", "top_p", "top_k"),
}


class DecodingSettings(BaseModel):
    """How the model picks its next tokens."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    strategy: Strategy = Field(
        "sample",
        description="greedy: always the most likely token; sample: draw at random "
        "(temperature, top_p, top_k); beam: keep num_beams hypotheses.",
    )
    temperature: float = Field(
        0.7, ge=0.0, le=2.0, description="Sampling temperature; higher is more random."
    )
    top_p: float = Field(
        0.9,
        gt=0.0,
        le=1.0,
        description="Nucleus sampling: keep the smallest set of tokens "
        "whose probabilities add up to top_p.",
    )
    top_k: int = Field(
        40, ge=0, le=200, description="Keep only the k most likely tokens (0 = off)."
    )
    repetition_penalty: float = Field(
        1.1, ge=0.5, le=2.0, description="Above 1 discourages repeating tokens already seen."
    )
    max_new_tokens: int = Field(256, ge=1, le=2048, description="Longest reply, in tokens.")
    max_length: int | None = Field(
        None,
        ge=1,
        le=32768,
        description="Hugging Face style cap on prompt + reply tokens; the reply gets "
        "at most max_length minus the prompt length (and never more than max_new_tokens).",
    )
    num_return_sequences: int = Field(
        1, ge=1, le=MAX_CANDIDATES, description="How many candidate replies to generate."
    )
    num_beams: int = Field(1, ge=1, le=8, description="Beam width for beam search.")
    seed: int | None = Field(
        None, ge=0, le=2**32 - 1, description="Random seed; empty picks one and records it."
    )
    stop: list[str] = Field(
        default_factory=list, max_length=8, description="Strings that end the reply."
    )

    @model_validator(mode="before")
    @classmethod
    def _accept_hf_names(cls, data: Any) -> Any:
        """Translate Hugging Face generate() names into ours."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "beam_width" in data:
            data.setdefault("num_beams", data.pop("beam_width"))
        do_sample = data.pop("do_sample", None)
        if "strategy" not in data:
            beams = data.get("num_beams", 1)
            if do_sample is True:
                data["strategy"] = "sample"
            elif isinstance(beams, int) and beams > 1:
                data["strategy"] = "beam"
            elif do_sample is False:
                data["strategy"] = "greedy"
        if isinstance(data.get("stop"), str):
            data["stop"] = [data["stop"]] if data["stop"] else []
        return data

    def applied(self) -> dict:
        """The settings as a dict, without those the strategy ignores (``IGNORED_BY``)."""
        return self.model_dump(exclude=set(IGNORED_BY[self.strategy]))

    @model_validator(mode="after")
    def _consistent(self) -> DecodingSettings:
        if any(not s for s in self.stop):
            raise ValueError("stop: empty stop strings are not allowed")
        if self.strategy == "beam":
            if self.num_beams < 2:
                raise ValueError("num_beams: beam search needs num_beams of at least 2")
            if self.num_return_sequences > self.num_beams:
                raise ValueError(
                    "num_return_sequences: beam search returns at most num_beams candidates"
                )
        elif self.strategy == "greedy" and self.num_return_sequences > 1:
            raise ValueError(
                "num_return_sequences: greedy decoding gives the same reply every time; "
                "use strategy 'sample' or 'beam' for several candidates"
            )
        return self


def parse_settings(raw: dict | DecodingSettings | None, base: DecodingSettings | None = None):
    """Validate user settings (merged over ``base``); errors name the offending field."""
    if isinstance(raw, DecodingSettings):
        return raw
    merged = (base or DecodingSettings()).model_dump(exclude_unset=True)
    if raw:
        if not isinstance(raw, dict):
            raise SettingsError(f"settings must be an object of field: value, got {raw!r}")
        if "strategy" not in raw and ({"do_sample", "beam_width", "num_beams"} & raw.keys()):
            merged.pop("strategy", None)
        merged.update(raw)
    try:
        return DecodingSettings.model_validate(merged)
    except ValidationError as exc:
        raise SettingsError(
            describe(exc, DecodingSettings, prefix="Invalid decoding settings: ", noun="setting")
        ) from None


def field_bounds(name: str, model: type[BaseModel] | None = None) -> dict[str, Any]:
    """``minimum``, ``maximum``, ``default`` and ``info`` of a numeric field, for UI sliders."""
    field = (model or DecodingSettings).model_fields[name]
    out: dict[str, Any] = {"default": field.default, "info": field.description}
    for meta in field.metadata:
        if isinstance(meta, (Ge, Gt)):
            out["minimum"] = getattr(meta, "ge", None) if isinstance(meta, Ge) else meta.gt
        if isinstance(meta, (Le, Lt)):
            out["maximum"] = getattr(meta, "le", None) if isinstance(meta, Le) else meta.lt
    return out


def load_presets() -> dict[str, DecodingSettings]:
    """Load the shipped presets (``chat/presets.yaml``), validated."""
    text = resources.files("chat").joinpath("presets.yaml").read_text(encoding="utf-8")
    raw = yaml.safe_load(text) or {}
    return {name: parse_settings(values) for name, values in raw.items()}
