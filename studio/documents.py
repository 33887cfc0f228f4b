"""Documents as each caller may see them: the shared knowledge base and their own uploads.

Visitors read the shared base and read and write their own private
collection; only admins write the shared base. Callers never name a
collection: what they may touch follows from who they are. Uploaded files
are deleted once ingested, whatever happened to them.
"""

from __future__ import annotations

import os

from chat.errors import ChatStudioError, DocumentError
from retrieval.service import SHARED, RetrievalService
from retrieval.settings import RetrievalSettings
from retrieval.types import FileSummary
from studio.access import Access, Caller
from studio.limits import MB, Limits
from studio.uploads import remove_upload

MAX_REQUEST_CHUNKS = 20_000  # about four minutes of embedding on two CPU cores


class DocumentAccess:
    """The retrieval service seen through one caller's rights."""

    def __init__(self, service: RetrievalService, access: Access, limits: Limits):
        self.service = service
        self.access = access
        self.limits = limits
        access.on_owner_end(self.end_owner)

    @property
    def kept_forever(self) -> bool:
        """On a private app without logins (you at your own machine) your uploads are kept
        like the shared base, until you delete them."""
        return self.access.private and not self.access.logins

    def kept_note(self) -> str:
        """How long the caller's own documents are kept, and when they are deleted."""
        if self.kept_forever:
            return (
                "Your documents are kept on this machine (in the app's data folder) until "
                "you delete them, like the shared knowledge base."
            )
        minutes = self.access.ttl_s / 60
        return (
            "Your documents are kept for this browser only: a reload or a new tab brings "
            f"them back. They are deleted {minutes:g} minutes after the last tab of this app "
            "in this browser closes, or when the app restarts. Nobody else can search them."
        )

    @property
    def embedder(self):
        """The store's sentence embedder (opens the store if needed)."""
        return self.service.store.embedder

    def own(self, caller: Caller) -> str:
        """The caller's private collection (its name is never shown to anyone): their
        browser's (kept across a reload), or their session's; on a private app, yours."""
        owner = self.access.owner(caller.session)
        if self.kept_forever and owner != caller.session:  # the page, not a script
            return self.access.private_name("local", prefix="mine")
        return self.access.private_name(owner)

    def scope(self, caller: Caller) -> list[str]:
        """What the caller's questions search: the shared base and their own uploads."""
        return [SHARED, self.own(caller)]

    def ingest(
        self,
        caller: Caller,
        files: list[tuple[str, str]],
        shared: bool = False,
        chunk=None,
        progress=None,
    ) -> list[FileSummary]:
        """Ingest uploads into the caller's collection (or, for admins, the shared base).

        Every uploaded file is deleted afterwards. Files past the per-request
        count, the session's byte allowance or its chunk allowance get an
        error summary each.
        """
        try:
            if shared:
                self.access.require_admin(caller, "add documents to the shared knowledge base")
            if len(files) > self.limits.max_files_per_request:
                raise DocumentError(
                    f"{len(files)} files in one request; at most "
                    f"{self.limits.max_files_per_request} are accepted "
                    "(--max-files-per-request). Send them in smaller groups."
                )
            refused = self._over_allowance(caller, files, shared)
            accepted = [f for i, f in enumerate(files) if i not in refused]
            done = iter(
                self.service.ingest(
                    accepted,
                    SHARED if shared else self.own(caller),
                    chunk,
                    progress=progress,
                    max_chunks=None if caller.admin else MAX_REQUEST_CHUNKS,
                    budget=None if caller.admin else self._chunk_budget(caller),
                )
            )
            return [refused[i] if i in refused else next(done) for i in range(len(files))]
        finally:
            for path, _ in files:
                remove_upload(path)

    def _chunk_budget(self, caller: Caller):
        """Counts each document's chunks against the session's allowance (raises past it)."""
        limit = self.limits.max_session_chunks
        return lambda n: self.access.add_chunks(caller, n, limit)

    def _over_allowance(self, caller, files, shared) -> dict[int, FileSummary]:
        """Error summaries for the files past the session's upload allowance, by position."""
        refused = {}
        limit = int(self.limits.max_session_upload_mb * MB)
        for i, (path, name) in enumerate(files):
            if shared and caller.admin:
                continue
            try:
                self.access.add_upload(caller, _size(path), limit)
            except ChatStudioError as exc:
                refused[i] = FileSummary(file=name, status="error", error=f"{name}: {exc}")
        return refused

    def retrieve(self, caller: Caller, query: str, settings: RetrievalSettings):
        """Passages for ``query`` from the shared base and the caller's uploads."""
        return self.service.retrieve(query, self.scope(caller), settings)

    def documents(self, caller: Caller) -> list[dict]:
        """``{collection: shared|mine, source, doc_hash, chunks, ingested_at, can_delete}``."""
        rows = []
        for name, label in ((SHARED, "shared"), (self.own(caller), "mine")):
            for doc in self.service.store.documents(name):
                can_delete = label == "mine" or caller.admin
                rows.append({"collection": label, **doc, "can_delete": can_delete})
        return rows

    def delete(self, caller: Caller, doc_hash: str, shared: bool = False) -> int:
        """Delete one of the caller's documents (or, for admins, a shared one)."""
        if shared:
            self.access.require_admin(caller, "delete documents of the shared knowledge base")
        return self.service.delete_document(SHARED if shared else self.own(caller), doc_hash)

    def clear(self, caller: Caller) -> None:
        """Delete every document the caller uploaded."""
        self.service.clear(self.own(caller))

    def end_owner(self, owner: str) -> None:
        """A session without a browser key ended, or a browser's time ran out: its
        collection goes (on a private app the page's uploads are kept: see ``own``)."""
        self.service.drop(self.access.private_name(owner))  # never the private app's "mine"


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
