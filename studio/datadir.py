"""The data folder: one running app per folder (a lock), and the app's secret.

The lock is an ``flock`` on ``<data dir>/.lock``: the operating system drops it
when the process dies, however it dies, so a lock left by a killed app is
simply taken over. The file holds the owner's pid for the error message.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from chat.errors import ChatStudioError

try:
    import fcntl
except ImportError:  # Windows: no flock; one app per folder is then up to the user
    fcntl = None


class DataDirBusy(ChatStudioError):
    """Another running app uses this data folder."""


class InstanceLock:
    """Held while the app runs; a second app on the same folder refuses to start."""

    def __init__(self, data_dir: str | Path):
        self.path = Path(data_dir) / ".lock"
        self._file = None

    def acquire(self) -> InstanceLock:
        """Take the lock or raise ``DataDirBusy`` naming the other process."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 (held open while running)
        if fcntl is not None:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.seek(0)
                owner = f.read().strip() or "unknown"
                f.close()
                raise DataDirBusy(
                    f"Another GPT Chat Studio (pid {owner}) is running on the data folder "
                    f"{self.path.parent}. Stop it first, or start this one with another "
                    "--data-dir."
                ) from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._file = f
        return self

    def release(self) -> None:
        """Let go of the lock (also happens when the process exits)."""
        if self._file is not None:
            self._file.close()
            self._file = None


def load_secret(data_dir: str | Path) -> bytes:
    """The app's secret (created once, readable only by its owner).

    It keys per-session names and encrypts what the page keeps in the
    browser, so it survives restarts.
    """
    path = Path(data_dir) / ".secret"
    try:
        data = path.read_bytes()
        if len(data) >= 32:
            return data
    except FileNotFoundError:
        pass
    data = secrets.token_hex(32).encode()
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return data
