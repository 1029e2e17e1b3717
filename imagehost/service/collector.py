"""Garbage collection: stored files that no record (nor a preserved delete) accounts for.

They are left by a crash between storing an original and inserting its record, by a
render that shares a variant while its image is being deleted, and by a daemon that
stopped (or whose image was deleted through another daemon) before it removed an image's
cached variants. None is ever served; this removes them. Files younger than
``older_than`` seconds are kept: an upload stores its original a moment before its record
exists.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import chain

from imagehost.db import images as image_queries
from imagehost.service.pools import Pools
from imagehost.storage import Storage, StoredObject
from imagehost.storage.interface import cached_variants

DEFAULT_GRACE = 3600.0


@dataclass
class Garbage:
    """What a collection found (and removed, unless it was a dry run)."""

    originals: list[StoredObject] = field(default_factory=list)
    variants: dict[str, list[StoredObject]] = field(default_factory=dict)  # by image id

    @property
    def original_bytes(self) -> int:
        return sum(o.size for o in self.originals)

    @property
    def variant_bytes(self) -> int:
        return sum(v.size for objects in self.variants.values() for v in objects)


class GarbageCollector:
    """Finds and removes stored files of images that have no record."""

    def __init__(self, pools: Pools, storage: Storage,
                 clock: Callable[[], float] = time.time):
        self._db = pools.db
        self._io = pools.io
        self._storage = storage
        self._clock = clock

    async def collect(self, *, older_than: float = DEFAULT_GRACE,
                      dry_run: bool = False) -> Garbage:
        """List the garbage and, unless ``dry_run``, remove it."""
        if older_than < 0:
            raise ValueError("older_than must not be negative")
        kept = await self._db.run(image_queries.kept_image_ids)
        cutoff = self._clock() - older_than
        garbage = await self._io.run(_find, self._storage, kept, cutoff)
        if not dry_run:
            await self._io.run(_remove, self._storage, garbage)
        return garbage


def unrecorded_originals(storage: Storage, kept: set[str],
                         cutoff: float) -> list[StoredObject]:
    """Stored originals older than ``cutoff`` that no record nor preserved delete
    accounts for (blocking: call it on the I/O pool)."""
    return list(_unaccounted(storage.stored_originals(), kept, cutoff))


def _find(storage: Storage, kept: set[str], cutoff: float) -> Garbage:
    garbage = Garbage(originals=unrecorded_originals(storage, kept, cutoff))
    variants = chain(storage.shared_variants(), cached_variants(storage.cache))
    for variant in _unaccounted(variants, kept, cutoff):
        garbage.variants.setdefault(variant.image_id, []).append(variant)
    return garbage


def _unaccounted(objects: Iterable[StoredObject], kept: set[str],
                 cutoff: float) -> Iterable[StoredObject]:
    return (o for o in objects if o.image_id not in kept and o.modified < cutoff)


def _remove(storage: Storage, garbage: Garbage) -> None:
    for original in garbage.originals:
        storage.delete_original(original.image_id, original.ext)
    for image_id in {o.image_id for o in garbage.originals} | set(garbage.variants):
        storage.delete_variants(image_id)
