"""Plain data passed between the retrieval modules (no Chroma, no torch here)."""

from __future__ import annotations

from dataclasses import dataclass, field

SUPPORTED_SUFFIXES = (".txt", ".md", ".pdf", ".html", ".htm", ".docx", ".csv", ".json")


@dataclass
class Section:
    """A piece of a document before chunking: a PDF page, a Markdown section, or the whole text."""

    text: str
    page: int | None = None  # 1-based PDF page
    section: str | None = None  # e.g. Markdown header path "Intro > Setup"


@dataclass
class Chunk:
    """A chunk ready to embed, with where it came from."""

    text: str
    chunk_index: int
    page: int | None = None
    section: str | None = None


@dataclass
class Passage:
    """A retrieved chunk and its similarity to the query (cosine, 1 = identical)."""

    text: str
    source: str
    score: float
    chunk_index: int
    page: int | None = None
    section: str | None = None
    doc_hash: str = ""
    collection: str = ""


@dataclass
class FileSummary:
    """What happened to one file of an ingest."""

    file: str
    status: str  # "added", "duplicate" or "error"
    chunks_added: int = 0
    chunks_skipped: int = 0
    error: str | None = None
    doc_hash: str | None = None
    extra: dict = field(default_factory=dict)
