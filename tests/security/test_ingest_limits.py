"""Ingest work is bounded by the text it carries, per request and per session, and shared.

Row 4 of part three: a 98 KB ``.json`` of one key holding 50,000 small numbers
became 10,102 chunks (563 s of embedding) while the single ingest slot was held
for everyone.
"""

from __future__ import annotations

import json
import random
import threading
import time

import httpx
import pytest
from gradio_client import Client, handle_file

from tests.security.conftest import dependency, queue_call, start_app

# Every test starts a main.py child, which loads the model.
pytestmark = [pytest.mark.model, pytest.mark.slow]

KB = 1024
SESSION_CHUNKS = 500


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    data = tmp_path_factory.mktemp("ingest-limits")
    app = start_app(
        data,
        "--host", "0.0.0.0",
        "--max-upload-mb", "2",
        "--max-session-chunks", str(SESSION_CHUNKS),
    )  # fmt: skip
    yield app
    app.stop()


def numbers_json(tmp_path, name: str, seed: int, count: int = 50_000):
    """One key holding ``count`` one-digit numbers (50,000: about 98 KB)."""
    rng = random.Random(seed)
    path = tmp_path / name
    values = [rng.randrange(10) for _ in range(count)]
    path.write_text(json.dumps({"readings": values}, separators=(",", ":")))
    return path


def prose(tmp_path, name: str, size: int, topic: str):
    words = "lanterns harbour tide ferry gull rope beacon pier salt sail".split()
    rng = random.Random(name)
    lines = []
    while sum(len(line) + 1 for line in lines) < size:
        lines.append(f"{topic}: " + " ".join(rng.choice(words) for _ in range(14)) + ".")
    path = tmp_path / name
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def page_ingest(app, path, session: str, chunk_size: int, overlap: int, events=None) -> list:
    """Upload and ingest as the page does (its chunk sliders); the summary rows."""
    http = httpx.Client(base_url=app.url, timeout=600)
    with open(path, "rb") as f:
        r = http.post("/gradio_api/upload", files=[("files", (path.name, f))])
    assert r.status_code == 200, r.text
    file_data = {"path": r.json()[0], "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}
    fn = dependency(app.url, http=http, trigger="ingest")
    data = [[file_data], chunk_size, overlap]
    out = queue_call(app.url, fn, data, session, http=http, timeout=600)
    if events is not None:
        events.append((session, time.monotonic()))
    assert out.get("success"), out
    return out["output"]["data"][0]["data"]


def test_dense_json_is_cut_into_few_chunks(app, tmp_path):
    doc = numbers_json(tmp_path, "readings.json", seed=1)
    assert 90 * KB < doc.stat().st_size < 110 * KB
    # The smallest chunks the page offers: this made 10,102 chunks.
    [row] = page_ingest(app, doc, "dense-json-session", chunk_size=32, overlap=0)
    file, status, added = row[:3]
    assert status == "added", row
    assert added <= doc.stat().st_size // 128, row  # at least 128 bytes of upload per chunk


def test_a_session_has_a_chunk_allowance(app, tmp_path):
    client = Client(app.url, verbose=False)
    results = []
    for i in range(4):  # each about 250 chunks: the third goes past 500
        doc = numbers_json(tmp_path, f"batch{i}.json", seed=100 + i, count=20_000)
        results += client.predict(files=[handle_file(str(doc))], api_name="/ingest")
        if results[-1]["status"] == "error":
            break
    added = [r for r in results if r["status"] == "added"]
    assert added and sum(r["chunks_added"] for r in added) <= SESSION_CHUNKS
    refused = results[-1]
    assert refused["status"] == "error" and "--max-session-chunks" in refused["error"], results
    # Another session has its own allowance.
    fresh = Client(app.url, verbose=False)
    doc = numbers_json(tmp_path, "fresh.json", seed=999, count=20_000)
    [out] = fresh.predict(files=[handle_file(str(doc))], api_name="/ingest")
    assert out["status"] == "added", out


def test_a_large_ingest_does_not_hold_back_another_visitor(app, tmp_path):
    big = prose(tmp_path, "almanac.txt", 300 * KB, "Almanac")  # within the session's chunks
    small = prose(tmp_path, "note.txt", 2 * KB, "Note")
    done: list = []
    started = threading.Event()

    def run_big():
        started.set()
        page_ingest(app, big, "big-session", chunk_size=200, overlap=40, events=done)

    worker = threading.Thread(target=run_big)
    worker.start()
    started.wait()
    time.sleep(3)  # the large ingest has its slot and is loading, chunking, embedding
    [row] = page_ingest(app, small, "small-session", chunk_size=200, overlap=40, events=done)
    assert row[1] == "added", row
    worker.join(timeout=600)
    # The small upload was served while the large one was still running.
    assert [session for session, _ in done] == ["small-session", "big-session"], done
