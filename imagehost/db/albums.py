"""Query functions for albums and the order of their images (run on a DB thread)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime

import sqlalchemy as sa

from imagehost.db.keyset import keyset_page
from imagehost.db.schema import album_images, albums, images


@dataclass(frozen=True)
class Album:
    id: str
    owner_id: str
    title: str
    description: str
    is_public: bool
    cover_image_id: str | None  # None: the first image is the cover
    created_at: datetime
    updated_at: datetime | None
    image_count: int = 0


_ALBUM_COLUMNS = tuple(albums.c[f.name] for f in fields(Album) if f.name != "image_count")
_COUNT = (sa.select(sa.func.count()).where(album_images.c.album_id == albums.c.id)
          .correlate(albums).scalar_subquery().label("image_count"))
_SELECT_ALBUMS = sa.select(*_ALBUM_COLUMNS, _COUNT)


def insert_album(conn: sa.Connection, album: Album) -> None:
    values = {f.name: getattr(album, f.name) for f in fields(Album) if f.name != "image_count"}
    conn.execute(albums.insert().values(**values))


def album_by_id(conn: sa.Connection, album_id: str) -> Album | None:
    row = conn.execute(_SELECT_ALBUMS.where(albums.c.id == album_id)).first()
    return None if row is None else Album(*row)


def list_albums(conn: sa.Connection, owner_id: str, limit: int,
                after: tuple[datetime, str] | None = None) -> tuple[list[Album], bool, int]:
    """A page of an owner's albums, newest first, continuing after (created_at, id);
    the albums, whether more follow, and how many the owner has."""
    query = _SELECT_ALBUMS.where(albums.c.owner_id == owner_id)
    rows, more = keyset_page(conn, query, (albums.c.created_at, albums.c.id),
                             descending=True, limit=limit, after=after)
    total = conn.execute(sa.select(sa.func.count()).select_from(albums)
                         .where(albums.c.owner_id == owner_id)).scalar_one()
    return [Album(*r) for r in rows], more, total


def update_album(conn: sa.Connection, album_id: str, now: datetime, **values: object) -> None:
    """Change title, description, is_public or cover_image_id, stamping ``updated_at``."""
    conn.execute(albums.update().where(albums.c.id == album_id)
                 .values(updated_at=now, **values))


def delete_album(conn: sa.Connection, album_id: str) -> bool:
    """Delete an album (its images stay); False if unknown."""
    return conn.execute(albums.delete().where(albums.c.id == album_id)).rowcount > 0


def album_image_ids(conn: sa.Connection, album_id: str) -> list[str]:
    """The ids of an album's images, in album order."""
    query = (sa.select(album_images.c.image_id).where(album_images.c.album_id == album_id)
             .order_by(album_images.c.position, album_images.c.image_id))
    return list(conn.execute(query).scalars())


def owned_image_ids(conn: sa.Connection, owner_id: str, image_ids: Sequence[str]) -> set[str]:
    """Those of ``image_ids`` that are images of ``owner_id``."""
    query = sa.select(images.c.id).where(images.c.id.in_(list(image_ids)),
                                         images.c.owner_id == owner_id)
    return set(conn.execute(query).scalars())


def set_album_images(conn: sa.Connection, album_id: str, image_ids: Sequence[str],
                     now: datetime) -> list[str]:
    """Make ``image_ids`` the album's images in this order; the new order."""
    conn.execute(album_images.delete().where(album_images.c.album_id == album_id))
    if image_ids:
        conn.execute(album_images.insert(), [
            {"album_id": album_id, "image_id": image_id, "position": position}
            for position, image_id in enumerate(image_ids)])
    _keep_cover(conn, album_id, set(image_ids), now)
    return list(image_ids)


def add_album_images(conn: sa.Connection, album_id: str, image_ids: Sequence[str],
                     now: datetime) -> list[str]:
    """Append the images not in the album yet, in the order given; the new order."""
    present = album_image_ids(conn, album_id)
    known = set(present)
    new = [i for i in dict.fromkeys(image_ids) if i not in known]
    if new:
        last = conn.execute(sa.select(sa.func.max(album_images.c.position))
                            .where(album_images.c.album_id == album_id)).scalar()
        start = -1 if last is None else last
        conn.execute(album_images.insert(), [
            {"album_id": album_id, "image_id": image_id, "position": start + 1 + n}
            for n, image_id in enumerate(new)])
        conn.execute(albums.update().where(albums.c.id == album_id).values(updated_at=now))
    return present + new


def remove_album_images(conn: sa.Connection, album_id: str, image_ids: Sequence[str],
                        now: datetime) -> list[str]:
    """Take images out of the album (they stay in the library); the new order."""
    conn.execute(album_images.delete().where(album_images.c.album_id == album_id,
                                             album_images.c.image_id.in_(list(image_ids))))
    remaining = album_image_ids(conn, album_id)
    _keep_cover(conn, album_id, set(remaining), now)
    return remaining


def _keep_cover(conn: sa.Connection, album_id: str, image_ids: set[str],
                now: datetime) -> None:
    """Stamp the change, and drop a cover that is no longer in the album."""
    album = album_by_id(conn, album_id)
    values: dict[str, object] = {"updated_at": now}
    if album is not None and album.cover_image_id not in image_ids:
        values["cover_image_id"] = None
    conn.execute(albums.update().where(albums.c.id == album_id).values(**values))

