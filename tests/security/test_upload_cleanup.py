"""Uploads that are never ingested go away: aborted mid-way, expired, or left by an earlier run.

Row 6 of part three: two raw uploads that declared more than they sent left
``uploads/tmp*`` files that counted against ``--max-upload-storage-mb`` forever
(and survived a restart), so every later visitor was told the space was full.
"""

from __future__ import annotations

import socket
import time
from urllib.parse import urlparse

import httpx
import pytest

from tests.security.conftest import start_app

# Every test starts a main.py child, which loads the model.
pytestmark = [pytest.mark.model, pytest.mark.slow]

KB = 1024
MB = 1024 * KB
BOUNDARY = "leftoverboundary"


def aborted_upload(url: str, declared: int, sent: int) -> None:
    """POST a multipart upload declaring ``declared`` bytes, send ``sent`` of them, hang up."""
    head = (
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="files"; filename="big.txt"\r\n'
        "Content-Type: text/plain\r\n\r\n"
    ).encode()
    target = urlparse(url)
    with socket.create_connection((target.hostname, target.port), timeout=30) as sock:
        sock.sendall(
            (
                f"POST /gradio_api/upload HTTP/1.1\r\nHost: {target.netloc}\r\n"
                f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
                f"Content-Length: {declared}\r\n\r\n"
            ).encode()
            + head
        )
        line = b"Harbour lanterns are lit at dusk along the old sea wall.\n" * 1024
        left = sent - len(head)
        while left > 0:
            piece = line[: min(left, len(line))]
            sock.sendall(piece)
            left -= len(piece)
        time.sleep(1)  # let the server write what it got before the line drops


def upload(app, name: str, size: int) -> httpx.Response:
    data = (b"Lanterns glow along the harbour wall at dusk. " * (size // 40 + 1))[:size]
    return httpx.post(
        app.url + "gradio_api/upload", files=[("files", (name, data, "text/plain"))], timeout=60
    )


def stored(app) -> list[str]:
    return sorted(str(p) for p in (app.data_dir / "uploads").rglob("*") if p.is_file())


def wait_until_empty(app, timeout: float = 30) -> list[str]:
    deadline = time.time() + timeout
    while stored(app) and time.time() < deadline:
        time.sleep(0.2)
    return stored(app)


def test_aborted_uploads_leave_nothing_and_take_no_space(tmp_path):
    app = start_app(
        tmp_path / "data",
        "--host", "0.0.0.0",
        "--max-upload-storage-mb", "4",
        "--max-request-upload-mb", "3",
    )  # fmt: skip
    try:
        for _ in range(2):  # 2 x 1.5 MB sent: with 2 MB more, over the 4 MB of upload space
            aborted_upload(app.url, declared=2 * MB, sent=int(1.5 * MB))
        assert wait_until_empty(app) == []
        time.sleep(2.5)  # the guard measures the folder at most every 2 s
        r = upload(app, "after.txt", 2 * MB)
        assert r.status_code == 200, r.text
    finally:
        app.stop()


def test_uploads_expire_and_leftovers_go_at_start(tmp_path):
    data = tmp_path / "data"
    old = data / "uploads"
    (old / "0123abcd").mkdir(parents=True)
    (old / "0123abcd" / "forgotten.txt").write_text("never ingested", encoding="utf-8")
    (old / "tmpk3x9q2").write_bytes(b"half an upload" * 1000)
    app = start_app(data, "--host", "0.0.0.0", "--upload-ttl-minutes", "0.05")
    try:
        assert stored(app) == []  # what an earlier run left is gone at start
        r = upload(app, "pending.txt", 4 * KB)
        assert r.status_code == 200 and stored(app)
        # Never ingested: deleted once older than --upload-ttl-minutes (3 s here).
        assert wait_until_empty(app) == []
        assert not list((data / "uploads").iterdir())
    finally:
        app.stop()
