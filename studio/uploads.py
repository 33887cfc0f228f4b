"""Where uploads land (``<data dir>/uploads``, Gradio's temp folder) and how they go away.

An upload is deleted once ingested; one never ingested expires after
``--upload-ttl-minutes``; the part of an upload whose client went away
mid-way is deleted at once; and the folder is emptied when the app starts
(no session survives a restart, so nothing in it can still be wanted).
"""

from __future__ import annotations

import contextvars
import logging
import os
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("chat_studio")


def upload_dir() -> Path:
    """The folder Gradio stores uploads in (``GRADIO_TEMP_DIR``, set at launch)."""
    folder = os.environ.get("GRADIO_TEMP_DIR") or str(Path(tempfile.gettempdir()) / "gradio")
    return Path(folder).resolve()


_chosen: Path | None = None  # the process's upload folder, once an app has picked it


def use_upload_dir(data_dir: str | Path) -> Path:
    """Point Gradio's uploads at ``<data dir>/uploads`` (call before Gradio is imported).

    One folder per process: Gradio reads ``GRADIO_TEMP_DIR`` both when an app
    is built and each time it checks that a file was uploaded, so a second app
    in the same process (tests) shares the first one's folder rather than
    moving it under the first app's feet. The first app empties it: it holds
    the data folder's lock, so what is left there belongs to no live session.
    """
    global _chosen
    if _chosen is None:
        _chosen = (Path(data_dir) / "uploads").resolve()
        _chosen.mkdir(parents=True, exist_ok=True)
        clear_folder(_chosen)
        os.environ["GRADIO_TEMP_DIR"] = str(_chosen)
    return _chosen


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


# -- partial uploads ------------------------------------------------------------------------
# Gradio writes each uploaded file to a temporary file, renamed into place once the request
# is complete; a client that goes away mid-way leaves it behind. The guard notes the
# temporary files its request makes, and deletes those never renamed.

_made: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "upload_temp_files", default=None
)


def track_temp_files() -> bool:
    """Note every temporary file Gradio's upload parser makes; whether this Gradio allows it."""
    try:
        from gradio import route_utils
    except ImportError:
        return False
    original = getattr(route_utils, "NamedTemporaryFile", None)
    if original is None:
        return False
    if getattr(original, "_tracked", False):
        return True

    def tracked(*args, **kwargs):
        handle = original(*args, **kwargs)
        made = _made.get()
        if made is not None:
            made.append(handle.name)
        return handle

    tracked._tracked = True
    route_utils.NamedTemporaryFile = tracked
    return True


@contextmanager
def partial_uploads():
    """Within the block, note the upload's temporary files; after it, delete those left.

    Yields a list that holds, after the block, the paths that had to be deleted
    (the upload did not complete).
    """
    made: list[str] = []
    left: list[str] = []
    token = _made.set(made)
    try:
        yield left
    finally:
        _made.reset(token)
        for name in made:
            try:
                os.unlink(name)
                left.append(name)
            except FileNotFoundError:
                pass  # renamed into place: a complete upload
            except OSError as exc:
                log.warning("could not delete a partial upload %s: %s", name, exc)
