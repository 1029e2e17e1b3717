"""Blob storage for originals and rendered variants.

``Storage`` is what the services need; ``LocalStorage`` keeps everything in the data
directory, ``imagehost.s3storage.S3Storage`` keeps originals and shared variants in an
S3-compatible bucket. Both keep this daemon's variant cache (the fast first level, see
``imagehost.service.variant_cache``) in ``<data_dir>/cache``. Every method that may touch
the disk or the network blocks: call it from a worker thread, never from the reactor.

Originals live at ``originals/<id[0:2]>/<id[2:4]>/<id>.<ext>``. Every write goes to a
temp file in the same folder and is renamed into place, so readers never see a
partial file; ``sweep_temp_files`` removes what a crash left behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

TEMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class StoredObject:
    """One stored file of an image, as listed for garbage collection."""

    image_id: str
    ext: str  # the original's extension; "" for a shared variant
    size: int
    modified: float  # seconds since the epoch


def original_name(name: str) -> tuple[str, str] | None:
    """``(id, ext)`` of an original's file name, None for anything else (temp files)."""
    image_id, dot, ext = name.rpartition(".")
    if not dot or not image_id or name.startswith(TEMP_PREFIX):
        return None
    return image_id, ext


class Storage(Protocol):
    """Where originals and variants live (every method blocks; see the module docstring).

    Missing originals raise FileNotFoundError; a store that cannot be reached raises
    ``imagehost.service.errors.StorageUnavailable``.
    """

    cache: Path  # this daemon's variant cache folder

    def prepare(self) -> None: ...
    def variants_dir(self, image_id: str) -> Path: ...
    def put_original(self, image_id: str, ext: str, data: bytes) -> None: ...
    def local_original(self, image_id: str, ext: str) -> Path | None: ...
    def read_original(self, image_id: str, ext: str) -> bytes: ...
    def delete_original(self, image_id: str, ext: str) -> None: ...
    def get_variant(self, image_id: str, key: str) -> bytes | None: ...
    def put_variant(self, image_id: str, key: str, data: bytes) -> None: ...
    def delete_variants(self, image_id: str) -> None: ...
    def stored_originals(self) -> Iterator[StoredObject]: ...
    def shared_variants(self) -> Iterator[StoredObject]: ...
    def is_healthy(self) -> bool: ...


class LocalStorage:
    """Originals in ``<data_dir>/originals``, rendered variants in ``<data_dir>/cache``.

    The variant cache is the only level of variants: there is no shared store.
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self.originals = self.root / "originals"
        self.cache = self.root / "cache"

    def prepare(self) -> None:
        """Create folders and remove temp files left by a crash (blocking)."""
        for folder in (self.originals, self.cache):
            folder.mkdir(parents=True, exist_ok=True)
            sweep_temp_files(folder)

    def variants_dir(self, image_id: str) -> Path:
        """The folder holding every cached variant of one image."""
        return self.cache / image_id[0:2] / image_id

    def delete_variants(self, image_id: str) -> None:
        """Remove every cached variant of an image (blocking)."""
        shutil.rmtree(self.variants_dir(image_id), ignore_errors=True)

    def original_path(self, image_id: str, ext: str) -> Path:
        return self.originals / image_id[0:2] / image_id[2:4] / f"{image_id}.{ext}"

    def local_original(self, image_id: str, ext: str) -> Path:
        """The original's file, which the caller may open itself (it may be missing)."""
        return self.original_path(image_id, ext)

    def read_original(self, image_id: str, ext: str) -> bytes:
        """The original's bytes; FileNotFoundError if it is gone."""
        return self.original_path(image_id, ext).read_bytes()

    def get_variant(self, image_id: str, key: str) -> bytes | None:
        """No shared variant store: the variant cache is the only level."""
        return None

    def put_variant(self, image_id: str, key: str, data: bytes) -> None:
        """No shared variant store: nothing to do."""

    def put_original(self, image_id: str, ext: str, data: bytes) -> None:
        """Store ``data`` atomically (blocking)."""
        atomic_write(self.original_path(image_id, ext), data)

    def stored_originals(self) -> Iterator[StoredObject]:
        """Every original file, with or without a record (blocking)."""
        for path in self.originals.glob("*/*/*"):
            parsed = original_name(path.name)
            if parsed is None:
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:  # deleted while we listed
                continue
            yield StoredObject(*parsed, stat.st_size, stat.st_mtime)

    def shared_variants(self) -> Iterator[StoredObject]:
        """No shared variant store: nothing."""
        return iter(())

    def delete_original(self, image_id: str, ext: str) -> None:
        """Remove an original; a missing file is not an error (blocking)."""
        try:
            self.original_path(image_id, ext).unlink()
        except FileNotFoundError:
            pass

    def is_healthy(self) -> bool:
        """Both folders exist and are writable (a quick check: no file is written)."""
        return all(folder.is_dir() and os.access(folder, os.W_OK)
                   for folder in (self.originals, self.cache))


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
