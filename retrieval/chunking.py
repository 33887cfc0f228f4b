"""Splitting document sections into chunks measured in embedder tokens."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from pydantic import BaseModel, ConfigDict, Field, model_validator

from retrieval.types import Chunk, Section

MARKDOWN_SUFFIXES = (".md", ".markdown")
_HEADERS = [("#", "h1"), ("##", "h2"), ("###", "h3")]


class ChunkSettings(BaseModel):
    """How documents are cut into chunks before embedding."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    chunk_size: int = Field(
        200,
        ge=32,
        le=512,
        description="Largest chunk, in embedding-model tokens; smaller chunks give "
        "more precise passages, larger ones more context.",
    )
    chunk_overlap: int = Field(
        40,
        ge=0,
        le=256,
        description="Tokens shared by neighbouring chunks, so a fact cut at a chunk "
        "boundary still appears whole in one of them (at most half of chunk_size).",
    )

    @model_validator(mode="after")
    def _overlap_below_size(self) -> ChunkSettings:
        # A larger overlap multiplies the chunks (and the work) of every document.
        if self.chunk_overlap > self.chunk_size // 2:
            raise ValueError(
                f"chunk_overlap: may be at most half of chunk_size ({self.chunk_size // 2}), "
                f"got {self.chunk_overlap}"
            )
        return self


def chunk_sections(
    sections: list[Section],
    suffix: str,
    settings: ChunkSettings,
    count_tokens: Callable[[str], int],
) -> list[Chunk]:
    """Cut ``sections`` into chunks of at most ``settings.chunk_size`` tokens, numbered from 0."""
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    length = lru_cache(maxsize=8192)(count_tokens)
    splitter = RecursiveCharacterTextSplitter(
        chunk_size=settings.chunk_size,
        chunk_overlap=settings.chunk_overlap,
        length_function=length,
    )
    markdown = suffix.lower() in MARKDOWN_SUFFIXES
    chunks: list[Chunk] = []
    for section in sections:
        parts = _markdown_parts(section) if markdown else [section]
        for part in parts:
            for text in splitter.split_text(part.text):
                for piece in _enforce_size(text, settings.chunk_size, length):
                    if piece.strip():
                        chunks.append(Chunk(piece, len(chunks), part.page, part.section))
    return chunks


def _markdown_parts(section: Section) -> list[Section]:
    """Split one section at #, ## and ### headers, recording the header path."""
    from langchain_text_splitters import MarkdownHeaderTextSplitter

    splitter = MarkdownHeaderTextSplitter(_HEADERS, strip_headers=False)
    parts = []
    for doc in splitter.split_text(section.text):
        path = " > ".join(doc.metadata[key] for _, key in _HEADERS if doc.metadata.get(key))
        # The splitter strips every line and joins paragraphs with "  \n"; since real
        # trailing spaces are already gone, this restores the paragraph breaks.
        text = doc.page_content.replace("  \n", "\n\n")
        parts.append(Section(text, page=section.page, section=path or section.section))
    return parts


def _enforce_size(text: str, size: int, length: Callable[[str], int]) -> list[str]:
    """Split a chunk whose merged token count overshot ``size`` (token counts of the
    pieces the splitter adds up are not exactly additive); usually returns ``[text]``."""
    if length(text) <= size:
        return [text]
    words = text.split(" ")
    if len(words) < 2:
        middle = len(text) // 2
        halves = [text[:middle], text[middle:]]
    else:
        middle = len(words) // 2
        halves = [" ".join(words[:middle]), " ".join(words[middle:])]
    return [piece for half in halves for piece in _enforce_size(half, size, length)]


def merge_chunks(chunks: list[Chunk], size: int, count_tokens: Callable[[str], int]) -> list[Chunk]:
    """Join neighbouring chunks while the result stays within ``size`` tokens; renumbered.

    For text that came in many tiny pieces (pages or sections of a few words):
    a merged chunk keeps the page and section of its first piece.
    """
    merged: list[Chunk] = []
    for chunk in chunks:
        last = merged[-1] if merged else None
        if last is not None:
            joined = last.text + "\n\n" + chunk.text
            if count_tokens(joined) <= size:
                merged[-1] = Chunk(joined, last.chunk_index, last.page, last.section)
                continue
        merged.append(Chunk(chunk.text, len(merged), chunk.page, chunk.section))
    return merged
