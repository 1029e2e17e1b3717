"""Share links: ``/s/{code}`` opens one image or one album for whoever has the code.

The code is the capability (96 random bits, URL-safe), so a share works for a private
image or album without making it public. Its state lives in the database and is read on
every request, so a revoked or expired share ends at once on every daemon. Shared
images are served under the share's own URLs, never under ``/image/{id}``: the page
does not reveal an image id that would outlive the share. Images of an album share are
named by a key derived from the code and the image id, meaningful only with that code.

A password share shows nothing (no OpenGraph image either) until it is unlocked: the
password is hashed like account passwords, attempts are rate limited per client and
per share, and the unlocked state is a cookie signed for that share only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from imagehost import auth
from imagehost.db import albums as album_queries
from imagehost.db import images as image_queries
from imagehost.db import library as library_queries
from imagehost.db import shares as q
from imagehost.db.albums import Album
from imagehost.db.library import LibraryEntry
from imagehost.db.shares import Share
from imagehost.imaging.render import OUTPUT_FORMATS
from imagehost.service.accounts import Principal
from imagehost.service.delivery import Delivery, ImageContent
from imagehost.service.errors import (
    BadRequest,
    Forbidden,
    Gone,
    NotFound,
    Unauthorized,
    ValidationFailed,
    Violation,
)
from imagehost.service.library import Keyset, parse_limit
from imagehost.service.links import OG_IMAGE_WIDTH
from imagehost.service.moments import parse_moment
from imagehost.service.pools import Pools
from imagehost.service.throttle import RateLimit
from imagehost.service.transforms import parse_transform

CODE_BYTES = 12  # 96 bits of randomness; token_urlsafe makes 16 characters of them
MAX_PASSWORD = 1024
MAX_LISTED = 1000
UNLOCK_TTL = timedelta(days=1)
#: What the name of a shared image's URL may be: "image" (an image share) or an album
#: image's key, then the thumbnail marker and the extension.
_NAME = re.compile(r"(?P<key>image|[A-Za-z0-9_-]{16})(?P<thumbnail>_thumbnail)?"
                   r"\.(?P<ext>[a-z]{3,4})")
_CODE = re.compile(r"[A-Za-z0-9_-]{16,32}")
_VARIANT_FIELDS = {"width": "w", "height": "h", "crop": "crop", "format": "format"}


@dataclass(frozen=True)
class SharedContent:
    """What a share shows: one image, or an album and its images (with their keys)."""

    share: Share
    entries: list[LibraryEntry]
    album: Album | None = None

    def key(self, entry: LibraryEntry) -> str:
        return image_key(self.share.code, entry.image.id)


@dataclass(frozen=True)
class SharePage:
    """One page of a user's shares."""

    shares: list[Share]
    size: int
    total: int
    next_cursor: str | None


class Shares:
    """Creating, listing, revoking and opening share links."""

    def __init__(self, pools: Pools, delivery: Delivery, *, secret: bytes,
                 now: Callable[[], datetime], cursor_key: bytes,
                 unlock_limits: Sequence[RateLimit]):
        self._db = pools.db
        self._cpu = pools.cpu
        self._delivery = delivery
        self._cookie_key = hmac.new(secret, b"imagehost share unlock", hashlib.sha256).digest()
        self._now = now
        self._cursor_key = cursor_key
        self._unlock_limits = tuple(unlock_limits)

    def now(self) -> datetime:
        return self._now()

    # -- the owner's side -----------------------------------------------------------------

    async def create(self, viewer: Principal, *, image_id: object = None,
                     album_id: object = None, expires_at: object = None,
                     password: object = None, variant: object = None) -> Share:
        """A new share of one of the viewer's images or albums."""
        if (image_id is None) == (album_id is None):
            raise ValidationFailed.one("imageId", 'Give exactly one of "imageId" and "albumId".')
        moment = parse_moment(expires_at, "expiresAt")
        violations = _check_options(moment, self._now(), password, variant, album_id)
        fixed = None
        if variant is not None and not violations:
            fixed, problem = self._fixed_variant(variant)
            violations += problem
        if violations:
            raise ValidationFailed(*violations)
        if image_id is not None:
            await self._own_image(viewer, image_id)
        else:
            await self._own_album(viewer, album_id)
        password_hash = (await self._cpu.submit(auth.hash_password, password)
                         if password else None)
        share = Share(code=new_code(), owner_id=viewer.user.id,
                      image_id=image_id, album_id=album_id, password_hash=password_hash,
                      variant=fixed, expires_at=moment, created_at=self._now())
        await self._db.run(q.insert_share, share)
        return share

    async def own(self, viewer: Principal) -> list[Share]:
        """The viewer's shares, newest first (expired ones too, until revoked; at most
        ``MAX_LISTED``)."""
        found, _more, _total = await self._db.run(q.list_shares, viewer.user.id, MAX_LISTED)
        return found

    async def own_page(self, viewer: Principal, *, limit: str | None = None,
                       cursor: str | None = None) -> SharePage:
        """A page of the viewer's shares, newest first, by signed cursor."""
        size = parse_limit(limit)
        keyset = Keyset("shares", viewer.user.id)
        found, more, total = await self._db.run(q.list_shares, viewer.user.id, size,
                                                keyset.after(cursor, self._cursor_key))
        last = (found[-1].created_at, found[-1].code) if found else None
        return SharePage(found, size, total, keyset.next_cursor(more, last, self._cursor_key))

    async def revoke(self, viewer: Principal, code: str) -> None:
        """End a share at once; only its owner or an administrator may (else 404)."""
        share = await self._db.run(q.share_by_code, code) if _CODE.fullmatch(code) else None
        if share is None or not (viewer.is_admin or share.owner_id == viewer.user.id):
            raise NotFound("No such share.")
        await self._db.run(q.delete_share, code)

    async def _own_image(self, viewer: Principal, image_id: object) -> None:
        image = (await self._db.run(image_queries.image_by_id, image_id)
                 if isinstance(image_id, str) else None)
        if image is None or not (image.is_public or image.owner_id == viewer.user.id):
            raise NotFound("No such image.")
        if image.owner_id != viewer.user.id:
            raise Forbidden("Only the owner may share this image.")

    async def _own_album(self, viewer: Principal, album_id: object) -> None:
        album = (await self._db.run(album_queries.album_by_id, album_id)
                 if isinstance(album_id, str) else None)
        if album is None or not (album.is_public or album.owner_id == viewer.user.id):
            raise NotFound("No such album.")
        if album.owner_id != viewer.user.id:
            raise Forbidden("Only the owner may share this album.")

    def _fixed_variant(self, variant: dict) -> tuple[dict[str, Any] | None, list[Violation]]:
        """The stored form of a share's fixed variant, checked by the parser of image
        URLs (the same rules, the same limits)."""
        fmt = variant.get("format")
        if fmt is not None and fmt not in OUTPUT_FORMATS:
            return None, [Violation("variant.format", "This value should be one of: "
                                    + ", ".join(OUTPUT_FORMATS) + ".")]
        parameters = {_VARIANT_FIELDS[k]: _query_text(v) for k, v in variant.items()
                      if k != "format" and v is not None}
        try:
            parsed = parse_transform(parameters, self._delivery.max_dimension)
        except BadRequest as e:  # a parameter out of range
            return None, [Violation("variant", e.message)]
        fixed = {"w": parsed.width, "h": parsed.height, "crop": parsed.crop, "format": fmt}
        return fixed, []

    # -- the visitor's side -----------------------------------------------------------------

    async def open(self, code: str) -> Share:
        """The share of a code: NotFound if there is none (or it was revoked), Gone once
        it has expired."""
        share = await self._db.run(q.share_by_code, code) if _CODE.fullmatch(code) else None
        if share is None:
            raise NotFound("No such share.")
        if share.expired(self._now()):
            raise Gone("This link has expired.")
        return share

    async def content(self, share: Share) -> SharedContent:
        """The image or the album's images a share shows (all of them: the code is the
        capability), without expired images; NotFound if nothing is left to show."""
        now = self._now()
        if share.image_id is not None:
            entries = await self._db.run(library_queries.entries_by_ids, [share.image_id],
                                         None, True)
            entries = [e for e in entries if not _expired(e, now)]
            if not entries:
                raise NotFound("No such share.")
            return SharedContent(share, entries)
        album = await self._db.run(album_queries.album_by_id, share.album_id)
        if album is None:
            raise NotFound("No such share.")
        entries = await self._db.run(library_queries.album_entries, album.id,
                                     public_only=False, now=now)
        return SharedContent(share, entries, album)

    async def count_view(self, share: Share) -> None:
        """One view of a share's page (its content was shown)."""
        await self._db.run(q.count_view, share.code)

    async def unlock(self, share: Share, password: str, client: str) -> str:
        """The cookie value that unlocks a password share; Unauthorized for a wrong
        password, RateLimited when this client or this share has guessed too often."""
        for limit, key in zip(self._unlock_limits, (client, share.code), strict=False):
            await limit.hit(key)
        stored = share.password_hash or auth.DUMMY_PASSWORD_HASH
        correct = await self._cpu.submit(auth.verify_password, password[:MAX_PASSWORD], stored)
        if not correct or share.password_hash is None:
            raise Unauthorized("The password is not right.")
        until = int((self._now() + UNLOCK_TTL).timestamp())
        return f"{until}.{self._unlock_mac(share, until)}"

    def unlocked(self, share: Share, cookie: str | None) -> bool:
        """True for a share without a password, or with a cookie ``unlock`` made for it
        that has not run out."""
        if share.password_hash is None:
            return True
        until, _, mac = (cookie or "").partition(".")
        if not until.isdigit() or int(until) < self._now().timestamp():
            return False
        return hmac.compare_digest(mac, self._unlock_mac(share, int(until)))

    def _unlock_mac(self, share: Share, until: int) -> str:
        message = f"{share.code}|{until}|{share.password_hash}".encode()
        return _b64(hmac.new(self._cookie_key, message, hashlib.sha256).digest())

    async def locate(self, shared: SharedContent, name: str,
                     query: Mapping[str, Sequence[str]]) -> ImageContent:
        """The image content of ``/s/{code}/{name}``: ``image.{ext}`` of an image share
        (its fixed variant, if it has one, whatever the query says), or an album image
        by its key (or its thumbnail); NotFound for anything else."""
        match = _NAME.fullmatch(name)
        if match is None:
            raise NotFound("No such image.")
        key, thumbnail, ext = match["key"], bool(match["thumbnail"]), match["ext"]
        variant = shared.share.variant
        # A share's URLs are not an open door to new variants: the thumbnail, the
        # OpenGraph width or the share's fixed variant, nothing else the visitor adds.
        asked = {"w": [str(OG_IMAGE_WIDTH)]} if query.get("w") == [str(OG_IMAGE_WIDTH)] \
            and not thumbnail else {}
        if shared.album is None:
            if key != "image":
                raise NotFound("No such image.")
            if variant is not None:
                if thumbnail or (variant["format"] and ext != variant["format"]):
                    raise NotFound("No such image.")
                asked = {name: [_query_text(variant[name])] for name in ("w", "h", "crop")
                         if variant[name] is not None}
            entry = shared.entries[0]
        else:
            found = [e for e in shared.entries if shared.key(e) == key]
            if not found:
                raise NotFound("No such image.")
            entry = found[0]
        return await self._delivery.locate(entry.image.id, ext, thumbnail=thumbnail,
                                           query=asked, trusted=True)


def new_code(random_text: Callable[[int], str] = secrets.token_urlsafe) -> str:
    """A fresh share code: ``CODE_BYTES`` random bytes as URL-safe text, never starting
    with "-", which command lines (``imagehost share revoke CODE``) would take for an
    option."""
    while True:
        code = random_text(CODE_BYTES)
        if not code.startswith("-"):
            return code


def image_key(code: str, image_id: str) -> str:
    """The name of an album image under one share's URLs (16 URL-safe characters)."""
    digest = hashlib.sha256(f"{code}|{image_id}".encode()).digest()
    return _b64(digest)[:16]


def share_ext(shared: SharedContent) -> str:
    """The extension an image share's URL ends in: its fixed format, else the original's."""
    variant = shared.share.variant or {}
    return variant.get("format") or shared.entries[0].image.file_name.rpartition(".")[2]


def _expired(entry: LibraryEntry, now: datetime) -> bool:
    return entry.image.expires_at is not None and entry.image.expires_at <= now


def _check_options(expires_at: datetime | None, now: datetime, password: object,
                   variant: object, album_id: object) -> list[Violation]:
    violations = []
    if expires_at is not None and expires_at <= now:
        violations.append(Violation("expiresAt", "This value must be in the future."))
    if password is not None and (not isinstance(password, str) or not password
                                 or len(password) > MAX_PASSWORD):
        violations.append(Violation(
            "password", f"This value should be a string of 1 to {MAX_PASSWORD} characters."))
    if variant is not None:
        if album_id is not None:
            violations.append(Violation("variant", "Only an image share has a fixed variant."))
        elif not isinstance(variant, dict) or not variant or set(variant) - set(_VARIANT_FIELDS):
            violations.append(Violation(
                "variant", 'This value should be an object of "width", "height", "crop" '
                'and "format".'))
        elif not all(isinstance(variant.get(k), int | type(None)) for k in ("width", "height")) \
                or not isinstance(variant.get("crop", False), bool):
            violations.append(Violation(
                "variant", '"width" and "height" should be integers, "crop" a bool.'))
    return violations


def _query_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
