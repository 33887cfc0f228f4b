"""A data folder on a full disk: true reports, old documents still readable, recovery by freeing.

Row 7 of part three, on a real 48 MB filesystem (a tmpfs; mounting one needs
root, so elsewhere the test is skipped): an ingest that hit the full disk
mid-way was reported "error, 0 chunks added" though it was stored; after a
restart with the disk still full, ``/documents`` and ``/retrieve`` failed for
every document; after space was freed, requests hung until another restart.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from gradio_client import Client, handle_file

from tests.security.conftest import start_app

# Every test starts a main.py child, which loads the model.
pytestmark = [pytest.mark.model, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]

# Ingests two documents straight into the store, the second after the disk filled up
# behind the store's back (its own free-space check is skipped, as when another program
# fills the disk meanwhile); prints each report and what the store then lists.
INGEST_ON_A_FILLING_DISK = """
import json, shutil, sys
from pathlib import Path
from retrieval.chunking import ChunkSettings
from retrieval.embedder import Embedder
from retrieval.store import DocumentStore

from studio.datadir import InstanceLock, load_secret

data, docs = Path(sys.argv[1]), Path(sys.argv[2])
load_secret(data)  # what an earlier run of the app leaves
InstanceLock(data).acquire().release()
store = DocumentStore(Embedder(), path=data / "chroma")
settings = ChunkSettings()
old = store.ingest_file(str(docs / "old.txt"), "old.txt", "shared", settings, 2**22)
with open(data / "filler", "wb") as f:  # the disk fills up
    try:
        while True:
            f.write(bytes(2**16))
            f.flush()
    except OSError:
        pass
store.check_space = lambda *args: None
new = store.ingest_file(str(docs / "new.txt"), "new.txt", "shared", settings, 2**22)
listed = [d["source"] for d in store.documents("shared")]
print(json.dumps({"old": old.status, "new": [new.status, new.chunks_added, new.error],
                  "listed": listed, "free": shutil.disk_usage(data).free}))
"""


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)])
    if done.returncode != 0:
        pytest.skip("mounting a 48 MB tmpfs needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)])


def fill(path: Path) -> None:
    """Write zeros to ``path`` until the disk is full."""
    with open(path, "ab") as f:
        try:
            while True:
                f.write(bytes(2**16))
                f.flush()
        except OSError:
            pass


def text(topic: str, lines: int) -> str:
    return "\n".join(
        f"{topic} record {i}: the keeper logged the tide, the wind and the lamp at dusk."
        for i in range(lines)
    )


def test_a_full_disk_reports_truly_reads_on_and_recovers(small_disk, tmp_path):
    data = small_disk / "data"
    data.mkdir()
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "old.txt").write_text("The lighthouse keeper was Ada Wren.", encoding="utf-8")
    (docs / "new.txt").write_text(text("Harbour", 3000), encoding="utf-8")
    run = subprocess.run(
        [sys.executable, "-c", INGEST_ON_A_FILLING_DISK, str(data), str(docs)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["old"] == "added"
    status, added, error = report["new"]
    # The report says what was stored: added and listed, or an error and not listed.
    assert (status == "added") == ("new.txt" in report["listed"]), report
    assert "old.txt" in report["listed"], report
    stored_new = status == "added"
    fill(data / "filler2")  # still full when the app starts
    assert shutil.disk_usage(data).free < 2**20

    app = start_app(data, "--min-free-mb", "0")
    try:
        client = Client(app.url, verbose=False)
        listed = {d["source"]: d["chunks"] for d in client.predict(api_name="/documents")}
        assert "old.txt" in listed and ("new.txt" in listed) == stored_new, listed
        if stored_new:
            assert listed["new.txt"] == added
        found = client.predict(query="Who was the lighthouse keeper?", k=2, api_name="/retrieve")
        assert any("Ada Wren" in p["text"] for p in found), found
        # Freeing space is enough: a new document goes in, without a restart.
        (data / "filler").unlink()
        (data / "filler2").unlink()
        (docs / "later.txt").write_text("The ferry leaves at noon from pier four.")
        [out] = client.predict(files=[handle_file(str(docs / "later.txt"))], api_name="/ingest")
        assert out["status"] == "added", out
        found = client.predict(query="When does the ferry leave?", k=4, api_name="/retrieve")
        assert any("pier four" in p["text"] for p in found), found
    finally:
        app.stop()
