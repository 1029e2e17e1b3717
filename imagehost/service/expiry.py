"""Expired images: deleted with their files by ``imagehost gc`` and by each daemon's
periodic sweep.

An expired image is 404 from the moment it expires (delivery and every listing check
the time themselves); the sweep only reclaims the space. The record goes first, the
files after it, as in a delete: a failure halfway leaves an orphan file for gc, never
a record without its file.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from twisted.logger import Logger

from imagehost.db import images as q
from imagehost.service.pools import Pools
from imagehost.storage import Storage

_log = Logger()
BATCH = 500


class ExpiredImages:
    """Deletes images whose expiry has passed: record, original and variants."""

    def __init__(self, pools: Pools, storage: Storage, *, now: Callable[[], datetime],
                 on_delete: Callable[[str], None] = lambda image_id: None):
        self._db = pools.db
        self._io = pools.io
        self._storage = storage
        self._now = now
        self._on_delete = on_delete

    async def pending(self) -> list[str]:
        """The ids a sweep would delete now (for ``imagehost gc --dry-run``)."""
        return await self._db.run(q.expired_image_ids, self._now())

    async def sweep(self) -> list[str]:
        """Delete every image expired by now, in batches; the ids deleted."""
        deleted: list[str] = []
        while True:
            batch = await self._db.run(q.delete_expired_images, self._now(), BATCH)
            for original in batch:
                self._on_delete(original.image_id)
            await self._io.run(self._remove_files, batch)
            deleted += [o.image_id for o in batch]
            if len(batch) < BATCH:
                return deleted

    def _remove_files(self, batch: list[q.RecordedOriginal]) -> None:
        for original in batch:
            try:
                self._storage.delete_variants(original.image_id)
                self._storage.delete_original(original.image_id, original.ext)
            except Exception:
                _log.failure("Expired image {id} deleted; removing its files failed",
                             id=original.image_id)
