"""Documents for chat: a lazily opened store, the shared knowledge base and session uploads.

The embedder and Chroma load on first use, so ``python main.py`` serves its
page at once; ``main.py`` passes one ``RetrievalService`` to the UI and chat.
"""

from __future__ import annotations

import threading
from pathlib import Path

from retrieval.settings import RetrievalSettings
from retrieval.types import SUPPORTED_SUFFIXES, FileSummary, Passage

SHARED = "shared"


class RetrievalService:
    """Ingest, list, delete and retrieve, over the shared and per-session collections."""

    def __init__(
        self,
        data_dir: str | Path,
        embedding_model: str | None = None,
        chroma_host: str | None = None,
        chroma_port: int | None = None,
        max_upload_mb: float = 20,
    ):
        self.path = Path(data_dir) / "chroma"
        self.embedding_model = embedding_model
        self.host, self.port = chroma_host, chroma_port
        self.max_bytes = int(max_upload_mb * 2**20)
        self._store = None
        self._lock = threading.Lock()

    @property
    def store(self):
        """The ``DocumentStore``, opened (with its embedder) on first use."""
        with self._lock:
            if self._store is None:
                from retrieval.embedder import Embedder
                from retrieval.store import DocumentStore

                embedder = Embedder(self.embedding_model)
                if self.host:
                    self._store = DocumentStore(embedder, host=self.host, port=self.port or 8000)
                else:
                    self._store = DocumentStore(embedder, path=self.path)
                    self._drop_stale_sessions()
            return self._store

    def _drop_stale_sessions(self) -> None:
        """Session collections left by an earlier run belong to no live session: delete them.

        Only for the local store; a shared Chroma server may hold other app
        instances' live sessions.
        """
        for col in self._store.client.list_collections():
            name = getattr(col, "name", col)
            if str(name).startswith("session-"):
                self._store.drop(str(name))

    @staticmethod
    def session_collection(session: str | None) -> str:
        """The private collection of one browser (or API client) session."""
        from retrieval.store import session_collection

        return session_collection(session or "anonymous")

    def scope(self, session: str | None, collection: str | None = None) -> list[str]:
        """Collections a question searches: the named one, else shared + the session's."""
        return [collection] if collection else [SHARED, self.session_collection(session)]

    def ingest(self, files: list[tuple[str, str]], collection: str, chunk=None, progress=None):
        """Ingest ``(path, original name)`` files; one ``FileSummary`` per file."""
        from retrieval.chunking import ChunkSettings

        return self.store.ingest(
            files, collection, chunk or ChunkSettings(), self.max_bytes, progress=progress
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

    def drop_session(self, session: str | None) -> None:
        """Delete a session's private collection when the session ends."""
        if self._store is not None:
            self._store.drop(self.session_collection(session))


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
