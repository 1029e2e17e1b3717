"""Originals and variants in the data directory.

Originals live at ``originals/<id[0:2]>/<id[2:4]>/<id>.<ext>``. Every write goes to a
temp file in the same folder and is renamed into place, so readers never see a
partial file; ``sweep_temp_files`` removes what a crash left behind.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from imagehost.storage.files import atomic_write, sweep_temp_files
from imagehost.storage.interface import StoredObject, original_name


class LocalStorage:
    """Originals in ``<data_dir>/originals``, rendered variants in ``<data_dir>/cache``.

    The variant cache is the only level of variants: there is no shared store.
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self.originals = self.root / "originals"
        self.cache = self.root / "cache"

    def prepare(self, sweep: bool = True) -> None:
        """Create folders and (``sweep``) remove temp files left by a crash (blocking)."""
        for folder in (self.originals, self.cache):
            folder.mkdir(parents=True, exist_ok=True)
            if sweep:
                sweep_temp_files(folder)

    def variants_dir(self, image_id: str) -> Path:
        """The folder holding every cached variant of one image."""
        return self.cache / image_id[0:2] / image_id

    def delete_variants(self, image_id: str) -> None:
        """Remove every cached variant of an image (blocking)."""
        shutil.rmtree(self.variants_dir(image_id), ignore_errors=True)

    def original_path(self, image_id: str, ext: str) -> Path:
        return self.originals / image_id[0:2] / image_id[2:4] / f"{image_id}.{ext}"

    def original_location(self, image_id: str, ext: str) -> str:
        """The original's path relative to the data directory (as listings give it)."""
        return str(self.original_path(image_id, ext).relative_to(self.root))

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
            yield StoredObject(*parsed, stat.st_size, stat.st_mtime,
                               str(path.relative_to(self.root)))

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
