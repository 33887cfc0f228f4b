"""Chunking, the Chroma document store and retrieval quality, with the real MiniLM embedder.

Chroma runs for real: on disk in a temp dir, as a ``chroma run`` server, and under SIGKILL.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from chat.errors import DocumentError, ModelLoadError
from retrieval.chunking import ChunkSettings, chunk_sections
from retrieval.types import Section
from tests.conftest import free_port

pytestmark = pytest.mark.model

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
MAX_BYTES = 2 * 2**20
SMALL = ChunkSettings(chunk_size=64, chunk_overlap=16)

FRUIT = (
    "The quince orchard at Pellow Farm has forty trees. Quinces are picked in October "
    "and stored in straw until they turn golden and fragrant."
)
BOATS = (
    "The ferry Marigold crosses the strait twice a day. Its engine was replaced in 1998 "
    "and it can carry twelve cars and two hundred passengers."
)
BEES = (
    "Our beekeeper keeps nine hives behind the chapel. In a good summer each hive gives "
    "about twenty kilograms of heather honey."
)


@pytest.fixture(scope="module")
def embedder():
    """The bundled all-MiniLM-L6-v2, loaded once for this module."""
    from retrieval.embedder import Embedder

    return Embedder()


@pytest.fixture
def store(embedder, tmp_path):
    """A DocumentStore on disk in a fresh temp dir."""
    from retrieval.store import DocumentStore

    return DocumentStore(embedder, path=tmp_path / "chroma")


def write(folder: Path, name: str, text: str) -> tuple[str, str]:
    """Write a file and return the ``(path, original name)`` pair ingest expects."""
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return str(path), name


def long_text(n: int = 40) -> str:
    """Distinct sentences, so chunks and their overlaps are recognisable."""
    return " ".join(f"Sentence number {i} talks about topic {i * 7 % 13}." for i in range(n))


# -- embedder ---------------------------------------------------------------------------


def test_embedder_basics(embedder):
    vecs = embedder.encode(["a red apple", "a green apple"])
    assert embedder.name == "all-MiniLM-L6-v2"
    assert embedder.dim == 384 == len(vecs[0])
    assert abs(sum(x * x for x in vecs[0]) - 1.0) < 1e-4  # normalized
    assert embedder.count_tokens("hello world") == 2  # no [CLS]/[SEP]
    assert embedder.max_tokens == 256


def test_embedder_missing_path_names_the_flag(tmp_path):
    from retrieval.embedder import Embedder

    with pytest.raises(ModelLoadError, match="--embedding-model") as err:
        Embedder(str(tmp_path / "nope"))
    assert str(tmp_path / "nope") in str(err.value)
    with pytest.raises(ModelLoadError, match="--embedding-model"):
        Embedder(str(tmp_path))  # a folder that is not a model


# -- chunking ---------------------------------------------------------------------------


def test_chunk_settings_bounds():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="chunk_overlap"):
        ChunkSettings(chunk_size=64, chunk_overlap=64)
    with pytest.raises(ValidationError, match="chunk_size"):
        ChunkSettings(chunk_size=8)
    with pytest.raises(ValidationError, match="extra"):
        ChunkSettings(chunk_sise=100)


def test_chunks_respect_token_size_and_overlap(embedder):
    settings = ChunkSettings(chunk_size=48, chunk_overlap=16)
    chunks = chunk_sections([Section(long_text())], ".txt", settings, embedder.count_tokens)
    assert len(chunks) > 5
    assert [c.chunk_index for c in chunks] == list(range(len(chunks)))
    assert all(embedder.count_tokens(c.text) <= 48 for c in chunks)
    for a, b in zip(chunks, chunks[1:], strict=False):
        tail = a.text.split()[-3:]
        assert " ".join(tail) in b.text, "neighbouring chunks should overlap"
    no_overlap = ChunkSettings(chunk_size=48, chunk_overlap=0)
    plain = chunk_sections([Section(long_text())], ".txt", no_overlap, embedder.count_tokens)
    assert len(plain) < len(chunks)


def test_markdown_sections_recorded(embedder):
    text = (
        "Preface line.\n\n# Intro\nWelcome text.\n\n## Setup\nInstall it.\n\n"
        "Then configure it.\n\n### Deep\nDetails.\n\n# Usage\nRun it.\n\n   \n"
    )
    chunks = chunk_sections([Section(text)], ".md", ChunkSettings(), embedder.count_tokens)
    by_section = {c.section: c.text for c in chunks}
    assert by_section[None] == "Preface line."
    assert by_section["Intro"].startswith("# Intro")
    assert "Install it.\n\nThen configure it." in by_section["Intro > Setup"]
    assert "Details." in by_section["Intro > Setup > Deep"]
    assert by_section["Usage"] == "# Usage\nRun it."
    assert all(c.text.strip() for c in chunks)
    assert [c.chunk_index for c in chunks] == list(range(len(chunks)))


def test_pdf_pages_kept_and_indexes_continue(embedder):
    sections = [Section(long_text(20), page=1), Section("   "), Section(long_text(10), page=2)]
    chunks = chunk_sections(sections, ".pdf", SMALL, embedder.count_tokens)
    pages = [c.page for c in chunks]
    assert pages[0] == 1 and pages[-1] == 2 and None not in pages
    assert pages == sorted(pages)
    assert [c.chunk_index for c in chunks] == list(range(len(chunks)))


# -- store ------------------------------------------------------------------------------


def test_collection_names():
    from retrieval.store import check_collection_name
    from studio.access import Access

    access = Access(secret=b"k" * 32)
    name = access.private_name("ab12/../x y")
    assert name.startswith("session-") and check_collection_name(name) == name
    assert access.private_name("abc") != Access(secret=b"j" * 32).private_name("abc")
    for bad in ("a", "-abc", "abc-", "a..b", "sp ace", "x" * 70):
        with pytest.raises(DocumentError, match="collection name"):
            check_collection_name(bad)


def test_ingest_list_duplicate_delete_clear(store, tmp_path):
    files = [write(tmp_path, "fruit.txt", FRUIT), write(tmp_path, "boats.md", "# Boats\n" + BOATS)]
    calls = []
    summaries = store.ingest(
        files, "shared", ChunkSettings(), MAX_BYTES, progress=lambda *a: calls.append(a)
    )
    assert calls == [(0, 2, "fruit.txt"), (1, 2, "boats.md")]
    assert [s.status for s in summaries] == ["added", "added"]
    docs = store.documents("shared")
    assert [d["source"] for d in docs] == ["boats.md", "fruit.txt"]
    assert all(d["chunks"] == 1 and d["ingested_at"].endswith("+00:00") for d in docs)

    again = store.ingest_file(*files[0], "shared", ChunkSettings(), MAX_BYTES)
    assert (again.status, again.chunks_added, again.chunks_skipped) == ("duplicate", 0, 1)
    renamed = store.ingest_file(
        write(tmp_path, "copy.txt", FRUIT)[0], "copy.txt", "shared", SMALL, MAX_BYTES
    )
    assert renamed.status == "duplicate"  # same content, other name and chunking
    assert len(store.documents("shared")) == 2

    fruit_hash = summaries[0].doc_hash
    assert store.delete_document("shared", fruit_hash) == 1
    assert [d["source"] for d in store.documents("shared")] == ["boats.md"]
    with pytest.raises(DocumentError, match="No document"):
        store.delete_document("shared", fruit_hash)
    store.clear("shared")
    assert store.documents("shared") == []
    assert store.retrieve("ferry", ["shared"]) == []
    store.drop("shared")
    store.drop("shared")  # missing is fine
    assert store.documents("never-made") == []


def test_metadata_fields(store, tmp_path, monkeypatch):
    import retrieval.loaders

    pages = [Section(long_text(30), page=1), Section(BOATS + " " + BEES, page=3)]
    monkeypatch.setattr(retrieval.loaders, "load_document", lambda path, name, mb: pages)
    summary = store.ingest_file("ignored.pdf", "report.pdf", "shared", SMALL, MAX_BYTES)
    assert summary.status == "added" and summary.chunks_added > 2
    col = store.client.get_collection("shared", embedding_function=None)
    metas = col.get(include=["metadatas"])["metadatas"]
    assert len(metas) == summary.chunks_added
    assert sorted(m["chunk_index"] for m in metas) == list(range(summary.chunks_added))
    for m in metas:
        assert m["source"] == "report.pdf" and m["doc_hash"] == summary.doc_hash
        assert m["page"] in (1, 3) and "T" in m["ingested_at"]
        assert "section" not in m
    hit = store.retrieve("Which ferry crosses the strait?", ["shared"], k=1)[0]
    assert (hit.source, hit.page, hit.section, hit.collection) == ("report.pdf", 3, None, "shared")
    assert hit.doc_hash == summary.doc_hash and 0 < hit.score <= 1.0001


def test_markdown_section_in_passage(store, tmp_path):
    text = "# Animals\n\n## Bees\n" + BEES + "\n\n## Boats\n" + BOATS
    store.ingest([write(tmp_path, "notes.md", text)], "shared", ChunkSettings(), MAX_BYTES)
    hit = store.retrieve("How much honey does a hive make?", ["shared"], k=1)[0]
    assert hit.section == "Animals > Bees" and "heather honey" in hit.text


def test_bad_file_does_not_stop_the_others(store, tmp_path, monkeypatch):
    files = [
        write(tmp_path, "fruit.txt", FRUIT),
        (str(tmp_path / "missing.txt"), "missing.txt"),
        write(tmp_path, "empty.txt", "   \n\n  "),
        write(tmp_path, "boats.txt", BOATS),
    ]
    summaries = store.ingest(files, "shared", ChunkSettings(), MAX_BYTES)
    assert [s.status for s in summaries] == ["added", "error", "error", "added"]
    assert summaries[1].error and summaries[2].error
    assert summaries[1].file == "missing.txt"
    # An unexpected crash inside one file is contained too.
    monkeypatch.setattr(store.embedder, "encode", lambda texts: 1 / 0)
    crash = store.ingest_file(*write(tmp_path, "bees.txt", BEES), "shared", SMALL, MAX_BYTES)
    assert crash.status == "error" and "ZeroDivisionError" in crash.error
    assert len(store.documents("shared")) == 2


def test_persistence_and_session_isolation(embedder, tmp_path):
    from retrieval.store import SHARED, DocumentStore

    path = tmp_path / "chroma"
    first = DocumentStore(embedder, path=path)
    sess_a, sess_b = "session-aaa111", "session-bbb222"
    first.ingest([write(tmp_path, "fruit.txt", FRUIT)], SHARED, ChunkSettings(), MAX_BYTES)
    first.ingest([write(tmp_path, "bees.txt", BEES)], sess_a, ChunkSettings(), MAX_BYTES)
    del first

    reopened = DocumentStore(embedder, path=path)
    assert [d["source"] for d in reopened.documents(SHARED)] == ["fruit.txt"]
    question = "How many beehives are there?"
    seen_b = reopened.retrieve(question, [SHARED, sess_b], k=4)
    assert [p.source for p in seen_b] == ["fruit.txt"]
    seen_a = reopened.retrieve(question, [SHARED, sess_a], k=4)
    assert seen_a[0].source == "bees.txt" and seen_a[0].collection == sess_a
    assert seen_a[0].score > seen_a[1].score
    reopened.drop(sess_a)
    assert [p.source for p in reopened.retrieve(question, [SHARED, sess_a])] == ["fruit.txt"]


def test_min_score_filters(store, tmp_path):
    files = [write(tmp_path, n, t) for n, t in [("f.txt", FRUIT), ("b.txt", BOATS)]]
    store.ingest(files, "shared", ChunkSettings(), MAX_BYTES)
    everything = store.retrieve("When are quinces harvested?", ["shared"], k=4)
    assert len(everything) == 2 and everything[0].source == "f.txt"
    threshold = (everything[0].score + everything[1].score) / 2
    kept = store.retrieve("When are quinces harvested?", ["shared"], k=4, min_score=threshold)
    assert [p.source for p in kept] == ["f.txt"]
    assert store.retrieve("When are quinces harvested?", ["shared"], min_score=0.99) == []


def test_mmr_prefers_diverse_passages(store, tmp_path):
    near_duplicates = [
        f"The lighthouse on Crane Point is painted red and white{s}" for s in (".", "!", " indeed.")
    ]
    others = [
        "The lighthouse keeper on Crane Point also tends a garden of leeks.",
        "Crane Point lighthouse was automated in 1987 and its lamp is solar powered.",
    ]
    files = [write(tmp_path, f"doc{i}.txt", t) for i, t in enumerate(near_duplicates + others)]
    store.ingest(files, "shared", ChunkSettings(), MAX_BYTES)
    question = "What colours is the Crane Point lighthouse painted?"
    plain = store.retrieve(question, ["shared"], k=3)
    assert all("red and white" in p.text for p in plain)  # relevance alone: all the copies
    diverse = store.retrieve(question, ["shared"], k=3, mmr=True, mmr_lambda=0.5)
    assert len(diverse) == 3
    assert "red and white" in diverse[0].text
    assert sum("red and white" in p.text for p in diverse) == 1
    assert len({p.doc_hash for p in diverse}) == 3


# -- Chroma server ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory):
    """A real ``chroma run`` server on a free loopback port; yields its port."""
    cli = Path(sys.executable).with_name("chroma")
    if not cli.exists() and not shutil.which("chroma"):
        pytest.skip("the chroma CLI is not installed (pip install chromadb)")
    port = free_port()
    data = tmp_path_factory.mktemp("chroma-server")
    proc = subprocess.Popen(
        [str(cli if cli.exists() else "chroma"), "run", "--path", str(data)]
        + ["--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=1)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"chroma run did not start on port {port}")
                time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_two_app_instances_share_a_chroma_server(embedder, chroma_server, tmp_path):
    from retrieval.store import SHARED, DocumentStore

    writer = DocumentStore(embedder, host="127.0.0.1", port=chroma_server)
    files = [write(tmp_path, "bees.txt", BEES), write(tmp_path, "boats.txt", BOATS)]
    assert [s.status for s in writer.ingest(files, SHARED, ChunkSettings(), MAX_BYTES)] == [
        "added",
        "added",
    ]
    reader = DocumentStore(embedder, host="127.0.0.1", port=chroma_server)
    assert [d["source"] for d in reader.documents(SHARED)] == ["bees.txt", "boats.txt"]
    hit = reader.retrieve("How many hives does the beekeeper have?", [SHARED], k=1)[0]
    assert hit.source == "bees.txt" and "nine hives" in hit.text
    again = reader.ingest_file(*files[0], SHARED, ChunkSettings(), MAX_BYTES)
    assert again.status == "duplicate"


def test_unreachable_server_is_a_document_error(embedder):
    from retrieval.store import DocumentStore

    with pytest.raises(DocumentError, match="Cannot reach the Chroma server"):
        DocumentStore(embedder, host="127.0.0.1", port=free_port())


# -- crash safety -----------------------------------------------------------------------

INGEST_SCRIPT = """
import sys
from pathlib import Path
from retrieval.chunking import ChunkSettings
from retrieval.embedder import Embedder
from retrieval.store import DocumentStore

store = DocumentStore(Embedder(), path=sys.argv[1])
settings = ChunkSettings(chunk_size=64, chunk_overlap=16)
for p in sorted(Path(sys.argv[2]).glob("*.txt")):
    s = store.ingest_file(str(p), p.name, "shared", settings, 10**6)
    assert s.status == "added", s
    print("DONE", s.doc_hash, s.chunks_added, flush=True)
"""


def test_sigkill_during_ingest_leaves_only_whole_documents(embedder, tmp_path):
    from retrieval.ingest import _doc_hash
    from retrieval.loaders import load_document
    from retrieval.store import DocumentStore

    docs_dir = tmp_path / "docs"
    docs_dir.mkdir()
    expected = {}  # doc_hash -> full chunk count
    for i in range(30):
        path, name = write(docs_dir, f"note{i:02d}.txt", long_text(40 + i) + f" Note {i}.")
        sections = load_document(path, name, MAX_BYTES)
        expected[_doc_hash(sections)] = len(
            chunk_sections(sections, ".txt", SMALL, embedder.count_tokens)
        )
    db = tmp_path / "chroma"
    proc = subprocess.Popen(
        [sys.executable, "-c", INGEST_SCRIPT, str(db), str(docs_dir)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    done = {}
    try:
        for line in proc.stdout:
            _, doc_hash, count = line.split()
            done[doc_hash] = int(count)
            if len(done) == 5:
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.kill()
        proc.wait()
    assert len(done) == 5, "the ingest subprocess died before writing 5 documents"

    store = DocumentStore(embedder, path=db)
    listed = {d["doc_hash"]: d["chunks"] for d in store.documents("shared")}
    for doc_hash, count in done.items():
        assert listed.get(doc_hash) == count == expected[doc_hash]
    # Raw rows, not only documents() (which hides incomplete docs): nothing half-written.
    col = store.client.get_collection("shared", embedding_function=None)
    raw: dict[str, int] = {}
    for meta in col.get(include=["metadatas"])["metadatas"]:
        raw[meta["doc_hash"]] = raw.get(meta["doc_hash"], 0) + 1
    assert raw == {h: expected[h] for h in raw}
    assert store.retrieve("Sentence number 3", ["shared"], k=2)
    resumed = store.ingest_file(str(docs_dir / "note29.txt"), "n.txt", "shared", SMALL, MAX_BYTES)
    assert resumed.status == "added"


def test_multi_batch_document_counts_only_when_complete(store, tmp_path, monkeypatch):
    from chromadb.api.models.Collection import Collection

    monkeypatch.setattr(store, "_max_batch", 2)  # force several add calls per document
    path, name = write(tmp_path, "long.txt", long_text(40))
    real_add, calls = Collection.add, []

    def add_then_crash(self, **kwargs):
        calls.append(len(kwargs["ids"]))
        if len(calls) == 2:
            raise RuntimeError("simulated crash between batches")
        return real_add(self, **kwargs)

    monkeypatch.setattr(Collection, "add", add_then_crash)
    broken = store.ingest_file(path, name, "shared", SMALL, MAX_BYTES)
    assert broken.status == "error" and "simulated crash" in broken.error
    assert store.documents("shared") == []  # the first batch is there, but hidden
    assert store.retrieve("Sentence number 1", ["shared"]) == []
    monkeypatch.setattr(Collection, "add", real_add)

    fixed = store.ingest_file(path, name, "shared", SMALL, MAX_BYTES)
    assert fixed.status == "added" and fixed.chunks_added > 2
    assert store.documents("shared")[0]["chunks"] == fixed.chunks_added
    assert store.retrieve("Sentence number 1", ["shared"], k=2)
    assert store.ingest_file(path, name, "shared", SMALL, MAX_BYTES).status == "duplicate"


def _nice(tid: int) -> int:
    """A thread's nice value (field 19 of its /proc stat line)."""
    stat = Path(f"/proc/self/task/{tid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[16])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread priority: Linux")
def test_ingest_embeds_below_the_chat_and_a_question_does_not(store, embedder, tmp_path):
    """A chat decoding beside an ingest gets its core first: the ingest's embedding runs on a
    niced thread, and so do the torch workers that thread starts. A visitor's question is
    embedded on its own thread, at normal priority."""
    import threading

    import torch

    from retrieval.turns import BACKGROUND_NICE

    mine = _nice(threading.get_native_id())
    calls, real = [], embedder.encode

    def spy(texts, fast=False):
        calls.append(_nice(threading.get_native_id()))
        return real(texts, fast)

    path, name = write(tmp_path, "long.txt", long_text(40))
    before = set(int(t.name) for t in Path("/proc/self/task").iterdir())
    embedder.encode = spy
    try:
        assert store.ingest_file(path, name, "shared", SMALL, MAX_BYTES).status == "added"
        ingest_calls = list(calls)
        assert store.retrieve("Sentence number 1", ["shared"], k=2)
    finally:
        del embedder.encode
    niced = min(19, mine + BACKGROUND_NICE)
    assert ingest_calls and set(ingest_calls) == {niced}
    assert calls[len(ingest_calls) :] and set(calls[len(ingest_calls) :]) == {mine}
    started = [int(t.name) for t in Path("/proc/self/task").iterdir() if int(t.name) not in before]
    workers = [tid for tid in started if _nice(tid) == niced]
    # the thread and torch's workers for it (as many as torch uses there, itself included)
    assert len(workers) >= store._turns.run(torch.get_num_threads)  # noqa: SLF001


# -- retrieval quality ------------------------------------------------------------------


def test_recall_at_4_on_fictional_corpus(store):
    corpus = sorted((DATA / "rag_corpus").iterdir())
    questions = json.loads((DATA / "rag_questions.json").read_text(encoding="utf-8"))
    assert len(corpus) >= 8 and len(questions) >= 24
    start = time.perf_counter()
    summaries = store.ingest([(str(p), p.name) for p in corpus], "shared", ChunkSettings(), 10**6)
    elapsed = time.perf_counter() - start
    assert all(s.status == "added" for s in summaries), summaries
    n_chunks = sum(s.chunks_added for s in summaries)
    misses = []
    for q in questions:
        passages = store.retrieve(q["question"], ["shared"], k=4)
        if not any(p.source == q["source"] and q["answer_snippet"] in p.text for p in passages):
            misses.append(q["question"])
    recall = 1 - len(misses) / len(questions)
    print(
        f"\nrecall@4 = {recall:.3f} over {len(questions)} questions; "
        f"ingested {n_chunks} chunks in {elapsed:.2f}s ({n_chunks / elapsed:.0f} chunks/s); "
        f"misses: {misses}"
    )
    assert recall >= 0.9, misses
