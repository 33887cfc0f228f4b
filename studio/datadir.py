"""The data folder: one running app per folder (a lock), the app's secret, the browser key.

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

SECRET_FILE = ".secret"
BROWSER_KEY_FILE = ".browser-key"


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
    """The app's secret (created once, readable only by its owner); it never leaves the server.

    It keys per-session names, so it survives restarts. Call ``load_browser_key``
    first: a folder whose secret was once sent to browsers gets a new one.
    """
    path = Path(data_dir) / SECRET_FILE
    try:
        data = path.read_bytes()
        if len(data) >= 32:
            return data
    except FileNotFoundError:
        pass
    data = secrets.token_hex(32).encode()
    _write_private(path, data)
    return data


def load_browser_key(data_dir: str | Path) -> str:
    """The key ``gr.BrowserState`` encrypts saved chats with (created once, not secret).

    Gradio sends it to every visitor in ``/config``, so it is random and shares
    nothing with the app's secret; it survives restarts so that saved chats
    still open. Earlier versions used the first 32 characters of the secret
    instead: that value becomes this key (chats saved then still open) and
    the secret is replaced, since half of it was published.
    """
    path = Path(data_dir) / BROWSER_KEY_FILE
    try:
        key = path.read_text(encoding="ascii").strip()
        if len(key) >= 32:
            return key
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    secret_path = Path(data_dir) / SECRET_FILE
    old = secret_path.read_bytes() if secret_path.is_file() else b""
    key = old.decode("ascii", "replace")[:32] if len(old) >= 32 else secrets.token_hex(16)
    try:
        _write_private(path, key.encode("ascii", "replace"))
    except OSError as exc:  # a full disk must not stop the app: try again at the next start
        print(f"warning: could not save the saved-chats key ({exc}); it is kept in memory, "
              "so chats saved in browsers may not open after a restart", flush=True)  # fmt: skip
        return key
    if old:
        _write_private(secret_path, secrets.token_hex(32).encode())
    return key


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` at once, readable only by its owner."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
