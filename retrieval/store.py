"""Chroma-backed document store: collections, listing, deleting and retrieval.

Ingest lives in ``retrieval.ingest`` (``IngestMixin``).

Embeddings always come from our ``Embedder``; collections are created with
``embedding_function=None`` so Chroma never downloads its default model. The
chunk text is kept in each chunk's metadata (``text``).
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from collections import defaultdict
from pathlib import Path

from chat.errors import DocumentError
from retrieval.ingest import IngestMixin, _complete
from retrieval.reserve import DiskReserve
from retrieval.turns import Turns
from retrieval.types import Passage

SHARED = "shared"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,60}[A-Za-z0-9]")
_PAGE = 5000  # rows per get/delete call when walking a whole collection
_SERVER_FIX = "Start it with `chroma run --path DIR --host HOST --port PORT`, or use a local path."


def check_collection_name(name: str) -> str:
    """Return ``name`` if Chroma accepts it as a collection name, else raise DocumentError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise DocumentError(
            f"Invalid collection name {name!r}: use 3-62 letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit."
        )
    return name


class DocumentStore(IngestMixin):
    """Documents as embedded chunks in Chroma collections (on disk or on a Chroma server)."""

    def __init__(
        self,
        embedder,
        path: str | Path | None = None,
        host: str | None = None,
        port: int | None = None,
        min_free_bytes: int = 0,
    ):
        import chromadb
        from chromadb.config import Settings

        self.embedder = embedder
        settings = Settings(anonymized_telemetry=False)
        self.reserve: DiskReserve | None = None
        if host:
            try:
                self.client = chromadb.HttpClient(host=host, port=port or 8000, settings=settings)
                self.client.heartbeat()
            except Exception as exc:
                raise DocumentError(
                    f"Cannot reach the Chroma server at {host}:{port or 8000} ({exc}). "
                    + _SERVER_FIX
                ) from None
        elif path is not None:
            self.reserve = DiskReserve(Path(path).with_name(Path(path).name + ".reserve"))
            try:
                Path(path).mkdir(parents=True, exist_ok=True)
                self.client = self._with_room(lambda: _open_local(str(path), settings))
            except Exception as exc:
                raise DocumentError(
                    f"Cannot open the document store at {path} ({exc}). Chat without "
                    "documents still works. To fix it, free disk space if it is full, or move "
                    "the damaged folder aside (its documents must then be ingested again), "
                    "and restart."
                ) from None
        else:
            raise DocumentError("DocumentStore needs a path or a Chroma server host.")
        self._max_batch = int(self.client.get_max_batch_size())
        self._write_lock = threading.Lock()
        self._turns = Turns()  # ingests running at once embed slice by slice, in turns
        self.path = Path(path) if path is not None and not host else None
        self.min_free_bytes = min_free_bytes
        if self.reserve is not None:
            self.reserve.ensure(partial=True)

    def _with_room(self, call):
        """``call()``; if it fails and the disk reserve can be given back, once more.

        A full disk stops Chroma from applying its log, which every read does
        first: freeing the reserve lets old documents be read again.
        """
        try:
            return call()
        except DocumentError:
            raise
        except Exception:
            if self.reserve is None or not self.reserve.release():
                raise
            result = call()
            self.reserve.ensure(partial=True)  # what is left, for the next time
            return result

    # -- collections ---------------------------------------------------------

    def _collection(self, name: str, create: bool = False):
        """The collection ``name``, created on demand; ``None`` if missing and not created."""
        from chromadb.errors import NotFoundError

        check_collection_name(name)
        if create:
            return self.client.get_or_create_collection(
                name,
                embedding_function=None,
                configuration={"hnsw": {"space": "cosine"}},
                metadata={"created": time.time()},
            )
        try:
            return self.client.get_collection(name, embedding_function=None)
        except (NotFoundError, ValueError):
            return None

    def _metadatas(self, col, where: dict | None = None) -> tuple[list[str], list[dict]]:
        """All ids and metadatas of ``col`` (optionally filtered), read page by page."""
        ids, metas, offset = [], [], 0
        while True:
            got = col.get(where=where, include=["metadatas"], limit=_PAGE, offset=offset)
            ids += got["ids"]
            metas += got["metadatas"] or []
            if len(got["ids"]) < _PAGE:
                return ids, metas
            offset += _PAGE

    def _delete_ids(self, col, ids: list[str]) -> None:
        for start in range(0, len(ids), self._max_batch):
            col.delete(ids=ids[start : start + self._max_batch])

    # -- listing and deleting ------------------------------------------------

    def documents(self, collection: str) -> list[dict]:
        """``{source, doc_hash, chunks, ingested_at}`` per complete document, sorted by source."""
        return self._with_room(lambda: self._documents(collection))

    def _documents(self, collection: str) -> list[dict]:
        col = self._collection(collection)
        if col is None:
            return []
        groups: dict[str, list[dict]] = defaultdict(list)
        for meta in self._metadatas(col)[1]:
            if meta and meta.get("doc_hash"):
                groups[meta["doc_hash"]].append(meta)
        docs = [
            {
                "source": metas[0].get("source", ""),
                "doc_hash": doc_hash,
                "chunks": len(metas),
                "ingested_at": metas[0].get("ingested_at", ""),
            }
            for doc_hash, metas in groups.items()
            if _complete(metas)
        ]
        return sorted(docs, key=lambda d: (d["source"].lower(), d["doc_hash"]))

    def delete_document(self, collection: str, doc_hash: str) -> int:
        """Remove every chunk of one document; returns how many were removed."""
        return self._with_room(lambda: self._delete_document(collection, doc_hash))

    def _delete_document(self, collection: str, doc_hash: str) -> int:
        col = self._collection(collection)
        ids = self._metadatas(col, where={"doc_hash": doc_hash})[0] if col is not None else []
        if not ids:
            raise DocumentError(
                # Never the collection's name: a visitor's is private (session-...).
                f"No document with hash {str(doc_hash)[:80]!r} among these documents; "
                "refresh the document list."
            )
        self._delete_ids(col, ids)
        return len(ids)

    def clear(self, collection: str) -> None:
        """Remove every document of ``collection`` (the collection itself stays)."""

        def clear() -> None:
            col = self._collection(collection)
            if col is not None:
                # Ids are fetched before deleting, so paging offsets never shift under us.
                self._delete_ids(col, self._metadatas(col)[0])

        self._with_room(clear)

    def names(self) -> list[str]:
        """Every collection's name."""
        return [str(getattr(c, "name", c)) for c in self.client.list_collections()]

    def drop_sessions(self, older_than_s: float | None = None) -> list[str]:
        """Drop ``session-*`` collections: all, or those created over ``older_than_s`` ago."""
        dropped = []
        for col in self.client.list_collections():
            name = str(getattr(col, "name", col))
            if not name.startswith("session-"):
                continue
            if older_than_s is not None:
                meta = getattr(col, "metadata", None) or {}
                if time.time() - float(meta.get("created", 0) or 0) < older_than_s:
                    continue
            self.drop(name)
            dropped.append(name)
        return dropped

    def check_space(self, n_chunks: int, text_chars: int) -> None:
        """Refuse a write that would bring the store's disk below its reserve.

        The estimate is generous (the vector, its index entry, the metadata
        and Chroma's write-ahead log, twice over): a store whose disk fills up
        mid-write can be left unreadable.
        """
        if self.path is None:
            return  # a Chroma server looks after its own disk
        need = 2 * (n_chunks * (self.embedder.dim * 4 * 3 + 1024) + text_chars * 3)
        # No write without the reserve that keeps reads working should the disk fill.
        held = self.reserve is not None and self.reserve.ensure(need + self.min_free_bytes)
        free = shutil.disk_usage(self.path).free
        if free - need < self.min_free_bytes or not held:
            raise DocumentError(
                f"Not enough free disk space for the document store at {self.path}: "
                f"{free / 2**20:,.0f} MB free, this needs about {need / 2**20:,.1f} MB and "
                f"{self.min_free_bytes / 2**20:,.0f} MB is kept in reserve (--min-free-mb), "
                "besides the few MB the store holds to stay readable on a full disk. "
                "Free some space or delete documents, then ingest again."
            )

    def drop(self, collection: str) -> None:
        """Delete ``collection`` altogether; a missing one is ignored."""
        from chromadb.errors import NotFoundError

        check_collection_name(collection)
        try:
            self.client.delete_collection(collection)
        except (NotFoundError, ValueError):
            pass

    # -- retrieval -----------------------------------------------------------

    def retrieve(
        self,
        query: str,
        collections: list[str],
        k: int = 4,
        min_score: float = 0.0,
        mmr: bool = False,
        mmr_lambda: float = 0.5,
        fetch_k: int = 20,
    ) -> list[Passage]:
        """The best ``k`` passages for ``query`` across ``collections`` (MMR if asked)."""
        if not query.strip() or k < 1:
            return []
        return self._with_room(
            lambda: self._retrieve(query, collections, k, min_score, mmr, mmr_lambda, fetch_k)
        )

    def _retrieve(self, query, collections, k, min_score, mmr, mmr_lambda, fetch_k):
        cols = [c for c in (self._collection(name) for name in dict.fromkeys(collections)) if c]
        cols = [c for c in cols if c.count() > 0]
        if not cols:
            return []
        query_vec = self.embedder.encode([query])[0]
        n_results = max(k, fetch_k) if mmr else k
        candidates: list[tuple[Passage, list[float] | None]] = []
        for col in cols:
            include = ["metadatas", "distances"] + (["embeddings"] if mmr else [])
            res = col.query(
                query_embeddings=[query_vec], n_results=min(n_results, col.count()), include=include
            )
            vectors = res["embeddings"][0] if mmr else None
            for j, (meta, dist) in enumerate(
                zip(res["metadatas"][0], res["distances"][0], strict=True)
            ):
                score = 1.0 - float(dist)
                if score < min_score or not self._usable(col, meta):
                    continue
                vec = list(vectors[j]) if vectors is not None else None
                candidates.append((_passage(meta.get("text", ""), meta, score, col.name), vec))
        candidates.sort(key=lambda pv: pv[0].score, reverse=True)
        if mmr and len(candidates) > k:
            order = mmr_select(query_vec, [v for _, v in candidates], k, mmr_lambda)
            return [candidates[i][0] for i in order]
        return [p for p, _ in candidates[:k]]

    def _usable(self, col, meta: dict) -> bool:
        """False for a chunk of a multi-batch document whose write never finished."""
        total = int(meta.get("n_chunks", 0) or 0)
        if total <= self._max_batch:
            return True  # written by one add call: present means complete
        ids = col.get(where={"doc_hash": meta.get("doc_hash", "")}, include=[])["ids"]
        return len(ids) >= total


def _open_local(path: str, settings):
    """A Chroma client on ``path``; after a failure, Chroma's cached client of it is dropped.

    Chroma keeps one client per folder for the whole process, and a failed
    open leaves a broken one that every later try would get: a disk that
    was full at start would then need a restart even once space is freed.
    """
    import chromadb

    try:
        return chromadb.PersistentClient(path=path, settings=settings)
    except Exception:
        try:
            from chromadb.api.shared_system_client import SharedSystemClient

            SharedSystemClient._identifier_to_system.pop(path, None)
            SharedSystemClient._identifier_to_refcount.pop(path, None)
        except Exception:  # another Chroma version: nothing cached there, or nothing we know
            pass
        raise


def mmr_select(query: list[float], vectors: list, k: int, lam: float) -> list[int]:
    """Indices of ``k`` vectors by maximal marginal relevance (unit vectors, cosine)."""
    import numpy as np

    vecs = np.asarray(vectors, dtype=np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True) + 1e-12
    q = np.asarray(query, dtype=np.float32)
    relevance = vecs @ (q / (np.linalg.norm(q) + 1e-12))
    pairwise = vecs @ vecs.T
    selected = [int(np.argmax(relevance))]
    redundancy = pairwise[selected[0]].copy()
    while len(selected) < min(k, len(vecs)):
        score = lam * relevance - (1.0 - lam) * redundancy
        score[selected] = -np.inf
        best = int(np.argmax(score))
        selected.append(best)
        redundancy = np.maximum(redundancy, pairwise[best])
    return selected


def _passage(text: str, meta: dict, score: float, collection: str) -> Passage:
    page = meta.get("page")
    return Passage(
        text=text or "",
        source=str(meta.get("source", "")),
        score=score,
        chunk_index=int(meta.get("chunk_index", 0)),
        page=int(page) if page is not None else None,
        section=meta.get("section") or None,
        doc_hash=str(meta.get("doc_hash", "")),
        collection=collection,
    )
