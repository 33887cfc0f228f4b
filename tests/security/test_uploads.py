"""Uploads: bounded per request, per session and on disk, kept in the data folder, never served.

Rows 2 and 3 of the scoping issue, and the rows that held (per-file 413, file routes).
"""

from __future__ import annotations

import httpx
import pytest
from gradio_client import Client, handle_file

from tests.security.conftest import start_app

KB = 1024


def blob(tmp_path, name: str, size: int) -> str:
    path = tmp_path / name
    line = b"Lanterns glow along the harbour wall at dusk. "
    path.write_bytes((line * (size // len(line) + 1))[:size])
    return str(path)


def upload(app, paths: list[str]) -> httpx.Response:
    files = [("files", (p.rsplit("/", 1)[1], open(p, "rb"), "text/plain")) for p in paths]
    return httpx.post(app.url + "gradio_api/upload", files=files, timeout=60)


def test_one_request_cannot_carry_more_than_the_limit(public_app, tmp_path):
    # --max-request-upload-mb 3: four files of 900 KB each (3.5 MB) in one POST.
    paths = [blob(tmp_path, f"part{i}.txt", 900 * KB) for i in range(4)]
    r = upload(public_app, paths)
    assert r.status_code == 413 and "--max-request-upload-mb" in r.text
    before = _stored(public_app)
    assert not any(p.endswith(("part0.txt", "part3.txt")) for p in before)


def test_one_request_cannot_carry_too_many_files(public_app, tmp_path):
    # --max-files-per-request 3
    paths = [blob(tmp_path, f"small{i}.txt", 2 * KB) for i in range(5)]
    r = upload(public_app, paths)
    assert r.status_code == 413 and "--max-files-per-request" in r.text
    assert upload(public_app, paths[:3]).status_code == 200


def test_a_single_oversized_file_is_refused(public_app, tmp_path):
    r = upload(public_app, [blob(tmp_path, "huge.txt", 3 * 1024 * KB + 1)])
    assert r.status_code == 413


def test_uploads_live_in_the_data_folder_and_are_never_served(public_app, tmp_path):
    r = upload(public_app, [blob(tmp_path, "private-notes.txt", 4 * KB)])
    assert r.status_code == 200
    stored = r.json()[0]
    assert stored.startswith(str(public_app.data_dir / "uploads"))
    # Another visitor, knowing the exact path, cannot fetch it (nor can the uploader).
    for url in (f"gradio_api/file={stored}", f"file={stored}"):
        got = httpx.get(public_app.url + url, timeout=30)
        assert got.status_code in (403, 404) and "Lanterns" not in got.text


def test_ingested_uploads_are_deleted_from_disk(public_app, tmp_path):
    client = Client(public_app.url, verbose=False)
    out = client.predict(
        files=[handle_file(blob(tmp_path, "gone.txt", 3 * KB))], api_name="/ingest"
    )
    assert out[0]["status"] == "added"
    assert not [p for p in _stored(public_app) if p.endswith("gone.txt")]


def test_a_session_has_an_upload_allowance(public_app, tmp_path):
    # --max-session-upload-mb 4: the fifth file of 900 KB is refused, with a clear reason.
    # (Binary files are refused quickly once read, but their bytes count all the same.)
    client = Client(public_app.url, verbose=False)
    doc = tmp_path / "photo.txt"
    doc.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(900 * KB))
    results = []
    for _ in range(5):
        results += client.predict(files=[handle_file(str(doc))], api_name="/ingest")
    assert all("binary" in r["error"] for r in results[:4])
    assert results[4]["status"] == "error" and "--max-session-upload-mb" in results[4]["error"]


@pytest.mark.parametrize(
    "path",
    [
        "gradio_api/file=../../../../etc/passwd",
        "gradio_api/file=/etc/passwd",
        "gradio_api/file=%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "file=/etc/passwd",
        "gradio_api/file=main.py",
    ],
)
def test_file_routes_refuse_paths_outside_what_the_app_serves(public_app, path):
    got = httpx.get(public_app.url + path, timeout=30)
    assert got.status_code in (400, 403, 404) and "root:" not in got.text


@pytest.mark.model
@pytest.mark.slow
def test_upload_space_is_capped(tmp_path):
    app = start_app(
        tmp_path / "data",
        "--host", "0.0.0.0",
        "--max-upload-storage-mb", "1",
        "--max-request-upload-mb", "0.8",
    )  # fmt: skip
    try:
        first = upload(app, [blob(tmp_path, "a.txt", 700 * KB)])
        assert first.status_code == 200
        second = upload(app, [blob(tmp_path, "b.txt", 700 * KB)])
        assert second.status_code == 413 and "--max-upload-storage-mb" in second.text
    finally:
        app.stop()


def _stored(app) -> list[str]:
    return [str(p) for p in (app.data_dir / "uploads").rglob("*") if p.is_file()]
