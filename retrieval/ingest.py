"""Ingest for ``DocumentStore``: load, chunk, embed in big batches, write whole documents.

Chunk ids and document hashes come from content, so ingesting the same file
again adds nothing. Each add call is one Chroma transaction holding whole
documents, so a crash never leaves half a document behind; a document too big
for one call carries ``n_chunks`` on every chunk and counts only once complete.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from chat.errors import DocumentError
from retrieval.chunking import ChunkSettings, chunk_sections, merge_chunks
from retrieval.turns import encode_in_turns
from retrieval.types import Chunk, FileSummary, Section

EMBED_BATCH = 1024  # chunks gathered before embedding: big calls run at the raw model speed
# Text bytes a document's chunks must carry on average. Dense text (JSON or CSV of
# numbers, cut at the smallest chunk size) would otherwise make a chunk, and an
# embedding, of every few bytes: a 98 KB file became 10,000 chunks.
MIN_CHUNK_BYTES = 128
MIN_CHUNKS = 16  # what any document may make, however little text it has


class IngestMixin:
    """The ingest half of ``DocumentStore`` (which supplies the Chroma plumbing)."""

    def ingest(
        self,
        files: list[tuple[str, str]],
        collection: str,
        chunk: ChunkSettings,
        max_bytes: int,
        progress: Callable[[int, int, str], None] | None = None,
        max_chunks: int | None = None,
        budget: Callable[[int], None] | None = None,
    ) -> list[FileSummary]:
        """Ingest ``(path, original filename)`` pairs; one FileSummary per file, in order.

        Files are loaded and chunked one by one; their chunks are embedded
        together in large batches (one big encode runs at the raw model's
        speed, per-document calls do not) and written several documents per
        add call. One bad file never stops the others. Once the files so far
        made ``max_chunks`` chunks, the rest are refused with a clear error;
        ``budget(n)`` is asked before a document of ``n`` chunks is embedded
        and refuses it by raising (the session's allowance). Embedding takes
        turns with other ingests running at the same time.
        If a write fails, each file's summary says what was really stored.
        """
        summaries: list[FileSummary | None] = [None] * len(files)
        batch: list[tuple[int, _Prepared]] = []
        total_chunks = 0

        def flush() -> None:
            preps = [prep for _, prep in batch]
            try:
                self.check_space(
                    sum(len(p.chunks) for p in preps),
                    sum(len(c.text) for p in preps for c in p.chunks),
                )
                texts = [c.text for prep in preps for c in prep.chunks]
                vectors = encode_in_turns(self.embedder, texts, self._turns)
                results = self._write(preps, vectors)
            except Exception as exc:  # the model or the store failed: say what got stored
                if self.reserve is not None and not isinstance(exc, DocumentError):
                    self.reserve.release()  # so the store can apply what it logged
                results = [self._after_failure(prep, exc) for prep in preps]
                if self.reserve is not None:
                    self.reserve.ensure(partial=True)
            for (i, _), summary in zip(batch, results, strict=True):
                summaries[i] = summary

        for i, (path, filename) in enumerate(files):
            if progress is not None:
                progress(i, len(files), filename)
            prepared = self._try_prepare(path, filename, collection, chunk, max_bytes)
            if isinstance(prepared, FileSummary):  # an error, or already stored
                summaries[i] = prepared
                continue
            total_chunks += len(prepared.chunks)
            if max_chunks is not None and total_chunks > max_chunks:
                summaries[i] = FileSummary(
                    file=filename,
                    status="error",
                    error=f"{prepared.source}: this upload already makes {max_chunks:,} chunks, "
                    "the most one request may add; ingest this file in another request.",
                )
                total_chunks -= len(prepared.chunks)
                continue
            if budget is not None:
                try:
                    budget(len(prepared.chunks))
                except Exception as exc:  # the message says which allowance, and what is left
                    summaries[i] = FileSummary(
                        file=filename, status="error", error=f"{prepared.source}: {exc}"
                    )
                    total_chunks -= len(prepared.chunks)
                    continue
            batch.append((i, prepared))
            if sum(len(prep.chunks) for _, prep in batch) >= EMBED_BATCH:
                flush()
                batch = []
        if batch:
            flush()
        return summaries

    def ingest_file(
        self, path: str, filename: str, collection: str, chunk: ChunkSettings, max_bytes: int
    ) -> FileSummary:
        """Load, chunk, embed and add one file; errors become a FileSummary with status error."""
        return self.ingest([(path, filename)], collection, chunk, max_bytes)[0]

    def _try_prepare(
        self, path: str, filename: str, collection: str, chunk: ChunkSettings, max_bytes: int
    ) -> _Prepared | FileSummary:
        """``_prepare``, with any failure turned into an error summary."""
        try:
            return self._prepare(path, filename, collection, chunk, max_bytes)
        except Exception as exc:
            return _failed(filename, exc)

    def _prepare(
        self, path: str, filename: str, collection: str, chunk: ChunkSettings, max_bytes: int
    ) -> _Prepared | FileSummary:
        """Load and chunk a file; a FileSummary instead when it is already stored."""
        from retrieval.loaders import load_document, safe_filename

        source = safe_filename(filename)
        col = self._collection(collection, create=True)
        sections = load_document(path, filename, max_bytes)
        doc_hash = _doc_hash(sections)
        extra: dict = {}
        # Text past the model's window would be silently cut off and never found.
        if chunk.chunk_size > self.embedder.max_tokens:
            size = self.embedder.max_tokens
            chunk = ChunkSettings(chunk_size=size, chunk_overlap=min(chunk.chunk_overlap, size - 1))
            extra["chunk_size_clamped_to"] = size
        duplicate = self._duplicate(col, filename, doc_hash, extra)
        if duplicate is not None:  # checked before embedding, so a re-ingest costs little
            return duplicate
        suffix = Path(filename).suffix or Path(path).suffix
        chunks = chunk_sections(sections, suffix, chunk, self.embedder.count_tokens)
        if not chunks:
            raise DocumentError(f"{source} has no text to index (is it empty or a scanned image?).")
        chunks = self._bounded(sections, suffix, chunk, chunks, source, extra)
        return _Prepared(filename, source, col, doc_hash, chunks, extra)

    def _bounded(self, sections, suffix, chunk: ChunkSettings, chunks: list, source, extra: dict):
        """``chunks``, or the text cut at the model's whole window if they carry too little each.

        A document may make one chunk per ``MIN_CHUNK_BYTES`` bytes of its text
        (and a small one a few chunks whatever its size); denser text is cut
        into the largest chunks the model reads, without overlap, and refused
        if even those are too many.
        """
        text_bytes = sum(len(s.text.encode("utf-8", "surrogatepass")) for s in sections)
        limit = max(MIN_CHUNKS, -(-text_bytes // MIN_CHUNK_BYTES))
        if len(chunks) <= limit:
            return chunks
        wide = ChunkSettings(chunk_size=min(self.embedder.max_tokens, 512), chunk_overlap=0)
        # Cut as plain text (not at Markdown headers), then join pieces of tiny pages.
        chunks = chunk_sections(sections, "", wide, self.embedder.count_tokens)
        chunks = merge_chunks(chunks, wide.chunk_size, self.embedder.count_tokens)
        extra["chunk_size_raised_to"] = wide.chunk_size
        if len(chunks) > limit:
            raise DocumentError(
                f"{source}: its {text_bytes:,} bytes of text make {len(chunks):,} chunks even at "
                f"the largest chunk size, more than one per {MIN_CHUNK_BYTES} bytes; "
                "upload it as plain prose, or split it."
            )
        return chunks

    def _after_failure(self, prep: _Prepared, exc: Exception) -> FileSummary:
        """After a failed write: "added" if the document is in fact stored whole, else the error."""
        try:
            ids, metas = self._metadatas(prep.col, where={"doc_hash": prep.doc_hash})
            if ids and _complete(metas):
                return prep.summary("added")
        except Exception:  # the store cannot even be read: report the write's error
            pass
        return _failed(prep.filename, exc)

    def _duplicate(self, col, filename: str, doc_hash: str, extra: dict) -> FileSummary | None:
        """A "duplicate" summary when ``doc_hash`` is completely stored; clears leftovers."""
        existing, metas = self._metadatas(col, where={"doc_hash": doc_hash})
        if existing and _complete(metas):
            extra["existing_source"] = metas[0].get("source")
            return FileSummary(
                file=filename, status="duplicate", chunks_skipped=len(existing),
                doc_hash=doc_hash, extra=extra,
            )  # fmt: skip
        if existing:  # leftovers of an interrupted multi-batch write
            self._delete_ids(col, existing)
        return None

    def _write(self, preps: list[_Prepared], vectors: list) -> list[FileSummary]:
        """Store embedded documents, several per add call.

        An add call is one transaction, so a crash loses whole documents, never
        part of one. Whether a document is already stored was checked when it
        was prepared; the same file twice in one upload is caught here, and
        Chroma ignores ids it already has should another app instance race us.
        """
        summaries, rows = [], _Rows()
        offset = 0
        with self._write_lock:
            for prep in preps:
                vecs = vectors[offset : offset + len(prep.chunks)]
                offset += len(prep.chunks)
                if prep.doc_hash in rows.doc_hashes:  # the same file twice in one upload
                    summaries.append(prep.summary("duplicate"))
                    continue
                if rows.name != prep.col.name or len(rows) + len(prep.chunks) > self._max_batch:
                    rows.flush(self._max_batch)
                    rows.col = prep.col
                rows.extend(prep, vecs)
                summaries.append(prep.summary("added"))
            rows.flush(self._max_batch)
        return summaries


@dataclass
class _Prepared:
    """A loaded and chunked document waiting to be embedded and written."""

    filename: str
    source: str
    col: object
    doc_hash: str
    chunks: list[Chunk]
    extra: dict

    def summary(self, status: str) -> FileSummary:
        """The summary of this document once ``added`` (or found a ``duplicate``)."""
        counts = {"chunks_added" if status == "added" else "chunks_skipped": len(self.chunks)}
        return FileSummary(
            file=self.filename, status=status, doc_hash=self.doc_hash, extra=self.extra, **counts
        )


class _Rows:
    """Rows of several documents gathered for one ``add`` call."""

    def __init__(self):
        self.col = None
        self.ids, self.blocks, self.texts, self.metas = [], [], [], []
        self.doc_hashes: set[str] = set()

    @property
    def name(self) -> str | None:
        """The collection these rows go to (Chroma hands out a new object per lookup)."""
        return self.col.name if self.col is not None else None

    def __len__(self) -> int:
        return len(self.ids)

    def extend(self, prep: _Prepared, vectors: list) -> None:
        """Add one document's chunks, with the metadata every chunk carries."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        self.blocks.append(vectors)
        for c in prep.chunks:
            meta = {"source": prep.source, "chunk_index": c.chunk_index}
            meta |= {"doc_hash": prep.doc_hash, "ingested_at": now, "n_chunks": len(prep.chunks)}
            if c.page is not None:
                meta["page"] = int(c.page)
            if c.section:
                meta["section"] = c.section
            # The text rides in the metadata, not as a Chroma document: that skips
            # a full-text index we never query, and makes writes about 40% cheaper.
            meta["text"] = c.text
            self.ids.append(_chunk_id(prep.doc_hash, c))
            self.texts.append(c.text)
            self.metas.append(meta)
        self.doc_hashes.add(prep.doc_hash)

    def flush(self, max_batch: int) -> None:
        """Write the gathered rows; only a document bigger than a batch spans several calls."""
        import numpy as np

        # One 2-D float32 array: Chroma converts a list of rows far more slowly.
        vectors = np.concatenate(self.blocks) if self.blocks else None
        for start in range(0, len(self.ids), max_batch):
            end = start + max_batch
            self.col.add(
                ids=self.ids[start:end],
                embeddings=vectors[start:end],
                metadatas=self.metas[start:end],
            )
        self.ids, self.blocks, self.texts, self.metas = [], [], [], []


def _failed(filename: str, exc: Exception) -> FileSummary:
    """An error summary: a DocumentError's own message, else a short description."""
    if isinstance(exc, DocumentError):
        return FileSummary(file=filename, status="error", error=str(exc))
    return FileSummary(
        file=filename, status="error", error=f"Could not ingest {filename}: {exc!r:.300}"
    )


def _doc_hash(sections: list[Section]) -> str:
    """sha256 of the extracted text, so the same content in another file is a duplicate."""
    h = hashlib.sha256()
    for s in sections:
        h.update(s.text.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()


def _chunk_id(doc_hash: str, chunk: Chunk) -> str:
    # The index keeps repeated paragraphs of one document from colliding.
    payload = f"{doc_hash}\x00{chunk.chunk_index}\x00{chunk.text}".encode("utf-8", "surrogatepass")
    return hashlib.sha256(payload).hexdigest()


def _complete(metas: list[dict]) -> bool:
    """Whether all chunks of one document's metadatas are present."""
    total = max(int(m.get("n_chunks", 0) or 0) for m in metas) if metas else 0
    return len(metas) >= total
