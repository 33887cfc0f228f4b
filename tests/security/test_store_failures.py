"""A store that cannot write or cannot open: clear messages, true reports, chat still served.

Row 6 of part two.
"""

from __future__ import annotations

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from tests.security.conftest import start_app

# The real embedder, in this process or in a main.py child.
pytestmark = [pytest.mark.model]

GREEDY = {"strategy": "greedy", "max_new_tokens": 6}


@pytest.mark.slow
def test_ingest_stops_short_of_a_full_disk(tmp_path):
    # A reserve larger than any disk: every write would "fill" it.
    app = start_app(tmp_path / "data", "--min-free-mb", "10000000")
    try:
        client = Client(app.url, verbose=False)
        doc = tmp_path / "notes.txt"
        doc.write_text("The ferry leaves at noon from pier four.", encoding="utf-8")
        out = client.predict(files=[handle_file(str(doc))], api_name="/ingest")
        assert out[0]["status"] == "error"
        assert "Not enough free disk space" in out[0]["error"]
        assert "--min-free-mb" in out[0]["error"]
        # Nothing half-written: the store still answers, and holds nothing.
        assert client.predict(api_name="/documents") == []
        assert client.predict(message="Hi", settings=GREEDY, api_name="/chat")["reply"]
    finally:
        app.stop()


@pytest.mark.slow
def test_a_store_that_cannot_open_leaves_chat_working(tmp_path):
    data = tmp_path / "data"
    (data / "chroma").mkdir(parents=True)
    (data / "chroma" / "chroma.sqlite3").write_bytes(b"this is not a database" * 200)
    app = start_app(data)
    try:
        client = Client(app.url, verbose=False)
        assert client.predict(message="Hi", settings=GREEDY, api_name="/chat")["reply"]
        for call in (
            lambda: client.predict(api_name="/documents"),
            lambda: client.predict(query="ferry", k=2, api_name="/retrieve"),
            lambda: client.predict(message="Hi", use_rag=True, settings=GREEDY, api_name="/chat"),
        ):
            with pytest.raises(AppError, match="Cannot open the document store") as err:
                call()
            assert "Chat without documents still works" in str(err.value)
        assert "Traceback" not in app.output()
    finally:
        app.stop()


def test_a_failed_write_reports_what_was_really_stored(tmp_path):
    """The second of two add calls fails: the first call's documents are reported added."""
    from retrieval.chunking import ChunkSettings
    from retrieval.embedder import Embedder
    from retrieval.store import DocumentStore

    store = DocumentStore(Embedder(), path=tmp_path / "chroma")
    store._max_batch = 3  # a few chunks per add call, so two documents need two calls
    files = []
    for name, topic in (("otters.txt", "Otters"), ("herons.txt", "Herons")):
        path = tmp_path / name
        path.write_text(
            "\n\n".join(
                f"{topic} fact number {i}: they are remarkable animals." for i in range(12)
            ),
            encoding="utf-8",
        )
        files.append((str(path), name))
    calls = []
    col = store._collection("shared", create=True)
    real_add = type(col).add

    def flaky_add(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("No space left on device")
        return real_add(self, *args, **kwargs)

    type(col).add = flaky_add
    try:
        small = ChunkSettings(chunk_size=32, chunk_overlap=0)
        out = store.ingest(files, "shared", small, 2**20)
    finally:
        type(col).add = real_add
    status = {s.file: (s.status, s.error) for s in out}
    stored = {d["source"] for d in store.documents("shared")}
    for name in ("otters.txt", "herons.txt"):
        assert (status[name][0] == "added") == (name in stored), (status, stored)
    assert "No space left" in " ".join(e or "" for _, e in status.values())
