"""How uploads go away (plain files; ``server.uploads`` points the web server's uploads here).

An upload is deleted once ingested; one never ingested expires after
``--upload-ttl-minutes``; and the folder is emptied when the app starts (no
session survives a restart, so nothing in it can still be wanted). The part
of an upload whose client went away mid-way is ``server.uploads``'s to delete.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

log = logging.getLogger("chat_studio")


def upload_dir() -> Path:
    """The folder uploads are stored in (``GRADIO_TEMP_DIR``, which ``server.uploads`` sets)."""
    folder = os.environ.get("GRADIO_TEMP_DIR") or str(Path(tempfile.gettempdir()) / "gradio")
    return Path(folder).resolve()


def remove_upload(path: str | Path) -> None:
    """Delete an uploaded file and its folder once empty; never anything outside the uploads."""
    folder = upload_dir()
    p = Path(path).resolve()
    if folder not in p.parents:
        return
    try:
        p.unlink(missing_ok=True)
        if p.parent != folder:
            p.parent.rmdir()
    except OSError:
        pass


def clear_folder(folder: Path) -> None:
    """Delete everything inside ``folder`` (uploads left by an earlier run)."""
    for entry in folder.iterdir():
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError as exc:
            log.warning("could not delete the old upload %s: %s", entry, exc)


def remove_expired(folder: Path, max_age_s: float) -> int:
    """Delete uploads not touched for ``max_age_s`` (and folders left empty); how many files."""
    cutoff = time.time() - max_age_s
    removed = 0
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        try:
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        except OSError:
            pass  # taken by an ingest meanwhile, or already gone
    return removed


def start_upload_sweeper(folder: Path, max_age_s: float, stop: threading.Event) -> threading.Thread:
    """A daemon thread that deletes expired uploads until ``stop`` is set."""
    period = max(0.5, min(60.0, max_age_s / 4))

    def loop():
        while not stop.wait(period):
            remove_expired(folder, max_age_s)

    thread = threading.Thread(target=loop, daemon=True, name="upload-sweeper")
    thread.start()
    return thread
