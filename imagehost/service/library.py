"""Library use cases: detail, public feed, batch lookup, history, edit and delete.

Listing parameters arrive as the strings of a query string and are checked here, so
every front end gets the same 400s. Cursors are opaque to clients: base64url JSON of
the ordering and the sort key of the row a page continues from, signed with a key
derived from the installation's secret, so a cursor the server did not issue is refused
before anything in it is believed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from twisted.logger import Logger

from imagehost.db import images as image_queries
from imagehost.db import library as q
from imagehost.db.images import ImageRecord
from imagehost.db.library import ImageFilter, LibraryEntry, Ordering, SortKey
from imagehost.imaging.probe import EXTENSION_BY_MIME, placeholder_of
from imagehost.service.accounts import Principal
from imagehost.service.errors import BadRequest, Forbidden, NotFound, ValidationFailed, Violation
from imagehost.service.pools import Pools
from imagehost.storage import Storage

_log = Logger()

# API names -> sort keys of imagehost.db.library.
ORDER_BY = {
    "attributes.createdAt": "created_at",
    "attributes.updatedAt": "updated_at",
    "attributes.views": "views",
    "metadata.size": "size",
}
SEARCH_BY = {"description": "description", "fileName": "file_name", "user": "user"}
DEFAULT_LIMIT = 10
MAX_LIMIT = 100
MAX_BATCH = 100
MAX_DESCRIPTION = 255
_DATED_KEYS = {"created_at", "updated_at"}
_MAX_SORT_NUMBER = 2**63 - 1  # views and sizes are BIGINT columns
_MAC_BYTES = 16
_MALFORMED_CURSOR = '"cursor" is malformed; use meta.nextCursor or prevCursor.'
_MALFORMED_KEYSET_CURSOR = '"cursor" is malformed; use meta.nextCursor.'


@dataclass(frozen=True)
class Cursor:
    """Where a listing continues: after (or before) ``key`` in ``ordering``."""

    ordering: Ordering
    key: SortKey
    backwards: bool = False

    def encode(self, signing_key: bytes) -> str:
        """The opaque text of this cursor: its payload and a MAC over it."""
        value = self.key.value
        payload = {
            "o": self.ordering.key, "d": self.ordering.descending,
            "v": value.isoformat() if isinstance(value, datetime) else value,
            "i": self.key.image_id, "b": self.backwards,
        }
        return sign_cursor(payload, signing_key)

    @classmethod
    def decode(cls, text: str, signing_key: bytes) -> Cursor:
        """Parse a cursor from a client; BadRequest if it is not one this server issued."""
        payload = open_cursor(text, signing_key)
        try:
            ordering = Ordering(_known(payload["o"]), _boolean(payload["d"]))
            key = SortKey(_sort_value(ordering.key, payload["v"]), _id(payload["i"]))
            return cls(ordering, key, _boolean(payload["b"]))
        except (ValueError, TypeError, KeyError, OverflowError) as e:
            # Signed but unreadable: a cursor of an older release, or a leaked secret.
            raise BadRequest(_MALFORMED_CURSOR) from e


def sign_cursor(payload: dict[str, Any], signing_key: bytes) -> str:
    """The opaque text of a listing cursor: base64url JSON and a MAC over it."""
    body = _b64(json.dumps(payload, separators=(",", ":")).encode())
    return f"{body}.{_b64(_mac(signing_key, body))}"


def open_cursor(text: str, signing_key: bytes) -> Any:
    """The payload of a cursor ``sign_cursor`` made; BadRequest for anything else (the MAC
    is checked before a byte of the payload is believed)."""
    body, _, mac = text.partition(".")
    try:
        genuine = hmac.compare_digest(_unb64(mac), _mac(signing_key, body))
    except (binascii.Error, ValueError) as e:
        raise BadRequest(_MALFORMED_CURSOR) from e
    if not genuine:
        raise BadRequest(_MALFORMED_CURSOR)
    try:
        return json.loads(_unb64(body))
    except (binascii.Error, ValueError) as e:
        raise BadRequest(_MALFORMED_CURSOR) from e


@dataclass(frozen=True)
class Keyset:
    """Cursors of a listing in one fixed order by (value, id): a user's albums or shares
    by creation time, an album's images by position. A cursor names its listing and
    scope (whose albums, which album), so it continues nothing else."""

    listing: str
    scope: str

    def cursor(self, value: datetime | int, row_id: str, signing_key: bytes) -> str:
        """The opaque cursor that continues after the row keyed (``value``, ``row_id``)."""
        wire = value.isoformat() if isinstance(value, datetime) else value
        return sign_cursor({"k": self.listing, "u": self.scope, "c": wire, "i": row_id},
                           signing_key)

    def next_cursor(self, more: bool, last_key: tuple[datetime | int, str] | None,
                    signing_key: bytes) -> str | None:
        """The cursor of the page after one that ended at ``last_key`` (None if no rows
        follow it)."""
        return self.cursor(*last_key, signing_key) if more and last_key is not None else None

    def after(self, text: str | None, signing_key: bytes) -> tuple[datetime | int, str] | None:
        """The key a client's cursor continues after (None without one); BadRequest for
        a cursor that is not this listing's."""
        if text is None:
            return None
        payload = open_cursor(text, signing_key)
        try:
            if payload["k"] != self.listing or payload["u"] != self.scope:
                raise ValueError("another listing's cursor")
            value, row_id = payload["c"], payload["i"]
            if not isinstance(row_id, str):
                raise ValueError("bad cursor payload")
            if type(value) is int:
                return value, row_id
            moment = datetime.fromisoformat(value)
            if moment.tzinfo is None:
                raise ValueError("bad cursor payload")
            return moment.astimezone(UTC), row_id
        except (KeyError, TypeError, ValueError) as e:
            raise BadRequest(_MALFORMED_KEYSET_CURSOR) from e


@dataclass(frozen=True)
class ListingParams:
    """A checked listing request."""

    page: int
    limit: int
    ordering: Ordering
    search_term: str | None = None
    search_by: str = "description"
    cursor: str | None = None  # as the client sent it; Library checks it


@dataclass(frozen=True)
class Page:
    """One page of a listing, with what the ``meta`` object reports."""

    entries: list[LibraryEntry]
    page: int
    size: int
    total: int
    next_cursor: str | None = None
    prev_cursor: str | None = None


def parse_listing(page: str, *, limit: str | None = None, order_by: str | None = None,
                  order: str | None = None, search_term: str | None = None,
                  search_by: str | None = None, cursor: str | None = None) -> ListingParams:
    """Check raw listing parameters; BadRequest names the first bad one."""
    ordering = Ordering(_choice("orderBy", order_by or "attributes.updatedAt", ORDER_BY),
                        _choice("order", (order or "desc").lower(),
                                {"desc": True, "asc": False}))
    return ListingParams(
        page=parse_page(page),
        limit=_bounded_int("limit", limit, DEFAULT_LIMIT, 1, MAX_LIMIT),
        ordering=ordering,
        search_term=search_term or None,
        search_by=_choice("searchBy", search_by or "description", SEARCH_BY),
        cursor=cursor or None)


def parse_page(page: str) -> int:
    """A page number from a path; pages start at 1."""
    return _bounded_int("page", page, 1, 1, 2**31 - 1)


def parse_limit(limit: str | None) -> int:
    return _bounded_int("limit", limit, DEFAULT_LIMIT, 1, MAX_LIMIT)


def email_visible(viewer: Principal, owner_id: str) -> bool:
    """An owner's email is shown only to that owner and to administrators."""
    return viewer.is_admin or viewer.user.id == owner_id


class _Unchanged:
    def __repr__(self) -> str:
        return "UNCHANGED"


#: ``Library.edit``'s "leave the focal point as it is" (None clears it).
UNCHANGED: Any = _Unchanged()


class Library:
    """What users and tools do with the images they uploaded."""

    def __init__(self, pools: Pools, storage: Storage, *, now: Callable[[], datetime],
                 cursor_key: bytes,
                 on_delete: Callable[[str], None] = lambda image_id: None,
                 on_change: Callable[[str], None] = lambda image_id: None):
        self._on_delete = on_delete
        self._on_change = on_change  # an edit that changes how the image is delivered
        self._cpu = pools.cpu
        self._cursor_key = cursor_key
        self._db = pools.db
        self._io = pools.io
        self._storage = storage
        self._now = now

    async def detail(self, viewer: Principal, image_id: str) -> ImageRecord:
        """One image, for its owner or an administrator."""
        return await self._manageable(viewer, image_id)

    async def feed(self, viewer: Principal | None, params: ListingParams) -> Page:
        """The public images of everyone (``viewer`` None: a visitor not logged in)."""
        where = ImageFilter(public_only=True, search_term=params.search_term,
                            search_by=params.search_by, now=self._now())
        return await self._page(where, params)

    async def history(self, viewer: Principal, page: int, limit: int = DEFAULT_LIMIT) -> Page:
        """The viewer's own images, newest first."""
        params = ListingParams(page, limit, Ordering("created_at", descending=True))
        listed = await self._page(ImageFilter(owner_id=viewer.user.id, now=self._now()),
                                  params)
        return Page(listed.entries, listed.page, listed.size, listed.total)

    async def own(self, viewer: Principal, params: ListingParams) -> Page:
        """The viewer's own images in ``params``' order, searchable and by cursor."""
        where = ImageFilter(owner_id=viewer.user.id, search_term=params.search_term,
                            search_by=params.search_by, now=self._now())
        return await self._page(where, params)

    async def viewable(self, viewer: Principal | None, image_id: str) -> LibraryEntry:
        """One image with its owner if ``viewer`` may see it (public, own, or an
        administrator); NotFound otherwise, so a private image's existence stays hidden."""
        entries = await self._db.run(
            q.entries_by_ids, [image_id], viewer.user.id if viewer else None,
            bool(viewer and viewer.is_admin), self._now())
        if not entries:
            raise NotFound("No such image.")
        return entries[0]

    async def by_ids(self, viewer: Principal, image_ids: Sequence[str]) -> list[LibraryEntry]:
        """The requested images the viewer may see, in request order; unknown ids skipped."""
        if len(image_ids) > MAX_BATCH:
            raise BadRequest(f"At most {MAX_BATCH} uuid[] values per request.")
        if not image_ids:
            return []
        return await self._db.run(q.entries_by_ids, list(image_ids), viewer.user.id,
                                  viewer.is_admin, self._now())

    async def edit(self, viewer: Principal, image_id: str, *, description: object = None,
                   is_public: object = None, focal_point: object = UNCHANGED) -> None:
        """Change description, visibility and/or the focal point (None leaves description
        and visibility as they are; ``focal_point`` None clears it, UNCHANGED leaves it)."""
        violations = edit_violations(description, is_public)
        if violations:
            raise ValidationFailed(*violations)
        focus = UNCHANGED if focal_point is UNCHANGED else parse_focal_point(focal_point)
        await self._manageable(viewer, image_id)
        if focus is not UNCHANGED:
            if not await self._db.run(image_queries.set_focal_point, image_id, focus,
                                      self._now()):
                raise NotFound("No such image.")
            self._on_change(image_id)
        if description is None and is_public is None:
            return
        if not await self._db.run(q.update_image, image_id, self._now(),
                                  description=description, is_public=is_public):
            raise NotFound("No such image.")

    async def backfill_placeholders(self) -> PlaceholderBackfill:
        """Compute the placeholder of every image that has none (stored before migration
        0008): each original read on the I/O pool, decoded on the CPU pool."""
        report = PlaceholderBackfill()
        for original in await self._db.run(image_queries.images_without_placeholder):
            try:
                data = await self._io.run(self._storage.read_original, original.image_id,
                                          original.ext)
                made = await self._cpu.submit(placeholder_of, data)
            except (OSError, ValueError, SyntaxError, EOFError) as e:
                _log.warn("No placeholder for {id}: {error}", id=original.image_id, error=e)
                report.failed.append(original.image_id)
                continue
            await self._db.run(image_queries.set_placeholder, original.image_id,
                               made.blurhash, made.dominant_color)
            report.computed += 1
        return report

    async def delete(self, viewer: Principal, image_id: str, *,
                     preserve_on_disk: object = False) -> None:
        """Delete the record, then cached variants and (unless preserved) the original.

        The record goes first: a failure later leaves an orphan file, never a record
        without its file.
        """
        if not isinstance(preserve_on_disk, bool):
            raise ValidationFailed.one("preserveOnDisk", "This value should be of type bool.")
        image = await self._manageable(viewer, image_id)
        preserved = ((EXTENSION_BY_MIME[image.mime_type], self._now()) if preserve_on_disk
                     else None)
        if not await self._db.run(image_queries.delete_image, image_id, preserved):
            raise NotFound("No such image.")
        self._on_delete(image_id)
        try:
            await self._io.run(self._remove_files, image, preserve_on_disk)
        except Exception:
            _log.failure("Image {id} deleted; removing its files failed", id=image_id)

    async def remove_deleted(self, removed: Sequence[tuple[str, str]]) -> None:
        """Forget images whose records are gone (id, mime type) and remove their files
        (a user's deletion); a file that cannot be removed is left to ``imagehost gc``."""
        for image_id, mime_type in removed:
            self._on_delete(image_id)
            try:
                await self._io.run(self._remove, image_id, mime_type, False)
            except Exception:
                _log.failure("Image {id} deleted; removing its files failed", id=image_id)

    def _remove_files(self, image: ImageRecord, preserve_original: bool) -> None:
        self._remove(image.id, image.mime_type, preserve_original)

    def _remove(self, image_id: str, mime_type: str, preserve_original: bool) -> None:
        self._storage.delete_variants(image_id)
        if not preserve_original:
            self._storage.delete_original(image_id, EXTENSION_BY_MIME[mime_type])

    async def _manageable(self, viewer: Principal, image_id: str) -> ImageRecord:
        image = await self._db.run(image_queries.image_by_id, image_id)
        if image is None or (image.expires_at is not None and image.expires_at <= self._now()):
            raise NotFound("No such image.")
        if not (viewer.is_admin or image.owner_id == viewer.user.id):
            raise Forbidden("Only the owner or an administrator may manage this image.")
        return image

    async def _page(self, where: ImageFilter, params: ListingParams) -> Page:
        if params.cursor is None:
            offset = (params.page - 1) * params.limit
            listed = await self._db.run(q.list_images, where, params.ordering, params.limit,
                                        offset=offset)
            return _page(params, listed, self._cursor_key, backwards=False,
                         from_start=offset == 0)
        cursor = Cursor.decode(params.cursor, self._cursor_key)
        if cursor.ordering != params.ordering:
            raise BadRequest('"cursor" belongs to a listing with another orderBy or order.')
        seek = {"before" if cursor.backwards else "after": cursor.key}
        listed = await self._db.run(q.list_images, where, params.ordering, params.limit,
                                    **seek)
        return _page(params, listed, self._cursor_key, backwards=cursor.backwards,
                     from_start=False)


def _page(params: ListingParams, listed: q.Listing, cursor_key: bytes, *, backwards: bool,
          from_start: bool) -> Page:
    entries, ordering = listed.entries, params.ordering
    next_cursor = prev_cursor = None
    if entries:
        first = Cursor(ordering, q.sort_key(entries[0].image, ordering.key), backwards=True)
        last = Cursor(ordering, q.sort_key(entries[-1].image, ordering.key))
        more_after = True if backwards else listed.more
        more_before = listed.more if backwards else not from_start
        next_cursor = last.encode(cursor_key) if more_after else None
        prev_cursor = first.encode(cursor_key) if more_before else None
    return Page(entries, params.page, params.limit, listed.total, next_cursor, prev_cursor)


@dataclass
class PlaceholderBackfill:
    """What ``imagehost placeholders`` did: placeholders computed, images that failed."""

    computed: int = 0
    failed: list[str] = field(default_factory=list)


def parse_focal_point(value: object) -> tuple[int, int] | None:
    """``{"x": 0..1, "y": 0..1}`` as thousandths, or None; ValidationFailed otherwise."""
    if value is None:
        return None
    numbers = (value.get("x"), value.get("y")) if isinstance(value, dict) else ()
    if (len(numbers) != 2 or set(value) - {"x", "y"}
            or not all(isinstance(n, int | float) and not isinstance(n, bool) and 0 <= n <= 1
                       for n in numbers)):
        raise ValidationFailed.one("focalPoint", 'This value should be {"x", "y"} with '
                                   "numbers from 0 to 1 (fractions of width and height).")
    return round(numbers[0] * 1000), round(numbers[1] * 1000)


def edit_violations(description: object, is_public: object,
                    max_description: int = MAX_DESCRIPTION) -> list[Violation]:
    """What is wrong with an edit's optional ``description`` and ``isPublic`` (of an image
    or an album; None leaves either unchanged)."""
    violations = []
    if description is not None and not isinstance(description, str):
        violations.append(Violation("description", "This value should be of type string."))
    elif isinstance(description, str) and len(description) > max_description:
        violations.append(Violation(
            "description",
            f"This value is too long. It should have {max_description} characters or less."))
    if is_public is not None and not isinstance(is_public, bool):
        violations.append(Violation("isPublic", "This value should be of type bool."))
    return violations


def _choice(name: str, value: str, allowed: dict[str, Any]) -> Any:
    if value not in allowed:
        names = ", ".join(allowed)
        raise BadRequest(f'"{name}" must be one of {names}; got {value!r}.')
    return allowed[value]


def _bounded_int(name: str, text: str | None, default: int, low: int, high: int) -> int:
    if text is None:
        return default
    if not text.isascii() or not text.isdigit():
        raise BadRequest(f'"{name}" must be an integer from {low} to {high}.')
    value = int(text)
    if not low <= value <= high:
        raise BadRequest(f'"{name}" must be an integer from {low} to {high}; got {value}.')
    return value


def _known(key: object) -> str:
    if key not in q.SORT_COLUMNS:
        raise ValueError(key)
    return key


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(value)
    return value


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(value)
    return value


def _id(value: object) -> str:
    if len(_text(value)) > 64:
        raise ValueError("image id too long")
    return value


def _sort_value(key: str, value: object) -> datetime | int:
    """A sort value as the database compares it: an aware UTC datetime, or a BIGINT."""
    if key in _DATED_KEYS:
        moment = datetime.fromisoformat(_text(value))
        if moment.tzinfo is None:
            raise ValueError("naive datetime in cursor")
        return moment.astimezone(UTC)  # OverflowError past year 9999 or before year 1
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(value)
    if not 0 <= value <= _MAX_SORT_NUMBER:
        raise ValueError("sort value out of range")
    return value


def cursor_signing_key(secret: bytes) -> bytes:
    """The key that signs feed cursors, derived from the installation's secret (the JWT
    secret itself never signs anything but tokens)."""
    return hmac.new(secret, b"imagehost feed cursor", hashlib.sha256).digest()


def _mac(signing_key: bytes, body: str) -> bytes:
    return hmac.new(signing_key, body.encode("ascii", "replace"),
                    hashlib.sha256).digest()[:_MAC_BYTES]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
