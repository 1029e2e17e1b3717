"""Query functions for the image library: keyset listings, counts, batch lookup, edits.

Listings are ordered by one sort column and the image id as a tie-breaker, so every
row has a unique, stable position; a page continues *after* (or *before*) the sort key
of a row with a row-value comparison, which the feed indexes answer with one seek
(docs/library-indexes.md). OFFSET is only used for plain page numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from imagehost.db.images import IMAGE_COLUMNS, ImageRecord
from imagehost.db.keyset import count_rows, keyset_page
from imagehost.db.schema import album_images, images, users

# Sort keys a listing may use -> the column holding them.
SORT_COLUMNS: dict[str, sa.Column] = {
    "created_at": images.c.created_at,
    "updated_at": images.c.sort_updated_at,
    "views": images.c.views,
    "size": images.c.size,
}
SEARCH_FIELDS = ("description", "file_name", "user")

_OWNER_COLUMNS = (
    users.c.username.label("owner_username"),
    users.c.email.label("owner_email"),
    users.c.display_name.label("owner_display_name"),
)
_WITH_OWNER = images.outerjoin(users, users.c.id == images.c.owner_id)
# Select objects are immutable; building this once saves every listing a little time.
_ENTRIES = sa.select(*IMAGE_COLUMNS, *_OWNER_COLUMNS).select_from(_WITH_OWNER)


@dataclass(frozen=True)
class Owner:
    id: str
    username: str
    email: str
    display_name: str


@dataclass(frozen=True)
class LibraryEntry:
    """An image with its owner (None for guest uploads)."""

    image: ImageRecord
    owner: Owner | None


@dataclass(frozen=True)
class SortKey:
    """A row's position in a listing: its sort value and its id."""

    value: datetime | int
    image_id: str


@dataclass(frozen=True)
class ImageFilter:
    """Which images a listing holds."""

    public_only: bool = False
    owner_id: str | None = None
    search_term: str | None = None
    search_by: str = "description"
    now: datetime | None = None  # leave out images expired at this time


@dataclass(frozen=True)
class Ordering:
    key: str  # one of SORT_COLUMNS
    descending: bool = True


@dataclass(frozen=True)
class Listing:
    """One page of a listing; ``more`` says whether rows follow in the scan direction."""

    entries: list[LibraryEntry]
    more: bool
    total: int


def sort_key(image: ImageRecord, key: str) -> SortKey:
    """The position of ``image`` in a listing ordered by ``key``."""
    values = {"created_at": image.created_at, "updated_at": image.updated_at or image.created_at,
              "views": image.views, "size": image.size}
    return SortKey(values[key], image.id)


def list_images(conn: sa.Connection, where: ImageFilter, ordering: Ordering, limit: int, *,
                offset: int = 0, after: SortKey | None = None,
                before: SortKey | None = None) -> Listing:
    """A page of ``limit`` entries and the total count, in ``ordering``.

    ``after`` continues past a row; ``before`` returns the rows just before one (still in
    ``ordering``, ``more`` then meaning more rows further back).
    """
    entries, more = image_page(conn, where, ordering, limit, offset=offset, after=after,
                               before=before)
    return Listing(entries, more, count_images(conn, where))


def image_page(conn: sa.Connection, where: ImageFilter, ordering: Ordering, limit: int, *,
               offset: int = 0, after: SortKey | None = None,
               before: SortKey | None = None) -> tuple[list[LibraryEntry], bool]:
    """The entries of one page and whether more follow (``list_images`` without the count)."""
    query = page_query(where, ordering, limit + 1, offset=offset, after=after, before=before)
    rows = conn.execute(query).all()
    entries = [_entry(r) for r in rows[:limit]]
    if before is not None:
        entries.reverse()
    return entries, len(rows) > limit


def page_query(where: ImageFilter, ordering: Ordering, limit: int, *, offset: int = 0,
               after: SortKey | None = None, before: SortKey | None = None) -> sa.Select:
    """The ``SELECT`` of one page: a seek on (sort column, id), or an OFFSET."""
    column = SORT_COLUMNS[ordering.key]
    scan_descending = ordering.descending != (before is not None)
    query = _filtered(_ENTRIES, where)
    seek = before or after
    if seek is not None:
        row = sa.tuple_(column, images.c.id)
        bound = sa.tuple_(sa.literal(seek.value, column.type),
                          sa.literal(seek.image_id, images.c.id.type))
        query = query.where(row < bound if scan_descending else row > bound)
    direction = sa.desc if scan_descending else sa.asc
    order = (direction(column), direction(images.c.id))
    if offset:
        # Skip rows in an id-only subquery: the index covers it, and the owner join and
        # row fetches happen only for the rows of the page.
        source = _WITH_OWNER if where.search_term and where.search_by == "user" else images
        skipped = _filtered(sa.select(images.c.id).select_from(source), where)
        page_ids = skipped.order_by(*order).limit(limit).offset(offset).scalar_subquery()
        return _ENTRIES.where(images.c.id.in_(page_ids)).order_by(*order)
    return query.order_by(*order).limit(limit)


def count_images(conn: sa.Connection, where: ImageFilter) -> int:
    """How many images ``where`` matches."""
    source = _WITH_OWNER if where.search_term and where.search_by == "user" else images
    query = _filtered(sa.select(sa.func.count()).select_from(source), where)
    return conn.execute(query).scalar_one()


def entries_by_ids(conn: sa.Connection, image_ids: Sequence[str],
                   viewer_id: str | None, see_all: bool = False,
                   now: datetime | None = None) -> list[LibraryEntry]:
    """The entries among ``image_ids`` the viewer may see (own or public), in that order
    (without those expired at ``now``, if given)."""
    query = _ENTRIES.where(images.c.id.in_(list(image_ids)))
    if now is not None:
        query = query.where(not_expired(now))
    if not see_all:
        query = query.where(sa.or_(images.c.is_public == sa.true(),
                                   images.c.owner_id == viewer_id))
    found = {r.id: _entry(r) for r in conn.execute(query)}
    return [found[i] for i in dict.fromkeys(image_ids) if i in found]


def album_entries(conn: sa.Connection, album_id: str, *, public_only: bool,
                  now: datetime) -> list[LibraryEntry]:
    """The entries of an album's images in album order (only public ones if
    ``public_only``), without images expired at ``now``."""
    query = _album_query(album_id, public_only, now).order_by(*_ALBUM_ORDER)
    return [_entry(r) for r in conn.execute(query)]


@dataclass(frozen=True)
class AlbumEntriesPage:
    """A page of an album's entries, with what the whole album shows."""

    entries: list[LibraryEntry]
    more: bool
    total: int
    cover: LibraryEntry | None  # the chosen cover if shown, else the first entry
    last_key: tuple[int, str] | None  # (position, image id) of the page's last entry


def album_entries_page(conn: sa.Connection, album_id: str, cover_image_id: str | None, *,
                       public_only: bool, now: datetime, limit: int,
                       after: tuple[int, str] | None) -> AlbumEntriesPage:
    """``album_entries`` a page at a time: in album order after (position, image id)."""
    query = _album_query(album_id, public_only, now)
    rows, more = keyset_page(conn, query.add_columns(album_images.c.position), _ALBUM_ORDER,
                             descending=False, limit=limit, after=after)
    cover = None
    if cover_image_id is not None:
        cover = conn.execute(query.where(images.c.id == cover_image_id)).first()
    if cover is None:
        cover = conn.execute(query.order_by(*_ALBUM_ORDER).limit(1)).first()
    entries = [_entry(row[:-1]) for row in rows]
    return AlbumEntriesPage(entries, more, count_rows(conn, query),
                            None if cover is None else _entry(cover),
                            (rows[-1][-1], entries[-1].image.id) if rows else None)


_ALBUM_ORDER = (album_images.c.position, album_images.c.image_id)


def _album_query(album_id: str, public_only: bool, now: datetime) -> sa.Select:
    query = (_ENTRIES.join(album_images, album_images.c.image_id == images.c.id)
             .where(album_images.c.album_id == album_id, not_expired(now)))
    if public_only:
        query = query.where(images.c.is_public == sa.true())
    return query


def not_expired(now: datetime) -> sa.ColumnElement[bool]:
    """Images that are still served at ``now``."""
    return sa.or_(images.c.expires_at.is_(None), images.c.expires_at > now)


def update_image(conn: sa.Connection, image_id: str, now: datetime, *,
                 description: str | None = None, is_public: bool | None = None) -> bool:
    """Change description and/or visibility, stamping ``updated_at``; False if unknown."""
    values: dict[str, object] = {"updated_at": now, "sort_updated_at": now}
    if description is not None:
        values["description"] = description
    if is_public is not None:
        values["is_public"] = is_public
    query = images.update().where(images.c.id == image_id).values(**values)
    return conn.execute(query).rowcount > 0


def _filtered(query: sa.Select, where: ImageFilter) -> sa.Select:
    if where.public_only:
        # "= 1", not "IS 1": only an equality lets SQLite use the feed indexes.
        query = query.where(images.c.is_public == sa.true())
    if where.owner_id is not None:
        query = query.where(images.c.owner_id == where.owner_id)
    if where.search_term:
        query = query.where(_search(where.search_by, where.search_term))
    if where.now is not None:
        query = query.where(not_expired(where.now))
    return query


def _search(search_by: str, term: str) -> sa.ColumnElement[bool]:
    if search_by == "user":
        return sa.or_(_contains(users.c.username, term), _contains(users.c.display_name, term))
    if search_by == "file_name":
        return sa.or_(_contains(images.c.file_name, term),
                      _contains(images.c.original_name, term))
    return _contains(images.c.description, term)


def _contains(column: sa.ColumnElement, term: str) -> sa.ColumnElement[bool]:
    """Case-insensitive substring match; ``%`` and ``_`` in ``term`` match themselves."""
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.ilike(f"%{escaped}%", escape="\\")


def _entry(row: sa.Row) -> LibraryEntry:
    """An entry from a row of ``_ENTRIES``: the image's columns, then the owner's."""
    image = ImageRecord(*row[:_IMAGE_WIDTH])
    username, email, display_name = row[_IMAGE_WIDTH:]
    owner = None
    if image.owner_id is not None and username is not None:
        owner = Owner(image.owner_id, username, email, display_name)
    return LibraryEntry(image, owner)


_IMAGE_WIDTH = len(IMAGE_COLUMNS)
