"""Where uploads land (``<data dir>/uploads``, Gradio's temp folder) and how they go away."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


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
    moving it under the first app's feet.
    """
    global _chosen
    if _chosen is None:
        _chosen = (Path(data_dir) / "uploads").resolve()
        _chosen.mkdir(parents=True, exist_ok=True)
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
