"""Intermediates of expensive sources: made once, kept with the variants, rendered from.

An image whose original is expensive to decode (``imaging.intermediate``: PNG, WebP,
AVIF, HEIC, large enough) gets a reduced high-quality copy, made on the CPU pool's
background lane after the upload's 201 (``Delivery.render_first_views``) or, if it is
missing (images stored before, an evicted file), by the first render that would use it.
It lives among the image's cached variants (``VariantCache``, file name
``imaging.intermediate.file_name``) and, with S3 storage, among the shared variants, so
it is removed with them, never backed up (it is derived) and never an original to
``verify`` or ``gc``. Writes are atomic, so two daemons or workers making it at once
only replace one complete file with an identical one.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from imagehost.db.images import ImageRecord
from imagehost.imaging import intermediate
from imagehost.imaging.probe import EXTENSION_BY_MIME, KNOWN_FORMATS
from imagehost.imaging.render import RenderError, RenderSpec
from imagehost.service.pools import Pools
from imagehost.service.variant_cache import VariantCache
from imagehost.storage import Storage

_log = Logger()
_FORMAT_BY_MIME = {mime: fmt for fmt, (mime, _ext) in KNOWN_FORMATS.items()}


class Intermediates:
    """Finds, makes and shares the intermediates of one daemon's images (``long_side``
    0: none, every variant comes from the original)."""

    def __init__(self, pools: Pools, storage: Storage, cache: VariantCache, long_side: int):
        self._cpu = pools.cpu
        self._io = pools.io
        self._storage = storage
        self._cache = cache
        self.long_side = long_side
        self.name = intermediate.file_name(long_side)
        # Intermediates being made, by image id: (on the background lane?, waiters).
        self._making: dict[str, tuple[bool, list[Deferred]]] = {}
        self.made = 0

    def wanted(self, image: ImageRecord) -> bool:
        """Whether ``image`` gets an intermediate."""
        return intermediate.wanted(_FORMAT_BY_MIME.get(image.mime_type, ""), image.width,
                                   image.height, self.long_side)

    def path(self, image_id: str) -> Path:
        """Where an image's intermediate lives in this daemon's cache."""
        return self._cache.path(image_id, self.name)

    async def source(self, image: ImageRecord, spec: RenderSpec) -> Path | bytes | None:
        """What to render ``spec`` of ``image`` from: its intermediate (the cached file, or
        the bytes just made or fetched), or None for the original (not an expensive source,
        a variant not clearly smaller, or the intermediate being made in the background)."""
        if not self.wanted(image) or not intermediate.serves(spec, image.width, image.height,
                                                              self.long_side):
            return None
        path = self.path(image.id)
        if self._cache.touch(path):
            return path
        making = self._making.get(image.id)
        if making is not None and making[0]:
            return None  # queued behind requests: this one is better off with the original
        return await self.ensure(image)

    def ensure(self, image: ImageRecord, *,
               background: bool = False) -> Deferred[Path | bytes | None]:
        """Make the intermediate of ``image`` unless it exists (``background``: on the CPU
        pool's background lane); fires with its bytes (or its path when it was there
        already), or None when the original cannot be decoded (then its variants fail as
        they always did)."""
        waiter: Deferred[Path | bytes | None] = Deferred()
        making = self._making.get(image.id)
        if making is not None:
            making[1].append(waiter)
            return waiter
        self._making[image.id] = (background, [waiter])
        d = Deferred.fromCoroutine(self._make(image, background))
        d.addBoth(self._made, image.id)
        return waiter

    def _made(self, result, image_id: str) -> None:
        _lane, waiters = self._making.pop(image_id)
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    async def _make(self, image: ImageRecord, background: bool) -> Path | bytes | None:
        path = self.path(image.id)
        ext = EXTENSION_BY_MIME[image.mime_type]
        original: Path | bytes | None = self._storage.local_original(image.id, ext)
        remote = original is None
        if remote:
            shared = await self._io.run(self._storage.get_variant, image.id, self.name)
            if shared is not None:
                await self._cache.keep(path, shared)
                return shared
            original = await self._io.run(self._storage.read_original, image.id, ext)
        submit = self._cpu.submit_background if background else self._cpu.submit
        try:
            data = await submit(_make_unless_cached, path, original, self.long_side)
        except RenderError as e:
            _log.warn("Cannot make the intermediate of {id}: {error}", id=image.id, error=e)
            return None
        if data is None:
            return path  # another worker or daemon made it meanwhile
        self.made += 1
        if remote:
            shared_put = self._io.run(self._storage.put_variant, image.id, self.name, data)
            shared_put.addErrback(lambda f: _log.warn(
                "Cannot share the intermediate of {id}: {error}", id=image.id,
                error=f.getErrorMessage()))
        await self._cache.keep(path, data)
        return data


def _make_unless_cached(path: Path, original: Path | bytes, long_side: int) -> bytes | None:
    """``make_intermediate``, or None when another worker or daemon made it meanwhile
    (blocking)."""
    if path.exists():
        return None
    return intermediate.make_intermediate(original, long_side)
