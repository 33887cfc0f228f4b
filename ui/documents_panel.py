"""The Documents accordion (upload, ingest, list, delete, retrieval settings) and its API.

Uploads go to the caller's private collection (admins may add to the shared
knowledge base); questions search the shared base plus the caller's uploads.
No handler takes a collection name: what a caller may touch follows from who
they are. Document text is only ever shown as plain text (Dataframe cells,
fenced code), never rendered as HTML.
"""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import gradio as gr

from chat.errors import ChatStudioError, InputError
from retrieval.service import passage_dict
from retrieval.settings import RetrievalSettings
from retrieval.types import SUPPORTED_SUFFIXES
from studio import requests as req
from studio.access import Access
from studio.documents import DocumentAccess
from studio.uploads import remove_upload
from ui.background import Background
from ui.errors import boundary, user_error
from ui.settings_panel import slider_for

CHUNK_FIELDS = ["chunk_size", "chunk_overlap"]
SUMMARY_HEADERS = ["file", "status", "new chunks", "skipped (duplicate)", "error"]
DOC_HEADERS = ["where", "file", "chunks", "ingested at"]
SOURCE_HEADERS = ["#", "file", "page / section", "score", "passage"]
# Ingests run at once (their embedding takes turns, slice by slice), so one large
# upload never holds the others back for minutes; beyond these, the queue says where.
INGEST_SLOTS = 4


def sources_rows(sources: list[dict]) -> list[list]:
    """Rows for the Sources table under the chat."""
    return [
        [f"[{s['n']}]", s["source"], s.get("page") or s.get("section") or "", s["score"], s["text"]]
        for s in sources
    ]


class DocumentsPanel:
    """Builds the accordion; ``chat_inputs`` feed the chat handler."""

    def __init__(self, documents: DocumentAccess, access: Access):
        from retrieval.chunking import ChunkSettings

        self.documents = documents
        self.access = access
        with gr.Column(elem_id="documents") as self.box:
            gr.Markdown(
                "Upload documents, press **Ingest**, then tick **Use documents** beside the "
                "message box: answers come from them and cite the passages used."
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
            with gr.Row():  # the retrieval settings a turn with documents uses
                self.top_k = slider_for(RetrievalSettings, "top_k", 1)
                self.min_score = slider_for(RetrievalSettings, "min_score", 0.01)
                self.mmr = gr.Checkbox(
                    False, label="mmr", info=RetrievalSettings.model_fields["mmr"].description
                )
                self.mmr_lambda = slider_for(RetrievalSettings, "mmr_lambda", 0.05)
                self.prompt_format = gr.Dropdown(
                    list(get_args(RetrievalSettings.model_fields["prompt_format"].annotation)),
                    value=RetrievalSettings.model_fields["prompt_format"].default,
                    label="prompt format",
                    info=RetrievalSettings.model_fields["prompt_format"].description,
                    elem_id="prompt-format",
                )
            self.kept = gr.Markdown(documents.kept_note(), elem_id="doc-kept")
            self.status = gr.Markdown(elem_id="doc-status")
            self.table = gr.Dataframe(
                headers=DOC_HEADERS,
                label="Documents",
                interactive=False,
                elem_id="doc-list",
                wrap=True,
            )
            with gr.Row():
                self.pick = gr.Dropdown([], label="Document", elem_id="doc-pick", scale=3)
                self.delete_btn = gr.Button("Delete document", scale=1, elem_id="doc-delete")
                self.clear_btn = gr.Button("Clear my uploads", scale=1)
                self.refresh_btn = gr.Button("Refresh", scale=1)

    @property
    def retrieval_inputs(self) -> list:
        """The retrieval settings' controls, for a turn handler's inputs."""
        return [self.top_k, self.min_score, self.mmr, self.mmr_lambda, self.prompt_format]

    def read_retrieval(self, values: dict) -> dict:
        """The retrieval settings dict from an event's values, keyed by component."""
        return {  # checked by parse_retrieval, so a script's text gets one sentence back
            "top_k": values[self.top_k],
            "min_score": values[self.min_score],
            "mmr": bool(values[self.mmr]),
            "mmr_lambda": values[self.mmr_lambda],
            "prompt_format": values[self.prompt_format],
        }

    # ----- handlers --------------------------------------------------------------
    @boundary
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

        caller = self.access.caller(request)
        if not files:
            raise user_error("Choose one or more files to upload first.")
        pairs = [(_path(f), _original_name(f)) for f in files]
        try:
            chunk = req.parse_request(
                ChunkSettings, chunk_size=chunk_size, chunk_overlap=chunk_overlap
            )
        except ChatStudioError as exc:
            raise InputError(f"Invalid chunk settings: {exc}") from None
        warm = Background(lambda: self.documents.embedder)  # errors: ingest reports them
        while not warm.done.wait(0.5):  # the loader reports no fraction: the time spent
            progress((int(warm.elapsed()), None), desc="Loading the embedder", unit="s")

        def report(i, n, name):
            progress((i, n), desc=f"Ingesting {name}", unit="files")

        summaries = self.documents.ingest(caller, pairs, chunk=chunk, progress=report)
        rows = [
            [s.file, s.status, s.chunks_added, s.chunks_skipped, s.error or ""] for s in summaries
        ]
        return (rows, *self.listing(request), None)

    @boundary
    def listing(self, request: gr.Request):
        """Status line, documents table and delete picker for this caller."""
        caller = self.access.caller(request)
        try:
            docs = self.documents.documents(caller)
        except ChatStudioError as exc:
            return str(exc), [], gr.update(choices=[], value=None)
        rows = [[d["collection"], d["source"], d["chunks"], d["ingested_at"]] for d in docs]
        choices = [
            (f"{d['source']} ({d['collection']})", f"{d['collection']}/{d['doc_hash']}")
            for d in docs
            if d["can_delete"]
        ]
        return "", rows, gr.update(choices=choices, value=None)

    @boundary
    def delete(self, picked, request: gr.Request):
        """Delete the picked document (the caller's own; admins: shared ones too)."""
        caller = self.access.caller(request)
        if not picked:
            raise user_error("Pick a document to delete.")
        where, _, doc_hash = picked.partition("/")
        removed = self.documents.delete(caller, doc_hash, shared=where == "shared")
        gr.Info(f"Deleted {removed} chunks.")
        return (*self.listing(request), [])

    @boundary
    def clear(self, request: gr.Request):
        """Remove every document this session uploaded."""
        self.documents.clear(self.access.caller(request))
        return self.listing(request)

    # ----- API ---------------------------------------------------------------------
    @boundary
    def api_ingest(self, files, shared, request: gr.Request):
        """Ingest files into your own uploads (``shared=True``: the shared base, admins only)."""
        caller = self.access.caller(request)
        pairs = [(_path(f), _original_name(f)) for f in files or []]
        try:
            shared = req.parse_request(req.IngestRequest, shared=shared).shared
        except ChatStudioError:
            for path, _ in pairs:  # uploads are never kept
                remove_upload(path)
            raise
        summaries = self.documents.ingest(caller, pairs, shared=shared)
        return [
            {
                "file": s.file,
                "status": s.status,
                "chunks_added": s.chunks_added,
                "chunks_skipped": s.chunks_skipped,
                "error": s.error,
                "doc_hash": s.doc_hash,
                "collection": "shared" if shared else "mine",
            }
            for s in summaries
        ]

    @boundary
    def api_retrieve(self, query: str, k: int = 4, request: gr.Request = None) -> list[dict]:
        """Passages for ``query`` from the shared base and your uploads."""
        caller = self.access.caller(request)
        r = req.parse_request(req.RetrieveRequest, query=query, k=k)
        settings = RetrievalSettings(top_k=r.k, min_score=0.0)
        passages = self.documents.retrieve(caller, r.query, settings)
        return [
            passage_dict(p) | {"collection": "mine" if p.collection != "shared" else "shared"}
            for p in passages
        ]

    @boundary
    def api_documents(self, request: gr.Request = None) -> list[dict]:
        """Documents with chunk counts: the shared base and your uploads."""
        caller = self.access.caller(request)
        return self.documents.documents(caller)

    @boundary
    def api_delete_document(
        self, doc_hash: str, shared: bool = False, request: gr.Request = None
    ) -> int:
        """Delete one of your documents (``shared=True``: a shared one, admins only)."""
        caller = self.access.caller(request)
        r = req.parse_request(req.DeleteDocumentRequest, doc_hash=doc_hash, shared=shared)
        return self.documents.delete(caller, r.doc_hash, shared=r.shared)

    def wire(self, demo: gr.Blocks) -> None:
        """Connect the handlers and register the named API endpoints."""
        hidden = {"api_visibility": "private"}
        listing_out = [self.status, self.table, self.pick]
        self.ingest_btn.click(
            self.ingest_uploads,
            [self.files, *self.chunk],
            [self.summary, *listing_out, self.files],
            concurrency_limit=INGEST_SLOTS,
            concurrency_id="ingest",
            **hidden,
        )
        # A deleted document must not stay "added" in the ingest summary.
        self.delete_btn.click(self.delete, self.pick, [*listing_out, self.summary], **hidden)
        self.clear_btn.click(self.clear, None, listing_out, **hidden)
        self.refresh_btn.click(self.listing, None, listing_out, **hidden)
        self.listing_out = listing_out  # listed when the Documents tab opens (see ChatUI)
        # /ingest takes files, so it is an event with real File components (hidden).
        api_files = gr.File(file_count="multiple", visible=False)
        api_shared = gr.Checkbox(False, visible=False)
        api_out = gr.JSON(visible=False)
        trigger = gr.Button(visible=False)
        trigger.click(
            self.api_ingest,
            [api_files, api_shared],
            api_out,
            api_name="ingest",
            api_visibility="public",
            concurrency_limit=INGEST_SLOTS,
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
