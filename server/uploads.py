"""Where the web server's uploads land (``<data dir>/uploads``), and partial uploads.

Gradio stores uploads in ``GRADIO_TEMP_DIR``; ``use_upload_dir`` points it at
the data folder, and the guard deletes at once what an upload whose client
went away mid-way had written (``partial_uploads``). The plain clean-up of
the folder (expiry, deletion after ingest) is ``studio.uploads``.
"""

from __future__ import annotations

import contextvars
import logging
import os
from contextlib import contextmanager
from pathlib import Path

from server import gradio_internals
from studio.uploads import clear_folder

log = logging.getLogger("chat_studio")

# Whose choice GRADIO_TEMP_DIR is: this process's id once an app of it has chosen the folder.
CHOSEN_BY = "CHAT_STUDIO_UPLOADS_CHOSEN_BY"


def use_upload_dir(data_dir: str | Path) -> Path:
    """Point Gradio's uploads at ``<data dir>/uploads`` (call before Gradio is imported).

    One folder per process: Gradio reads ``GRADIO_TEMP_DIR`` both when it is
    imported and each time it checks that a file was uploaded, so a second app
    in the same process (tests) shares the first one's folder rather than
    moving it under the first app's feet. The first app empties it: it holds
    the data folder's lock, so what is left there belongs to no live session.
    The choice is kept in the environment itself, marked with the process id,
    so a child process that inherits it still chooses its own.
    """
    if os.environ.get(CHOSEN_BY) == str(os.getpid()) and os.environ.get("GRADIO_TEMP_DIR"):
        return Path(os.environ["GRADIO_TEMP_DIR"])
    folder = (Path(data_dir) / "uploads").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    clear_folder(folder)
    os.environ["GRADIO_TEMP_DIR"] = str(folder)
    os.environ[CHOSEN_BY] = str(os.getpid())
    return folder


# -- partial uploads ------------------------------------------------------------------------
# Gradio writes each uploaded file to a temporary file, renamed into place once the request
# is complete; a client that goes away mid-way leaves it behind. The guard notes the
# temporary files its request makes, and deletes those never renamed.

_made: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "upload_temp_files", default=None
)


def _note(name: str) -> None:
    made = _made.get()
    if made is not None:
        made.append(name)


def track_temp_files() -> None:
    """Note every temporary file Gradio's upload parser makes (raises on a Gradio without it)."""
    gradio_internals.note_upload_temp_files(_note)


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
