"""The Documents accordion (upload, ingest, list, delete, retrieval settings) and its API.

Uploads go to the browser session's private collection; questions search the
shared knowledge base plus that collection. Document text is only ever shown
as plain text (Dataframe cells, fenced code), never rendered as HTML.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from chat.errors import ChatStudioError
from retrieval.service import RetrievalService, passage_dict
from retrieval.settings import RetrievalSettings
from retrieval.types import SUPPORTED_SUFFIXES
from ui.settings_panel import slider_for

CHUNK_FIELDS = ["chunk_size", "chunk_overlap"]
SUMMARY_HEADERS = ["file", "status", "new chunks", "skipped (duplicate)", "error"]
DOC_HEADERS = ["collection", "file", "chunks", "ingested at", "id"]
SOURCE_HEADERS = ["#", "file", "page / section", "score", "passage"]


def _session(request: gr.Request | None) -> str | None:
    return getattr(request, "session_hash", None)


def _fail(exc: Exception):
    raise gr.Error(str(exc)) from None


def sources_rows(sources: list[dict]) -> list[list]:
    """Rows for the Sources table under the chat."""
    return [
        [f"[{s['n']}]", s["source"], s.get("page") or s.get("section") or "", s["score"], s["text"]]
        for s in sources
    ]


class DocumentsPanel:
    """Builds the accordion; ``rag_inputs`` feed the chat handler."""

    def __init__(self, documents: RetrievalService):
        from retrieval.chunking import ChunkSettings

        self.documents = documents
        with gr.Accordion("Documents (retrieval)", open=False, elem_id="documents"):
            self.use = gr.Checkbox(
                False,
                label="Use documents",
                elem_id="use-docs",
                info="Answer from the documents below and cite them as [1], [2].",
            )
            self.files = gr.File(
                file_count="multiple",
                file_types=list(SUPPORTED_SUFFIXES),
                label="Upload (txt, md, pdf, html, docx, csv, json)",
                elem_id="doc-upload",
            )
            with gr.Row():
                self.chunk = [slider_for(ChunkSettings, f, 1) for f in CHUNK_FIELDS]
            self.ingest_btn = gr.Button("Ingest", variant="primary", elem_id="ingest")
            self.summary = gr.Dataframe(
                headers=SUMMARY_HEADERS,
                label="Ingest summary",
                interactive=False,
                elem_id="ingest-summary",
                wrap=True,
            )
            with gr.Row():
                self.rag = [
                    slider_for(RetrievalSettings, "top_k", 1),
                    slider_for(RetrievalSettings, "min_score", 0.01),
                    gr.Checkbox(
                        False, label="mmr", info=RetrievalSettings.model_fields["mmr"].description
                    ),
                    slider_for(RetrievalSettings, "mmr_lambda", 0.05),
                ]
            self.table = gr.Dataframe(
                headers=DOC_HEADERS,
                label="Documents",
                interactive=False,
                elem_id="doc-list",
                wrap=True,
            )
            with gr.Row():
                self.pick = gr.Dropdown([], label="Document", elem_id="doc-pick", scale=3)
                self.delete_btn = gr.Button("Delete document", scale=1)
                self.clear_btn = gr.Button("Clear my uploads", scale=1)
                self.refresh_btn = gr.Button("Refresh", scale=1)

    @property
    def chat_inputs(self) -> list:
        """The use-documents switch then the retrieval settings, as the chat handler reads them."""
        return [self.use, *self.rag]

    @staticmethod
    def read_chat_inputs(values) -> tuple[bool, dict]:
        """``(use_rag, retrieval settings dict)`` from ``chat_inputs`` values."""
        use, top_k, min_score, mmr, mmr_lambda = values
        return bool(use), {
            "top_k": int(top_k),
            "min_score": float(min_score),
            "mmr": bool(mmr),
            "mmr_lambda": float(mmr_lambda),
        }

    # ----- handlers --------------------------------------------------------------
    def ingest_uploads(
        self,
        files,
        chunk_size,
        chunk_overlap,
        request: gr.Request,
        progress=gr.Progress(),  # noqa: B008 (how Gradio injects a progress bar)
    ):
        """Ingest the uploaded files into this session's collection."""
        from retrieval.chunking import ChunkSettings

        if not files:
            raise gr.Error("Choose one or more files to upload first.")
        try:
            chunk = ChunkSettings(chunk_size=int(chunk_size), chunk_overlap=int(chunk_overlap))
        except ValueError as exc:
            raise gr.Error(f"Invalid chunk settings: {exc}") from None
        pairs = [(_path(f), _original_name(f)) for f in files]
        collection = self.documents.session_collection(_session(request))
        progress(0, desc="Loading the embedder")

        def report(i, n, name):
            progress((i, n), desc=f"Ingesting {name}", unit="files")

        try:
            summaries = self.documents.ingest(pairs, collection, chunk, progress=report)
        except ChatStudioError as exc:
            _fail(exc)
        rows = [
            [s.file, s.status, s.chunks_added, s.chunks_skipped, s.error or ""] for s in summaries
        ]
        return (rows, *self.listing(request), None)

    def listing(self, request: gr.Request):
        """The documents table and the delete picker for this session."""
        try:
            docs = self.documents.documents(self.documents.scope(_session(request)))
        except ChatStudioError as exc:
            _fail(exc)
        rows = [
            [d["collection"], d["source"], d["chunks"], d["ingested_at"], d["doc_hash"]]
            for d in docs
        ]
        choices = [
            (f"{d['source']} ({d['collection']})", f"{d['collection']}/{d['doc_hash']}")
            for d in docs
        ]
        return rows, gr.update(choices=choices, value=None)

    def delete(self, picked, request: gr.Request):
        """Delete the picked document (shared or this session's)."""
        if not picked:
            raise gr.Error("Pick a document to delete.")
        collection, _, doc_hash = picked.partition("/")
        if collection not in self.documents.scope(_session(request)):
            raise gr.Error("That document is not yours to delete.")
        try:
            removed = self.documents.delete_document(collection, doc_hash)
        except ChatStudioError as exc:
            _fail(exc)
        gr.Info(f"Deleted {removed} chunks.")
        return self.listing(request)

    def clear(self, request: gr.Request):
        """Remove every document this session uploaded."""
        self.documents.clear(self.documents.session_collection(_session(request)))
        return self.listing(request)

    def forget(self, request: gr.Request):
        """Drop the session's private collection when the browser session ends."""
        self.documents.drop_session(_session(request))

    # ----- API ---------------------------------------------------------------------
    def api_ingest(self, files, collection, request: gr.Request):
        """Ingest files; one ``{file, status, chunks_added, chunks_skipped, error}`` each."""
        target = collection or self.documents.session_collection(_session(request))
        pairs = [(_path(f), _original_name(f)) for f in files or []]
        try:
            summaries = self.documents.ingest(pairs, target)
        except ChatStudioError as exc:
            _fail(exc)
        return [
            {
                "file": s.file,
                "status": s.status,
                "chunks_added": s.chunks_added,
                "chunks_skipped": s.chunks_skipped,
                "error": s.error,
                "doc_hash": s.doc_hash,
                "collection": target,
            }
            for s in summaries
        ]

    def api_retrieve(
        self, query: str, k: int = 4, collection: str | None = None, request: gr.Request = None
    ) -> list[dict]:
        """Passages for ``query``: ``[{text, source, page, chunk_index, score}]``."""
        try:
            settings = RetrievalSettings(top_k=k, min_score=0.0)
            passages = self.documents.retrieve(
                query, self.documents.scope(_session(request), collection), settings
            )
        except (ChatStudioError, ValueError) as exc:
            _fail(exc)
        return [passage_dict(p) for p in passages]

    def api_documents(
        self, collection: str | None = None, request: gr.Request = None
    ) -> list[dict]:
        """Documents with chunk counts: the named collection, else shared + this session's."""
        try:
            return self.documents.documents(self.documents.scope(_session(request), collection))
        except ChatStudioError as exc:
            _fail(exc)

    def api_delete_document(
        self, doc_hash: str, collection: str | None = None, request: gr.Request = None
    ) -> int:
        """Delete a document (all its chunks); returns how many chunks went."""
        target = collection or self.documents.session_collection(_session(request))
        try:
            return self.documents.delete_document(target, doc_hash)
        except ChatStudioError as exc:
            _fail(exc)

    def wire(self, demo: gr.Blocks) -> None:
        """Connect the handlers and register the named API endpoints."""
        hidden = {"api_visibility": "private"}
        listing_out = [self.table, self.pick]
        self.ingest_btn.click(
            self.ingest_uploads,
            [self.files, *self.chunk],
            [self.summary, *listing_out, self.files],
            concurrency_limit=1,
            concurrency_id="ingest",
            **hidden,
        )
        self.delete_btn.click(self.delete, self.pick, listing_out, **hidden)
        self.clear_btn.click(self.clear, None, listing_out, **hidden)
        self.refresh_btn.click(self.listing, None, listing_out, **hidden)
        demo.load(self.listing, None, listing_out, **hidden)
        demo.unload(self.forget)
        # /ingest takes files, so it is an event with real File components (hidden).
        api_files = gr.File(file_count="multiple", visible=False)
        api_collection = gr.Textbox(visible=False)
        api_out = gr.JSON(visible=False)
        trigger = gr.Button(visible=False)
        trigger.click(
            self.api_ingest,
            [api_files, api_collection],
            api_out,
            api_name="ingest",
            api_visibility="public",
            concurrency_limit=1,
            concurrency_id="ingest",
        )
        gr.api(self.api_retrieve, api_name="retrieve")
        gr.api(self.api_documents, api_name="documents")
        gr.api(self.api_delete_document, api_name="delete_document")


def _path(f) -> str:
    return f if isinstance(f, str) else getattr(f, "name", None) or f["path"]


def _original_name(f) -> str:
    # Gradio keeps the uploaded file's own name as the last path component.
    return getattr(f, "orig_name", None) or Path(_path(f)).name
