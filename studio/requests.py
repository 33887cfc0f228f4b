"""What each named endpoint accepts: one bounded pydantic model per endpoint.

Gradio hands a script's JSON to the handler as it came, so ``top_k: "abc"``
or an object where text belongs reaches our code unless something checks it
first. Every endpoint validates its arguments here before any work; a
mistake comes back as one sentence naming the field and what to send
instead, never a Python or pydantic message.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError

from chat.errors import InputError
from chat.text import drop_surrogates
from chat.validation import describe

M = TypeVar("M", bound=BaseModel)
MAX_NAME_CHARS = 200
MAX_TEXT_CHARS = 2_000_000  # the limits refuse long texts with their own sentence

def _no_lone_surrogates(value):
    """JSON may carry a lone surrogate escape; it is dropped here, as everywhere else."""
    return drop_surrogates(value) if isinstance(value, str) else value


Text = Annotated[str, BeforeValidator(_no_lone_surrogates), Field(max_length=MAX_TEXT_CHARS)]
Name = Annotated[str, BeforeValidator(_no_lone_surrogates), Field(max_length=MAX_NAME_CHARS)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ChatRequest(_Request):
    """``/chat``: the arguments besides the inspection options (``InspectOptions``)."""

    message: Text = Field(description="The user's message.")
    history: list[Any] | None = Field(None, max_length=100_000, description="Earlier turns.")
    persona: Name = Field("assistant", description="A persona id (see /personas).")
    settings: dict[str, Any] | None = Field(None, description="Decoding settings.")
    use_rag: bool = Field(False, description="Search the documents for passages.")
    retrieval: dict[str, Any] | None = Field(None, description="Retrieval settings.")
    persona_card: Text | None = Field(None, description="A persona card of your own (YAML).")
    user_name: Annotated[str, Field(max_length=1000)] = Field(
        "User", description="What {{user}} stands for."
    )


class NextTokenRequest(_Request):
    """``/next_token``."""

    text: Text = Field(description="The text (or, with template, the user's message).")
    top_k: int = Field(10, ge=1, le=50, description="How many candidates to show.")
    settings: dict[str, Any] | None = Field(None, description="Decoding settings.")
    template: bool = Field(False, description="Render text as a chat turn first.")
    persona: Name = Field("assistant", description="A persona id (see /personas).")
    reply_so_far: Text = Field("", description="The assistant's reply so far (template).")
    history: list[Any] | None = Field(None, max_length=100_000, description="Earlier turns.")


class TextRequest(_Request):
    """``/perplexity``: a text."""

    text: Text = Field(description="The text to score.")


class AttentionRequest(_Request):
    """``/attention``: the model checks layer and head against its own shape."""

    text: Text = Field(description="The text to look at.")
    layer: int = Field(-1, ge=-4096, le=4095, description="A layer (-1: the last).")
    head: int | None = Field(None, ge=0, le=4095, description="A head (null: the average).")


class RetrieveRequest(_Request):
    """``/retrieve``."""

    query: Text = Field(description="What to search the documents for.")
    k: int = Field(4, ge=1, le=20, description="How many passages.")


class DeleteDocumentRequest(_Request):
    """``/delete_document``."""

    doc_hash: Annotated[str, Field(min_length=1, max_length=128)] = Field(
        description="The document's doc_hash (see /documents)."
    )
    shared: bool = Field(False, description="A document of the shared base (admins only).")


class IngestRequest(_Request):
    """``/ingest``: the files come as uploads."""

    shared: bool = Field(False, description="Into the shared base (admins only).")


def parse_request(model: type[M], **values) -> M:
    """``values`` validated by ``model``; else ``InputError`` with one sentence."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise InputError(describe(exc, model)) from None


def whole_number(value: object, field: str, low: int, high: int) -> int:
    """``value`` as an int from ``low`` to ``high`` (a page control's float too)."""
    adapter = TypeAdapter(Annotated[int, Field(ge=low, le=high)])
    try:
        return adapter.validate_python(value)
    except ValidationError:
        raise InputError(f"{field}: send a whole number from {low} to {high}.") from None
