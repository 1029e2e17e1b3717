"""Atomic file writes and the temp files they leave behind after a crash."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

TEMP_PREFIX = ".tmp-"


def atomic_write(path: Path, data: bytes, durable: bool = True) -> None:
    """Write ``data`` to ``path`` via a temp file and a rename.

    ``durable`` syncs the data to disk before the rename (originals). A cache of
    derived files may skip it: a crash of the process loses nothing either way, only
    a power cut could leave an empty cache file, and that costs a re-render at worst.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise


def sweep_temp_files(root: Path) -> int:
    """Delete temp files under ``root``; returns how many were removed."""
    removed = 0
    for temp in root.rglob(TEMP_PREFIX + "*"):
        temp.unlink(missing_ok=True)
        removed += 1
    return removed
