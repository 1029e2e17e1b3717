"""What the services need of a blob store: ``Storage``, and the objects it lists."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from imagehost.storage.files import TEMP_PREFIX


@dataclass(frozen=True)
class StoredObject:
    """One stored file of an image, as listed for garbage collection."""

    image_id: str
    ext: str  # the original's extension; "" for a shared variant
    size: int
    modified: float  # seconds since the epoch
    location: str = ""  # relative to the data directory, or the object's key in the bucket


def original_name(name: str) -> tuple[str, str] | None:
    """``(id, ext)`` of an original's file name, None for anything else (temp files)."""
    image_id, dot, ext = name.rpartition(".")
    if not dot or not image_id or name.startswith(TEMP_PREFIX):
        return None
    return image_id, ext


def cached_variants(cache: Path) -> Iterator[StoredObject]:
    """Every file in a variant cache folder (``<cache>/<id[0:2]>/<id>/<key>``), temp files
    aside, located relative to the cache's parent (the data directory) (blocking)."""
    for path in cache.glob("*/*/*"):
        if path.name.startswith(TEMP_PREFIX):
            continue
        try:
            stat = path.stat()
        except FileNotFoundError:  # evicted while we listed
            continue
        yield StoredObject(path.parent.name, "", stat.st_size, stat.st_mtime,
                           str(path.relative_to(cache.parent)))


class Storage(Protocol):
    """Where originals and variants live (every method blocks: call it on the I/O pool).

    Missing originals raise FileNotFoundError; a store that cannot be reached raises
    ``imagehost.storage.errors.StorageUnavailable``.
    """

    cache: Path  # this daemon's variant cache folder

    def prepare(self, sweep: bool = True) -> None: ...
    def variants_dir(self, image_id: str) -> Path: ...
    def put_original(self, image_id: str, ext: str, data: bytes) -> None: ...
    def original_location(self, image_id: str, ext: str) -> str: ...
    def local_original(self, image_id: str, ext: str) -> Path | None: ...
    def read_original(self, image_id: str, ext: str) -> bytes: ...
    def delete_original(self, image_id: str, ext: str) -> None: ...
    def get_variant(self, image_id: str, key: str) -> bytes | None: ...
    def put_variant(self, image_id: str, key: str, data: bytes) -> None: ...
    def delete_variants(self, image_id: str) -> None: ...
    def stored_originals(self) -> Iterator[StoredObject]: ...
    def shared_variants(self) -> Iterator[StoredObject]: ...
    def is_healthy(self) -> bool: ...
