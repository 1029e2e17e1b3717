"""Image delivery: the stored original or a resized/converted variant, cached on disk.

``locate`` resolves a request (id, extension, query) to an :class:`ImageContent` whose
ETag is known before any pixel is touched, so a conditional request costs one DB read.
``body`` then produces the bytes: the original, a cached variant file, a variant another
daemon shared through the storage (S3), or a fresh render on the CPU pool. Identical
concurrent misses share one render (single flight). A miss is answered before its cache
file is written; until the file has landed, its bytes serve the same variant from memory.
Smaller variants of originals that are expensive to decode (PNG, WebP, AVIF, HEIC) are
rendered from their intermediate (``service.intermediates``) instead of the original.

Several daemons may serve one database: an image remembered here is trusted without a
database read for ``revalidate_after`` seconds at most, so a delete made through another
daemon reaches this one within that bound (README, "Scale-out").
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from imagehost.db import images as q
from imagehost.db.images import ImageRecord
from imagehost.imaging.intermediate import (
    DEFAULT_LONG_SIDE,
    NotFromIntermediate,
    render_from_intermediate,
)
from imagehost.imaging.probe import (
    DISPLAY_EXTENSION_BY_MIME,
    EXTENSION_BY_MIME,
    KNOWN_FORMATS,
    SOURCE_ONLY_FORMATS,
)
from imagehost.imaging.render import (
    LOSSY_FORMATS,
    OUTPUT_FORMATS,
    RenderError,
    RenderSpec,
    plan_variant,
    render_variant,
)
from imagehost.service.errors import BadRequest, DamagedOriginal, NotFound
from imagehost.service.intermediates import Intermediates
from imagehost.service.pools import Pools
from imagehost.service.transforms import (
    AUTO,
    PRESET_MAX_DIMENSION,
    SIGNATURE_PARAMETER,
    THUMBNAIL_PRESET,
    DeliveryPolicy,
    ImageUrls,
    Presets,
    Transform,
    UrlSigner,
    canonical_parameters,
    parse_transform,
)
from imagehost.service.variant_cache import VariantCache
from imagehost.service.views import ViewCounter
from imagehost.storage import Storage

_log = Logger()
_FORMAT_BY_MIME = {mime: fmt for fmt, (mime, _ext) in KNOWN_FORMATS.items()}
_SOURCE_ONLY_EXTENSIONS = {KNOWN_FORMATS[fmt][1]: fmt for fmt in SOURCE_ONLY_FORMATS
                           if fmt in KNOWN_FORMATS}
_KNOWN_IMAGES = 10_000


@dataclass(frozen=True)
class VariantRequest:
    """A delivery URL, checked against the policy and resolved to what it asks: the
    Transform (presets applied), the output extension (``auto`` before negotiation)."""

    transform: Transform
    ext: str
    negotiated: bool


@dataclass(frozen=True)
class ImageContent:
    """What a delivery URL resolves to; ``spec`` is None for the stored original's bytes."""

    image: ImageRecord
    original_ext: str
    spec: RenderSpec | None
    content_type: str
    etag: str
    last_modified: datetime
    #: The format was chosen from the request's ``Accept`` (``.auto``): send ``Vary: Accept``.
    negotiated: bool = False
    #: Where this daemon caches the variant (None for the original).
    cache_path: Path | None = None


@dataclass(frozen=True)
class Body:
    """The bytes to send: an open ``file`` (the caller closes it) or in-memory ``data``.

    ``cache`` is ``"HIT"`` (this daemon's cache), ``"SHARED"`` (rendered by another
    daemon, from the storage) or ``"MISS"`` (rendered now) for variants, None for originals.
    """

    size: int
    file: BinaryIO | None = None
    data: bytes | None = None
    cache: str | None = None


class Delivery:
    """Resolves image URLs and produces originals and (cached) rendered variants."""

    def __init__(self, pools: Pools, storage: Storage, cache: VariantCache,
                 views: ViewCounter, *, max_dimension: int, clock,
                 revalidate_after: float = 0.0, presets: Presets | None = None,
                 urls: ImageUrls | None = None, auto_avif: bool = False,
                 eager_presets: Sequence[str] = (),
                 intermediate_size: int = DEFAULT_LONG_SIDE,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self._now = now
        self._db = pools.db
        self._cpu = pools.cpu
        self._io = pools.io
        self._storage = storage
        self.cache = cache
        self.views = views
        self.max_dimension = max_dimension
        self.presets = presets or Presets.from_config({}, max_dimension)
        # Without a configured signer nothing needs signing; the key is then never used.
        self.urls = urls or ImageUrls(UrlSigner(b""), DeliveryPolicy())
        self.auto_avif = auto_avif
        self._flights: dict[tuple[str, str], list[Deferred]] = {}
        # Variants answered whose cache file is still being written, with the write.
        self._writing: dict[Path, tuple[bytes, Deferred[None]]] = {}
        self._reads: dict[str, list[Deferred]] = {}  # image records being read, by id
        # Images seen recently, with the clock time until which they are trusted. Only
        # fields that never change for an id are used (size, type, hash, creation time),
        # so a cache hit needs no database round trip, which was a quarter of the CPU
        # time of a hit (bench/README.md). The deadline bounds how long a delete made
        # through another daemon goes unnoticed here.
        self._known_images: OrderedDict[str, tuple[ImageRecord, float]] = OrderedDict()
        self._clock = clock
        self.revalidate_after = revalidate_after
        self.eager_presets = tuple(eager_presets)
        self.intermediates = Intermediates(pools, storage, cache, intermediate_size)
        self.intermediate_renders = 0  # variants rendered from an intermediate
        self.eager_renders = 0
        self._ahead: dict[str, Deferred[None]] = {}  # first views being rendered, by image
        self.hits = 0
        self.immediate_hits = 0  # hits answered by ``cached_body``, without awaiting
        self.immediate_misses = 0  # variants rendered for the hit path, without the route
        self.misses = 0
        self.renders = 0
        self.shared_hits = 0  # local misses another daemon had rendered (S3 storage)

    async def start(self) -> None:
        """Start counting views and index the variant cache (the scan runs on the I/O pool)."""
        self.views.start()
        found = await self._io.run(self.cache.scan)
        await self.cache.merge_scan(found)

    async def stop(self) -> None:
        """Write pending view counts and cache files (call before the pools stop)."""
        await self.views.stop()
        await self.written()

    async def written(self) -> None:
        """Fires once every cache file of a variant answered so far is written (or its
        write has failed)."""
        while self._writing:
            await DeferredList([write for _data, write in self._writing.values()])

    async def locate(self, image_id: str, ext: str, *, thumbnail: bool,
                     query: Mapping[str, Sequence[str]],
                     accepts: frozenset[str] = frozenset(),
                     trusted: bool = False) -> ImageContent:
        """Resolve ``/image/{id}[_thumbnail].{ext}?query``; NotFound, BadRequest, or
        SignatureInvalid / TransformNotAllowed (403s). ``accepts`` holds the image types
        the client's ``Accept`` names (for ``.auto``). ``trusted``: the caller decided
        the query itself (a share link's URLs), so the URL policy does not apply."""
        request = self._request(image_id, ext, thumbnail, query, trusted)
        remembered = self._remembered(image_id, request, accepts)
        if remembered is not None:
            return remembered
        image = await self._read_image(image_id)
        if image is None or image.mime_type not in _FORMAT_BY_MIME:
            if self._known_images.pop(image_id, None) is not None:
                self._drop_local_variants(image_id)
            raise NotFound("No such image.")
        self._remember(image)
        return self._content(image, request, accepts)

    def _read_image(self, image_id: str) -> Deferred[ImageRecord | None]:
        """The image's record from the database. Reads of one id share one query: when a
        remembered image's deadline passes, every request for it at that moment asks at
        once, and on a busy image that queued dozens of reads on the DB thread."""
        waiter: Deferred[ImageRecord | None] = Deferred()
        waiters = self._reads.get(image_id)
        if waiters is None:
            waiters = self._reads[image_id] = [waiter]
            read = self._db.run(q.image_by_id, image_id)
            read.addBoth(self._image_read, image_id, waiters, self.cache.marks_made())
        else:
            waiters.append(waiter)
        return waiter

    def _image_read(self, result, image_id: str, waiters: list[Deferred],
                    marks_before: int) -> None:
        if self._reads.get(image_id) is waiters:
            del self._reads[image_id]
        if isinstance(result, ImageRecord):
            # Its delete mark (this daemon's delete, or its own finding that another
            # deleted it) is lifted once the record is back: a restored id is cached again.
            self.cache.image_found(image_id, marks_before)
        _fire(waiters, result)

    def resolve(self, image_id: str, ext: str, *, thumbnail: bool,
                query: Mapping[str, Sequence[str]], trusted: bool = False) -> VariantRequest:
        """Check a URL against the policy (presets only, signature) and validate it.

        The policy comes first: a refused URL learns nothing about its parameters.
        """
        parameters = canonical_parameters(query)
        policy = self.urls.policy
        if not trusted:
            policy.check_presets_only(parameters)
        if not trusted and policy.needs_signature(parameters):
            name = f"{image_id}{'_thumbnail' if thumbnail else ''}.{ext}"
            signatures = set(query.get(SIGNATURE_PARAMETER, ()))
            self.urls.signer.verify(name, parameters,
                                    signatures.pop() if len(signatures) == 1 else None)
        transform = parse_transform(parameters, self.max_dimension)
        preset_name = parameters.get("p")
        if thumbnail:
            if preset_name is not None:
                raise BadRequest('A _thumbnail URL is the "thumbnail" preset: it takes no "p".')
            preset_name = THUMBNAIL_PRESET
        if preset_name is not None:
            preset = self.presets.get(preset_name)
            if preset is None:
                raise BadRequest(f'There is no preset named "{preset_name}".')
            # What the preset sets wins; the URL may add what it leaves open (q, dpr...).
            merged = {name: value for name, value in parameters.items() if name != "p"}
            transform = parse_transform(merged | dict(preset.parameters),
                                        max(self.max_dimension, PRESET_MAX_DIMENSION))
        out_ext = transform.format or ext
        return VariantRequest(transform, out_ext, negotiated=out_ext == AUTO)

    def display_url(self, image: ImageRecord, *, thumbnail: bool = False,
                    prefix: str = "/image/") -> str:
        """The URL a browser shows the image (or its thumbnail) at, signed if required."""
        ext = DISPLAY_EXTENSION_BY_MIME[image.mime_type]
        return self.urls.path(image.id, ext, thumbnail=thumbnail, prefix=prefix)

    def variant_url(self, image: ImageRecord, query: Mapping[str, Sequence[str]]) -> str:
        """A URL of ``image`` with the transform ``query`` asks for (``format`` picks the
        extension), signed if required; BadRequest or TransformNotAllowed as the URL
        itself would get."""
        parameters = canonical_parameters(query)
        self.urls.policy.check_presets_only(parameters)
        parse_transform(parameters, self.max_dimension)
        preset = parameters.get("p")
        if preset is not None and preset not in self.presets:
            raise BadRequest(f'There is no preset named "{preset}".')
        ext = parameters.pop("format", None) or DISPLAY_EXTENSION_BY_MIME[image.mime_type]
        return self.urls.path(image.id, ext, parameters)

    async def url_of(self, image_id: str, query: Mapping[str, Sequence[str]]) -> str:
        """``variant_url`` of the image with this id (the operator's CLI); NotFound."""
        image = await self._db.run(q.image_by_id, image_id)
        if image is None:
            raise NotFound("No such image.")
        return self.variant_url(image, query)

    def render_first_views(self, image: ImageRecord) -> Deferred[None]:
        """Render what a new image's first views ask for (the ``eager_presets``: its
        thumbnail by default) into the cache, on the CPU pool's background lane, so that
        requests go first. Nobody waits for it: failures are logged, and a request for a
        variant that is not rendered yet renders it as usual."""
        self.cache.image_added(image.id)
        self._remember(image)
        d = Deferred.fromCoroutine(self._render_ahead(image))
        d.addErrback(lambda f: _log.warn("Cannot render the first views of {id}: {error}",
                                         id=image.id, error=f.getErrorMessage()))
        self._ahead[image.id] = d
        d.addBoth(self._rendered_ahead, image.id)
        return d

    def _rendered_ahead(self, result, image_id: str):
        self._ahead.pop(image_id, None)
        return result

    def rendered_ahead(self, image_id: str) -> Deferred[None]:
        """Fires once the first views of ``image_id`` rendered ahead are in the cache (at
        once when none are under way)."""
        ahead = self._ahead.get(image_id)
        if ahead is None:
            return succeed(None)
        d: Deferred[None] = Deferred()
        ahead.addBoth(lambda result: (d.callback(None), result)[1])
        return d

    async def _render_ahead(self, image: ImageRecord) -> None:
        if self.intermediates.wanted(image):
            await self.intermediates.ensure(image, background=True)
        for preset in self.eager_presets:
            content = self._preset(image, preset)
            if content is None or content.spec is None:
                continue
            path = self.cache.path(image.id, content.spec.cache_key())
            if (image.id, path.name) in self._flights or path in self._writing:
                continue  # a request is rendering it already (or has just rendered it)
            _data, source = await self._produce(content, path, background=True)
            if source == "MISS":
                self.eager_renders += 1
            if path in self._writing:  # first views are in the cache when this fires
                await self._writing[path][1]

    def _preset(self, image: ImageRecord, name: str) -> ImageContent | None:
        """What ``?p=name`` (``_thumbnail`` for the thumbnail) asks of ``image``, in the
        image's own format unless the preset names one; None for a preset whose format
        depends on the client's ``Accept`` (nothing to render before a client asks)."""
        preset = self.presets.get(name)
        if preset is None or image.mime_type not in _FORMAT_BY_MIME:
            return None
        # As ``resolve`` does for the URL, without the signature: nobody asked yet.
        transform = parse_transform(dict(preset.parameters),
                                    max(self.max_dimension, PRESET_MAX_DIMENSION))
        ext = transform.format or EXTENSION_BY_MIME[image.mime_type]
        if ext == AUTO:
            return None
        return self._content(image, VariantRequest(transform, ext, negotiated=False),
                             frozenset())

    def locate_remembered(self, image_id: str, ext: str, *, thumbnail: bool,
                          query: Mapping[str, Sequence[str]],
                          accepts: frozenset[str] = frozenset()) -> ImageContent | None:
        """``locate`` from memory alone, at once; None when the database must be asked.
        Raises as ``locate``."""
        return self._remembered(image_id, self._request(image_id, ext, thumbnail, query),
                                accepts)

    def _request(self, image_id: str, ext: str, thumbnail: bool,
                 query: Mapping[str, Sequence[str]], trusted: bool = False) -> VariantRequest:
        if ext not in OUTPUT_FORMATS and ext != AUTO and ext not in _SOURCE_ONLY_EXTENSIONS:
            raise NotFound("No such image.")
        return self.resolve(image_id, ext, thumbnail=thumbnail, query=query, trusted=trusted)

    def _remembered(self, image_id: str, request: VariantRequest,
                    accepts: frozenset[str]) -> ImageContent | None:
        known = self._known_images.get(image_id)
        if known is None or self._clock.seconds() >= known[1]:
            return None
        # A delete through this daemon forgets the image at once (``forget``); one through
        # another daemon is noticed once the deadline passes. Until then a hit, a miss or
        # the original needs no database read (a fifth of the GIL time of an uncached
        # render, bench/README.md).
        self._known_images.move_to_end(image_id)
        return self._content(known[0], request, accepts)

    def still_remembered(self, content: ImageContent) -> bool:
        """Whether ``content``, from ``locate_remembered``, is still what its URL resolves
        to without asking the database: its image is still remembered, as the same record,
        and has not expired."""
        image = content.image
        known = self._known_images.get(image.id)
        if known is None or known[0] is not image or self._clock.seconds() >= known[1]:
            return False
        if image.expires_at is not None and image.expires_at <= self._now():
            return False
        self._known_images.move_to_end(image.id)
        return True

    def cached_body(self, content: ImageContent, *, count_view: bool,
                    read_up_to: int = 0) -> Body | None:
        """``body`` of a variant in this daemon's cache, at once; None when it is not
        cached (or ``content`` is the original): then ``body`` produces it. A file of at
        most ``read_up_to`` bytes comes as ``data``, read and closed."""
        if content.cache_path is None:
            return None
        cached = self.cache.open(content.cache_path, read_up_to=read_up_to)
        if cached is not None:
            body = Body(size=cached.size, file=cached.file, data=cached.data, cache="HIT")
        else:
            # A caller that reads nothing (HEAD) wants no bytes in memory: then ``body``.
            body = self._being_written(content.cache_path, up_to=read_up_to)
            if body is None:
                return None
        self.hits += 1
        self.immediate_hits += 1
        if count_view:
            self.views.count(content.image.id)
        return body

    def _being_written(self, path: Path, up_to: int | None = None) -> Body | None:
        """The bytes of a variant just answered whose cache file is still being written
        (if at most ``up_to`` bytes); None when none is."""
        writing = self._writing.get(path)
        if writing is None or (up_to is not None and len(writing[0]) > up_to):
            return None
        return Body(size=len(writing[0]), data=writing[0], cache="HIT")

    def forget(self, image_id: str) -> None:
        """The image was changed or deleted through this daemon: stop trusting what was
        remembered (and let requests from now on read the record anew, not join a read
        under way)."""
        self._known_images.pop(image_id, None)
        self._reads.pop(image_id, None)

    def deleted(self, image_id: str) -> None:
        """The image's record was deleted through this daemon and its files are about to
        be removed: ``forget`` it, and cache (or share) none of its variants from now on,
        not even those being rendered or written (``VariantCache.image_deleted``)."""
        self.forget(image_id)
        self.cache.image_deleted(image_id)

    def _remember(self, image: ImageRecord) -> None:
        if self.revalidate_after <= 0:
            return
        self._known_images[image.id] = (image, self._clock.seconds() + self.revalidate_after)
        self._known_images.move_to_end(image.id)
        while len(self._known_images) > _KNOWN_IMAGES:
            self._known_images.popitem(last=False)

    def _drop_local_variants(self, image_id: str) -> None:
        """Another daemon deleted the image: its variants cached here are dead weight."""
        self.cache.image_deleted(image_id)
        self._io.run(shutil.rmtree, self._storage.variants_dir(image_id), True)

    def _content(self, image: ImageRecord, request: VariantRequest,
                 accepts: frozenset[str]) -> ImageContent:
        if image.expires_at is not None and image.expires_at <= self._now():
            # Checked on every request, remembered image or not: expiry needs no
            # daemon to notice a delete, so it is exact on all of them.
            raise NotFound("No such image.")
        original_ext = EXTENSION_BY_MIME[image.mime_type]
        ext = request.ext
        if ext in _SOURCE_ONLY_EXTENSIONS:
            return self._source_only(image, request)
        if request.negotiated:
            ext = negotiated_extension(accepts, _FORMAT_BY_MIME[image.mime_type],
                                       avif=self.auto_avif)
        spec = _plan(image, ext, request.transform, self.max_dimension)
        if spec is None:
            return ImageContent(image, original_ext, None, image.mime_type, f'"{image.sha256}"',
                                image.created_at, request.negotiated)
        key = spec.cache_key()
        return ImageContent(image, original_ext, spec, spec.mime_type,
                            f'"{image.sha256}-{key}"', image.created_at, request.negotiated,
                            self.cache.path(image.id, key))

    def _source_only(self, image: ImageRecord, request: VariantRequest) -> ImageContent:
        """``.heic``: the stored original's bytes, for an image stored in that format."""
        if _FORMAT_BY_MIME[image.mime_type] != _SOURCE_ONLY_EXTENSIONS[request.ext]:
            raise NotFound("No such image.")
        if dataclasses.replace(request.transform, format=None) != Transform():
            raise BadRequest(f"Variants are not rendered as .{request.ext}: ask for .jpg, "
                             ".webp, .avif or .auto.")
        return ImageContent(image, request.ext, None, image.mime_type, f'"{image.sha256}"',
                            image.created_at)

    async def body(self, content: ImageContent, *, count_view: bool) -> Body:
        """The bytes of ``content``, rendering and caching a variant on a miss.

        Raises Overloaded when the CPU pool is full, NotFound if the original is gone,
        DamagedOriginal if it cannot be decoded (then nothing is cached).
        """
        if content.spec is None:
            body = await self._original(content)
        else:
            body = await self._variant(content)
        if count_view:
            self.views.count(content.image.id)
        return body

    def render_miss(self, content: ImageContent) -> Deferred[Body]:
        """``body`` of a variant whose file ``cached_body`` has just found missing (a GET
        of the hit path, counted in ``immediate_misses``): its bytes being written (larger
        than ``cached_body`` was asked to take), or its render, joined or started, without
        the coroutines of ``body`` or opening the file again; the view counts once the
        bytes are there. Fails as ``body``."""
        assert content.cache_path is not None
        self.immediate_misses += 1
        written = self._being_written(content.cache_path)
        if written is not None:
            self.hits += 1
            self.views.count(content.image.id)
            return succeed(written)
        self.misses += 1
        rendering = self._render_once(content, content.cache_path)
        rendering.addCallback(self._rendered_body, content.image.id)
        return rendering

    def _rendered_body(self, rendered: tuple[bytes, str], image_id: str) -> Body:
        data, source = rendered
        self.views.count(image_id)
        return Body(size=len(data), data=data, cache=source)

    async def _original(self, content: ImageContent) -> Body:
        image_id, ext = content.image.id, content.original_ext
        path = self._storage.local_original(image_id, ext)
        try:
            if path is None:  # in the object store: fetched off the reactor, sent from memory
                data = await self._io.run(self._storage.read_original, image_id, ext)
                return Body(size=len(data), data=data)
            f = open(path, "rb")  # noqa: SIM115 - the web layer streams and closes it
        except FileNotFoundError as e:
            raise NotFound("No such image.") from e
        return Body(size=os.fstat(f.fileno()).st_size, file=f)

    async def _variant(self, content: ImageContent) -> Body:
        assert content.cache_path is not None
        path = content.cache_path
        cached = self.cache.open(path)
        if cached is not None:
            self.hits += 1
            return Body(size=cached.size, file=cached.file, cache="HIT")
        written = self._being_written(path)
        if written is not None:
            self.hits += 1
            return written
        self.misses += 1
        data, source = await self._render_once(content, path)
        return Body(size=len(data), data=data, cache=source)

    def _render_once(self, content: ImageContent, path: Path) -> Deferred[tuple[bytes, str]]:
        """Join the render of ``path`` in flight, or start it on the CPU pool."""
        key = (content.image.id, path.name)
        # Each request waits on its own Deferred: a client hanging up cancels only its own.
        waiter: Deferred[tuple[bytes, str]] = Deferred()
        waiters = self._flights.get(key)
        if waiters is not None:
            waiters.append(waiter)
            return waiter
        self._flights[key] = [waiter]
        d = Deferred.fromCoroutine(self._produce(content, path))
        d.addBoth(self._landed, key)
        return waiter

    async def _produce(self, content: ImageContent, path: Path,
                       background: bool = False) -> tuple[bytes, str]:
        """Take the variant another daemon shared, or render it on the CPU pool (and share
        it); then start writing this daemon's cache file on the I/O pool. Neither holds up
        the answer. Returns the bytes and ``"SHARED"`` or ``"MISS"``. ``background``
        renders on the pool's background lane (after every waiting request)."""
        image_id, ext, spec = content.image.id, content.original_ext, content.spec
        assert spec is not None
        key = spec.cache_key()
        original: Path | bytes | None = self._storage.local_original(image_id, ext)
        remote = original is None  # originals and shared variants are round trips (S3)
        if remote:
            shared = await self._io.run(self._storage.get_variant, image_id, key)
            if shared is not None:
                self._keep(path, shared)
                return shared, "SHARED"
        via = await self.intermediates.source(content.image, spec)
        data: bytes | None = None
        if via is not None:
            try:
                data = await self._render(render_from_intermediate, path, via, spec,
                                          background)
            except (NotFromIntermediate, FileNotFoundError):  # an animation; evicted
                via = None
        if via is None:
            if remote:
                original = await self._io.run(self._storage.read_original, image_id, ext)
            data = await self._render(render_variant, path, original, spec, background)
        if data is None:
            return b"", "HIT"  # a request rendered it while this background job waited
        if via is not None:
            self.intermediate_renders += 1
        if remote and not self.cache.is_deleted(image_id):
            self._share(image_id, key, data)
        self._keep(path, data)
        return data, "MISS"

    def _render(self, render: Callable[[Path | bytes, RenderSpec], bytes], path: Path,
                source: Path | bytes, spec: RenderSpec,
                background: bool) -> Deferred[bytes | None]:
        """``render(source, spec)`` on the CPU pool; on the background lane, None when the
        variant got cached while the job waited."""
        if background:
            return self._cpu.submit_background(_render_unless_cached, self._is_cached, path,
                                               render, source, spec)
        return self._cpu.submit(render, source, spec)

    def _is_cached(self, path: Path) -> bool:
        # Runs on a CPU pool thread while the reactor changes ``_writing``: a single
        # membership test is atomic under the GIL, and a stale answer only costs a render
        # done twice (or skips one that a request has just made).
        return path in self._writing or path.exists()

    def _keep(self, path: Path, data: bytes) -> None:
        """Write a variant to this daemon's cache and evict beyond the bound (both on the
        I/O pool), without waiting: until the file has landed, ``_being_written`` serves
        its bytes, so nobody renders it again meanwhile. A failed write still served and
        leaves no file (``atomic_write``); the next request renders it again."""
        write = self.cache.keep(path, data)
        self._writing[path] = (data, write)
        write.addErrback(lambda f: _log.failure("Cannot cache variant {path}", f, path=path))
        write.addBoth(self._kept, path, write)

    def _kept(self, _result, path: Path, write: Deferred[None]) -> None:
        if self._writing.get(path, (None, None))[1] is write:
            del self._writing[path]

    def _share(self, image_id: str, key: str, data: bytes) -> None:
        shared = self._io.run(self._storage.put_variant, image_id, key, data)
        shared.addErrback(lambda f: _log.warn(
            "Cannot share variant {key} of {id}: {error}", key=key, id=image_id,
            error=f.getErrorMessage()))

    def _landed(self, result, key: tuple[str, str]) -> None:
        waiters = self._flights.pop(key)
        if isinstance(result, Failure):
            if result.check(FileNotFoundError):
                result = Failure(NotFound("No such image."))
            elif result.check(RenderError):  # once per render, however many waited on it
                _log.error("The stored original of image {id} cannot be decoded: {error}",
                           id=key[0], error=result.getErrorMessage())
                result = Failure(DamagedOriginal())
        else:
            if result[1] == "MISS":
                self.renders += 1
            else:
                self.shared_hits += 1
        _fire(waiters, result)



def _fire(waiters: list[Deferred], result) -> None:
    """Give every waiter still waiting the one result (or failure) they share."""
    for waiter in waiters:
        if waiter.called:
            continue  # cancelled: that client went away
        if isinstance(result, Failure):
            waiter.errback(result)
        else:
            waiter.callback(result)

def _plan(image: ImageRecord, ext: str, transform: Transform,
          max_dimension: int) -> RenderSpec | None:
    """The variant to render, or None when the stored original is exactly what is asked."""
    src_format = _FORMAT_BY_MIME[image.mime_type]
    width, height = transform.scaled_size(max_dimension)
    # The owner's focal point places crops that the URL does not place itself.
    focus = transform.focus if transform.smart or transform.focus else image.focal_point
    spec = plan_variant(image.width, image.height, src_format, width=width, height=height,
                        crop=transform.crop, out_ext=ext, quality=transform.quality,
                        smart=transform.smart, focus=focus)
    if spec.format in LOSSY_FORMATS and spec.quality is None and transform.quality is not None:
        # An explicit quality asks for a re-encode even at the original's size and format.
        return dataclasses.replace(spec, quality=transform.quality)
    if spec.is_identity(image.width, image.height, src_format):
        return None
    return spec


def negotiated_extension(accepts: frozenset[str], src_format: str, *, avif: bool) -> str:
    """What ``.auto`` serves: AVIF when enabled and named in ``Accept``, else WebP when
    named, else the original's format, JPEG for HEIC (an animated GIF stays a GIF rather
    than AVIF)."""
    if avif and "image/avif" in accepts and src_format != "GIF":
        return "avif"
    if "image/webp" in accepts:
        return "webp"
    return DISPLAY_EXTENSION_BY_MIME[KNOWN_FORMATS[src_format][0]]


def _render_unless_cached(cached: Callable[[Path], bool], path: Path,
                          render: Callable[[Path | bytes, RenderSpec], bytes],
                          source: Path | bytes, spec: RenderSpec) -> bytes | None:
    """``render(source, spec)``, or None when ``cached(path)`` says the variant is cached
    already (blocking)."""
    if cached(path):
        return None
    return render(source, spec)
