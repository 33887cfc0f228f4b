"""The retrieval service: collection scope, stale sessions, --docs at start."""

import time
from pathlib import Path

import pytest

from retrieval.service import SHARED, RetrievalService

# The real embedder ingests.
pytestmark = [pytest.mark.model]

ROOT = Path(__file__).resolve().parents[1]


def test_stale_session_collections_are_dropped_at_open(tmp_path):
    doc = tmp_path / "a.txt"
    doc.write_text("Otters hold hands while they sleep so they do not drift apart.")
    first = RetrievalService(tmp_path / "data")
    session = "session-abc123"
    first.ingest([(str(doc), "a.txt")], session)
    first.ingest([(str(doc), "a.txt")], SHARED)
    assert len(first.documents([session])) == 1
    # A restart: the old session is gone for good, the shared base stays.
    second = RetrievalService(tmp_path / "data")
    assert second.documents([session]) == []
    assert [d["source"] for d in second.documents([SHARED])] == ["a.txt"]


@pytest.mark.slow
def test_docs_folder_is_ingested_at_start(tmp_path):
    from tests.conftest import free_port, spawn_main

    folder = tmp_path / "kb"
    (folder / "sub").mkdir(parents=True)
    (folder / "intro.md").write_text("# Intro\n\nThe lighthouse keeper is named Ada Wren.")
    (folder / "sub" / "notes.txt").write_text("Ferries leave the harbour at noon.")
    (folder / "skip.exe").write_bytes(b"MZ")
    port = free_port()
    proc = spawn_main(
        "--port", str(port), "--docs", str(folder), "--data-dir", str(tmp_path / "data")
    )
    try:
        seen, deadline = "", time.time() + 120
        while time.time() < deadline and seen.count(": added") < 2:
            seen += proc.stdout.readline()
        assert "intro.md: added" in seen and "notes.txt: added" in seen, seen
        assert "skip.exe" not in seen
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    docs = RetrievalService(tmp_path / "data").documents([SHARED])
    assert sorted(d["source"] for d in docs) == ["intro.md", "notes.txt"]
