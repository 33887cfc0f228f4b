"""Retrieval settings: one pydantic model that drives the UI controls and the API."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chat.errors import SettingsError
from chat.validation import describe


class RetrievalSettings(BaseModel):
    """How passages are picked for a question."""

    model_config = ConfigDict(extra="forbid")

    top_k: int = Field(4, ge=1, le=20, description="How many passages to put in the prompt.")
    min_score: float = Field(
        0.2, ge=0.0, le=1.0, description="Leave out passages less similar than this (cosine)."
    )
    mmr: bool = Field(
        False, description="Maximal marginal relevance: prefer passages unlike each other."
    )
    mmr_lambda: float = Field(
        0.5, ge=0.0, le=1.0, description="MMR balance: 1 = only relevance, 0 = only diversity."
    )
    prompt_format: Literal["auto", "reference-blocks", "question-last", "focused", "single"] = (
        Field(
            "auto",
            description="How passages enter the prompt (chat/rag_formats.py): 'auto' picks the "
            "format that scored best for this kind of model (chat template or not) in "
            "bench/eval_rag.py; 'focused' keeps only the 2 best passages, cut to their "
            "sentences nearest the question.",
        )
    )


def parse_retrieval(raw: dict | RetrievalSettings | None) -> RetrievalSettings:
    """Validate retrieval settings; errors name the field."""
    if isinstance(raw, RetrievalSettings):
        return raw
    try:
        return RetrievalSettings.model_validate(raw or {})
    except ValidationError as exc:
        raise SettingsError(
            describe(exc, RetrievalSettings, prefix="Invalid retrieval settings: ", noun="setting")
        ) from None
