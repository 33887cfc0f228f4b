"""One app per data folder, and what a restart keeps.

Row 8 of the scoping issue, and the row that held: a restart keeps saved
personas and shared documents while dropping session uploads.
"""

from __future__ import annotations

import signal

import pytest
from gradio_client import Client, handle_file

from tests.conftest import free_port, spawn_main
from tests.helpers.servers import session_collections
from tests.security.conftest import dependency, queue_call, start_app

# Every test starts a main.py child, which loads the model.
pytestmark = [pytest.mark.model, pytest.mark.slow]


def test_one_app_per_data_folder_and_a_restart_keeps_what_is_shared(tmp_path):
    data = tmp_path / "data"
    first = start_app(data)  # private: the person at this machine is the admin
    try:
        client = Client(first.url, verbose=False)
        shared = tmp_path / "handbook.md"
        shared.write_text("# Handbook\n\nThe library opens at eight.", encoding="utf-8")
        upload = tmp_path / "scratch.txt"
        upload.write_text("A note for this session only.", encoding="utf-8")
        client.predict(files=[handle_file(str(shared))], shared=True, api_name="/ingest")
        client.predict(files=[handle_file(str(upload))], api_name="/ingest")
        save = dependency(first.url, trigger="persona-save")
        assert queue_call(first.url, save, ["name: Librarian\n", {}], "admin-tab")["success"]
        assert session_collections(first)

        # A second app on the same folder refuses to start, saying why.
        second = spawn_main("--port", str(free_port()), "--data-dir", str(data))
        out, _ = second.communicate(timeout=180)
        assert second.returncode == 1
        assert "Another GPT Chat Studio" in out and "--data-dir" in out
        assert f"pid {first.proc.pid}" in out and "Traceback" not in out
    finally:
        first.proc.send_signal(signal.SIGKILL)  # no clean shutdown: the lock is left behind
        first.proc.wait(timeout=30)

    again = start_app(data)  # the stale lock of a killed app is taken over
    try:
        client = Client(again.url, verbose=False)
        assert "librarian" in {p["id"] for p in client.predict(api_name="/personas")}
        docs = client.predict(api_name="/documents")
        assert [(d["collection"], d["source"]) for d in docs] == [("shared", "handbook.md")]
        assert session_collections(again) == []  # last run's session uploads are gone
    finally:
        again.stop()
