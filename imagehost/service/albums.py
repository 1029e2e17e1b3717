"""Album use cases: an owner's ordered selections of their own images.

An album is public or private like an image. Anyone may see a public album, but only
its public images (its owner sees them all); a private album is a 404 for everyone but
its owner and administrators, so its existence stays hidden. Only the owner changes
what is in an album, and only with their own images.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from imagehost.db import albums as q
from imagehost.db import library as library_queries
from imagehost.db.albums import Album
from imagehost.db.library import LibraryEntry
from imagehost.service.accounts import Principal
from imagehost.service.errors import Forbidden, NotFound, ValidationFailed, Violation
from imagehost.service.library import Keyset, edit_violations, parse_limit
from imagehost.service.pools import Pools

MAX_TITLE = 255
MAX_DESCRIPTION = 1000
#: Images in one album, and ids in one request.
MAX_ALBUM_IMAGES = 1000


@dataclass(frozen=True)
class AlbumPage:
    """One page of a user's albums."""

    albums: list[Album]
    size: int
    total: int
    next_cursor: str | None


@dataclass(frozen=True)
class AlbumView:
    """An album as one viewer may see it: its images in order (all, or a page of
    ``size`` of the ``total``), the cover's entry."""

    album: Album
    entries: list[LibraryEntry]
    can_manage: bool
    cover: LibraryEntry | None
    size: int
    total: int
    next_cursor: str | None


def _cover(album: Album, entries: list[LibraryEntry]) -> LibraryEntry | None:
    """The chosen cover among ``entries``, else the first of them."""
    for entry in entries:
        if entry.image.id == album.cover_image_id:
            return entry
    return entries[0] if entries else None


class Albums:
    """Creating, listing, showing and arranging albums."""

    def __init__(self, pools: Pools, *, now: Callable[[], datetime], cursor_key: bytes):
        self._db = pools.db
        self._now = now
        self._cursor_key = cursor_key

    async def create(self, viewer: Principal, *, title: object, description: object = None,
                     is_public: object = None) -> Album:
        """A new, empty album of the viewer's."""
        _check_fields(title, description, is_public, title_required=True)
        album = Album(id=str(uuid.uuid4()), owner_id=viewer.user.id, title=title.strip(),
                      description=description or "", is_public=bool(is_public),
                      cover_image_id=None, created_at=self._now(), updated_at=None)
        await self._db.run(q.insert_album, album)
        return album

    async def own(self, viewer: Principal, *, limit: str | None = None,
                  cursor: str | None = None) -> AlbumPage:
        """The viewer's albums, newest first, by signed cursor."""
        size = parse_limit(limit)
        keyset = Keyset("albums", viewer.user.id)
        found, more, total = await self._db.run(q.list_albums, viewer.user.id, size,
                                                keyset.after(cursor, self._cursor_key))
        last = (found[-1].created_at, found[-1].id) if found else None
        return AlbumPage(found, size, total, keyset.next_cursor(more, last, self._cursor_key))

    async def view(self, viewer: Principal | None, album_id: str) -> AlbumView:
        """An album and all the images ``viewer`` may see in it (None: not logged in)."""
        album, can_manage, public_only = await self._visible(viewer, album_id)
        entries = await self._db.run(library_queries.album_entries, album.id,
                                     public_only=public_only, now=self._now())
        return AlbumView(album, entries, can_manage, cover=_cover(album, entries),
                         size=len(entries), total=len(entries), next_cursor=None)

    async def view_page(self, viewer: Principal, album_id: str, *, limit: str | None = None,
                        cursor: str | None = None) -> AlbumView:
        """An album and a page of the images ``viewer`` may see in it, in album order by
        signed cursor."""
        size = parse_limit(limit)
        album, can_manage, public_only = await self._visible(viewer, album_id)
        keyset = Keyset("album images", album.id)
        page = await self._db.run(library_queries.album_entries_page, album.id,
                                  album.cover_image_id, public_only=public_only,
                                  now=self._now(), limit=size,
                                  after=keyset.after(cursor, self._cursor_key))
        return AlbumView(album, page.entries, can_manage, cover=page.cover, size=size,
                         total=page.total,
                         next_cursor=keyset.next_cursor(page.more, page.last_key,
                                                        self._cursor_key))

    async def _visible(self, viewer: Principal | None,
                       album_id: str) -> tuple[Album, bool, bool]:
        """The album if ``viewer`` may see it (else NotFound), whether they may manage it,
        and whether they see only its public images."""
        album = await self._db.run(q.album_by_id, album_id)
        can_manage = album is not None and _may_manage(viewer, album)
        if album is None or not (album.is_public or can_manage):
            raise NotFound("No such album.")
        owner_sees = viewer is not None and viewer.user.id == album.owner_id
        return album, can_manage, not (owner_sees or can_manage)

    async def edit(self, viewer: Principal, album_id: str, *, title: object = None,
                   description: object = None, is_public: object = None,
                   cover_image_id: object = ...) -> None:
        """Change title, description, visibility or cover (``None`` for the cover: the
        first image again); None elsewhere leaves a field as it is."""
        _check_fields(title, description, is_public, title_required=False)
        album = await self.manageable(viewer, album_id)
        values: dict[str, Any] = {}
        if title is not None:
            values["title"] = title.strip()
        if description is not None:
            values["description"] = description
        if is_public is not None:
            values["is_public"] = is_public
        if cover_image_id is not ...:
            if cover_image_id is not None and (
                    not isinstance(cover_image_id, str)
                    or cover_image_id not in await self._db.run(q.album_image_ids, album.id)):
                raise ValidationFailed.one("coverImageId",
                                           "The cover must be one of the album's images.")
            values["cover_image_id"] = cover_image_id
        if values:
            await self._db.run(q.update_album, album.id, self._now(), **values)

    async def delete(self, viewer: Principal, album_id: str) -> None:
        """Delete an album; its images stay in the library."""
        album = await self.manageable(viewer, album_id)
        await self._db.run(q.delete_album, album.id)

    async def set_images(self, viewer: Principal, album_id: str, image_ids: object) -> list[str]:
        """Make exactly these images (the owner's) the album's, in this order."""
        album = await self.manageable(viewer, album_id)
        ids = await self._owned(album, image_ids, unique=True)
        return await self._db.run(q.set_album_images, album.id, ids, self._now())

    async def add_images(self, viewer: Principal, album_id: str, image_ids: object) -> list[str]:
        """Append images of the owner's (those already in the album stay where they are)."""
        album = await self.manageable(viewer, album_id)
        ids = await self._owned(album, image_ids)
        if album.image_count + len(ids) > MAX_ALBUM_IMAGES:
            present = set(await self._db.run(q.album_image_ids, album.id))
            if len(present | set(ids)) > MAX_ALBUM_IMAGES:
                raise _too_many()
        return await self._db.run(q.add_album_images, album.id, ids, self._now())

    async def remove_images(self, viewer: Principal, album_id: str,
                            image_ids: object) -> list[str]:
        """Take images out of the album; they stay in the library."""
        album = await self.manageable(viewer, album_id)
        ids = _id_list(image_ids)
        return await self._db.run(q.remove_album_images, album.id, ids, self._now())

    async def upload_target(self, owner_id: str | None, album_id: str) -> Album:
        """The album an upload goes into, checked before the upload is stored: it must be
        the uploader's (guests have none)."""
        album = await self._db.run(q.album_by_id, album_id) if album_id else None
        if album is None or owner_id is None or album.owner_id != owner_id:
            raise ValidationFailed.one("albumId", "This value is not one of your albums.")
        return album

    async def add_upload(self, album: Album, image_id: str) -> None:
        """Append a just-uploaded image to the album ``upload_target`` checked."""
        await self._db.run(q.add_album_images, album.id, [image_id], self._now())

    async def manageable(self, viewer: Principal, album_id: str) -> Album:
        """The album if ``viewer`` may change it: 404 when they may not even see it,
        403 when it is someone else's public album."""
        album = await self._db.run(q.album_by_id, album_id)
        if album is None or not (album.is_public or _may_manage(viewer, album)):
            raise NotFound("No such album.")
        if not _may_manage(viewer, album):
            raise Forbidden("Only the owner or an administrator may change this album.")
        return album

    async def _owned(self, album: Album, image_ids: object, unique: bool = False) -> list[str]:
        ids = _id_list(image_ids, unique=unique)
        owned = await self._db.run(q.owned_image_ids, album.owner_id, ids) if ids else set()
        strangers = [i for i in ids if i not in owned]
        if strangers:
            raise ValidationFailed.one(
                "imageIds", "These are not images of the album's owner: "
                + ", ".join(strangers[:10]) + ".")
        return ids


def _may_manage(viewer: Principal | None, album: Album) -> bool:
    return viewer is not None and (viewer.is_admin or viewer.user.id == album.owner_id)


def _id_list(value: object, unique: bool = False) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationFailed.one("imageIds", "This value should be a list of image ids.")
    if len(value) > MAX_ALBUM_IMAGES:
        raise _too_many()
    if unique and len(set(value)) != len(value):
        raise ValidationFailed.one("imageIds", "Each image may appear only once.")
    return list(dict.fromkeys(value))


def _too_many() -> ValidationFailed:
    return ValidationFailed.one("imageIds",
                                f"An album holds at most {MAX_ALBUM_IMAGES} images.")


def _check_fields(title: object, description: object, is_public: object, *,
                  title_required: bool) -> None:
    violations = []
    if title is None and title_required:
        violations.append(Violation("title", "This value should not be blank."))
    elif title is not None and not isinstance(title, str):
        violations.append(Violation("title", "This value should be of type string."))
    elif isinstance(title, str) and not title.strip():
        violations.append(Violation("title", "This value should not be blank."))
    elif isinstance(title, str) and len(title.strip()) > MAX_TITLE:
        violations.append(Violation(
            "title", f"This value is too long. It should have {MAX_TITLE} characters or less."))
    violations += edit_violations(description, is_public, MAX_DESCRIPTION)
    if violations:
        raise ValidationFailed(*violations)
