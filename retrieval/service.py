"""Documents for chat: a lazily opened store, the shared knowledge base and session uploads.

The embedder and Chroma load on first use, so ``python main.py`` serves its
page at once; ``main.py`` passes one ``RetrievalService`` to the UI and chat.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from chat.errors import DocumentError
from retrieval.settings import RetrievalSettings
from retrieval.types import SUPPORTED_SUFFIXES, FileSummary, Passage

SHARED = "shared"
log = logging.getLogger("chat_studio")


class RetrievalService:
    """Ingest, list, delete and retrieve, over the shared and per-session collections."""

    def __init__(
        self,
        data_dir: str | Path,
        embedding_model: str | None = None,
        chroma_host: str | None = None,
        chroma_port: int | None = None,
        max_upload_mb: float = 20,
        min_free_mb: float = 0,
        orphan_age_s: float = 7 * 86400,
    ):
        self.path = Path(data_dir) / "chroma"
        self.embedding_model = embedding_model
        self.host, self.port = chroma_host, chroma_port
        self.max_bytes = int(max_upload_mb * 2**20)
        self.min_free_bytes = int(min_free_mb * 2**20)
        self.orphan_age_s = orphan_age_s
        self._store = None
        self._failure: tuple[float, str] | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        """Whether the store (and its embedder) has been opened."""
        return self._store is not None

    @property
    def store(self):
        """The ``DocumentStore``, opened (with its embedder) on first use.

        If it cannot open, every call says so with the same clear message
        (chat without documents keeps working); it is tried again after a
        minute, so a fixed folder or a restarted server is picked up.
        """
        with self._lock:
            if self._store is None:
                if self._failure and time.monotonic() - self._failure[0] < 60:
                    raise DocumentError(self._failure[1])
                try:
                    self._store = self._open()
                except DocumentError as exc:
                    self._failure = (time.monotonic(), str(exc))
                    raise
                self._failure = None
            return self._store

    def _open(self):
        from retrieval.embedder import Embedder
        from retrieval.store import DocumentStore

        embedder = Embedder(self.embedding_model)
        if self.host:
            store = DocumentStore(embedder, host=self.host, port=self.port or 8000)
            store.drop_sessions(older_than_s=self.orphan_age_s)
        else:
            store = DocumentStore(embedder, path=self.path, min_free_bytes=self.min_free_bytes)
            # The data folder's lock says no other app uses it: every session
            # collection left over belongs to no live session.
            try:
                store.drop_sessions()
            except Exception as exc:  # a full disk: reading must still work; next start
                log.warning("could not drop old session collections: %s", exc)
        return store

    def warm_up(self) -> None:
        """Open the store now (``--docs`` at start); failures are reported, not raised."""
        try:
            _ = self.store
        except DocumentError:
            pass

    def ingest(
        self,
        files: list[tuple[str, str]],
        collection: str,
        chunk=None,
        progress=None,
        max_chunks: int | None = None,
        budget=None,
    ):
        """Ingest ``(path, original name)`` files; one ``FileSummary`` per file."""
        from retrieval.chunking import ChunkSettings

        return self.store.ingest(
            files,
            collection,
            chunk or ChunkSettings(),
            self.max_bytes,
            progress=progress,
            max_chunks=max_chunks,
            budget=budget,
        )

    def ingest_folder(self, folder: str | Path, collection: str = SHARED) -> list[FileSummary]:
        """Ingest every supported file under ``folder`` (``--docs DIR``)."""
        paths = sorted(
            p
            for p in Path(folder).rglob("*")
            if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES
        )
        return self.ingest([(str(p), p.name) for p in paths], collection)

    def retrieve(self, query: str, collections: list[str], settings: RetrievalSettings):
        """The best passages for ``query`` across ``collections``."""
        return self.store.retrieve(
            query,
            collections,
            k=settings.top_k,
            min_score=settings.min_score,
            mmr=settings.mmr,
            mmr_lambda=settings.mmr_lambda,
        )

    def documents(self, collections: list[str]) -> list[dict]:
        """Documents with their chunk counts, per collection."""
        return [{"collection": c, **doc} for c in collections for doc in self.store.documents(c)]

    def delete_document(self, collection: str, doc_hash: str) -> int:
        """Remove one document (all its chunks)."""
        return self.store.delete_document(collection, doc_hash)

    def clear(self, collection: str) -> None:
        """Remove every document of a collection."""
        self.store.clear(collection)

    def drop(self, collection: str) -> None:
        """Delete a collection (a session's, when the session ends); nothing if never opened."""
        if self._store is not None:
            self._store.drop(collection)

    def collection_names(self) -> list[str]:
        """Every collection in the store."""
        return self.store.names()


def passage_dict(p: Passage) -> dict:
    """A passage as the ``retrieve`` endpoint returns it."""
    return {
        "text": p.text,
        "source": p.source,
        "page": p.page,
        "section": p.section,
        "chunk_index": p.chunk_index,
        "score": round(float(p.score), 4),
        "collection": p.collection,
    }
