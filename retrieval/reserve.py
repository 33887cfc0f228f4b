"""Disk the document store holds for itself, and gives back when the disk fills up.

Chroma writes each add to a log first and applies it to its segments after;
every read applies what is pending first, and opening the store needs a
little room too. So when the disk fills mid-write, the log keeps records that
cannot be applied, and every read fails, old documents included, even after a
restart. The store keeps a file of a few MB beside its folder: when a write or
a read fails, or the store cannot open, the file is deleted, the pending
records are applied and reads work again. It is made again once there is room.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger("chat_studio")

MIB = 2**20
RESERVE_MAX = 16 * MIB  # at most an eighth of the disk
RESERVE_MIN = MIB


class DiskReserve:
    """A file of ``size`` bytes kept beside the store, given back when space runs out."""

    def __init__(self, path: str | Path, size: int | None = None):
        self.path = Path(path)
        self.size = size

    def _size(self) -> int:
        if self.size is None:
            self.size = min(RESERVE_MAX, shutil.disk_usage(self.path.parent).total // 8)
        return self.size

    def ensure(self, spare: int = 0, partial: bool = False) -> bool:
        """Make the file if it is missing and the disk has room for it plus ``spare`` bytes.

        ``partial``: on a nearly full disk, hold what there is (at least 1 MB):
        a little is enough for the store to open and be read.
        """
        if self.path.exists():
            return True
        size = self._size()
        try:
            free = shutil.disk_usage(self.path.parent).free
            if partial:
                size = min(size, free - RESERVE_MIN)
            if size < RESERVE_MIN or free < size + spare:
                return False
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                # Real blocks, not a sparse file: they must be there to give back.
                os.posix_fallocate(fd, 0, size)
            finally:
                os.close(fd)
            return True
        except OSError:
            self.path.unlink(missing_ok=True)
            return False

    def release(self) -> bool:
        """Delete the file; whether there was one to give back."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        log.warning("the disk of the document store is full: its reserve %s was freed", self.path)
        return True

    @property
    def held(self) -> int:
        """Bytes held now."""
        try:
            return self.path.stat().st_size
        except OSError:
            return 0
