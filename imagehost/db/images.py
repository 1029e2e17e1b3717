"""Query functions for image records (run on a DB thread)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime

import sqlalchemy as sa

from imagehost.db.schema import images, preserved_originals


@dataclass(frozen=True)
class ImageRecord:
    id: str
    owner_id: str | None
    file_name: str  # "{id}.{ext}"
    original_name: str  # the client's file name, "" when it gave none
    description: str
    is_public: bool
    created_at: datetime
    updated_at: datetime | None
    views: int
    size: int
    mime_type: str
    width: int
    height: int
    sha256: str
    focal_x: int | None = None  # thousandths of the displayed width
    focal_y: int | None = None
    blurhash: str | None = None
    dominant_color: str | None = None  # "#rrggbb"

    @property
    def focal_point(self) -> tuple[int, int] | None:
        """The stored focal point in thousandths, or None."""
        if self.focal_x is None or self.focal_y is None:
            return None
        return self.focal_x, self.focal_y


# The columns of an ImageRecord; the table has more (sort_updated_at), so select these.
IMAGE_COLUMNS = tuple(images.c[f.name] for f in fields(ImageRecord))


def select_images() -> sa.Select:
    """``SELECT`` of exactly the ImageRecord columns (use instead of ``images.select()``)."""
    return sa.select(*IMAGE_COLUMNS)


def insert_image(conn: sa.Connection, image: ImageRecord) -> None:
    conn.execute(images.insert().values(
        **image.__dict__, sort_updated_at=image.updated_at or image.created_at))


def image_by_id(conn: sa.Connection, image_id: str) -> ImageRecord | None:
    row = conn.execute(select_images().where(images.c.id == image_id)).mappings().first()
    return None if row is None else ImageRecord(**row)


def image_by_owner_and_hash(conn: sa.Connection, owner_id: str | None,
                            sha256: str) -> ImageRecord | None:
    """An image of this owner with this content hash, if any (for deduplicating imports)."""
    query = select_images().where(images.c.owner_id == owner_id, images.c.sha256 == sha256)
    row = conn.execute(query.limit(1)).mappings().first()
    return None if row is None else ImageRecord(**row)


def delete_image(conn: sa.Connection, image_id: str,
                 preserved: tuple[str, datetime] | None = None) -> bool:
    """Delete a record; ``preserved`` (extension, time) notes that its original stays."""
    if conn.execute(images.delete().where(images.c.id == image_id)).rowcount == 0:
        return False
    if preserved is not None:
        ext, deleted_at = preserved
        conn.execute(preserved_originals.insert().values(
            image_id=image_id, ext=ext, deleted_at=deleted_at))
    return True


def kept_image_ids(conn: sa.Connection) -> set[str]:
    """Ids whose stored files must stay: every record, and every preserved original."""
    ids = set(conn.execute(sa.select(images.c.id)).scalars())
    return ids | set(conn.execute(sa.select(preserved_originals.c.image_id)).scalars())


def add_views(conn: sa.Connection, counts: Mapping[str, int]) -> None:
    """Add batched view counts (image id -> views since the last flush)."""
    for image_id, count in counts.items():
        conn.execute(
            images.update().where(images.c.id == image_id).values(views=images.c.views + count)
        )


@dataclass(frozen=True)
class RecordedOriginal:
    """What the record of an image says its stored original is."""

    image_id: str
    ext: str
    size: int
    sha256: str


def recorded_originals(conn: sa.Connection) -> list[RecordedOriginal]:
    """Every image's original as recorded at upload (id, extension, size, sha256)."""
    query = sa.select(images.c.id, images.c.file_name, images.c.size, images.c.sha256)
    return [RecordedOriginal(row.id, row.file_name.rpartition(".")[2], row.size, row.sha256)
            for row in conn.execute(query.order_by(images.c.id))]


def set_focal_point(conn: sa.Connection, image_id: str, focus: tuple[int, int] | None,
                    now: datetime) -> bool:
    """Store (or with None clear) an image's focal point; False if the image is unknown."""
    x, y = focus if focus is not None else (None, None)
    query = images.update().where(images.c.id == image_id).values(
        focal_x=x, focal_y=y, updated_at=now, sort_updated_at=now)
    return conn.execute(query).rowcount > 0


def set_placeholder(conn: sa.Connection, image_id: str, blurhash: str,
                    dominant_color: str) -> None:
    """Store the placeholder computed for an image stored before placeholders."""
    conn.execute(images.update().where(images.c.id == image_id).values(
        blurhash=blurhash, dominant_color=dominant_color))


def images_without_placeholder(conn: sa.Connection) -> list[RecordedOriginal]:
    """The stored originals of every image that has no placeholder yet."""
    query = (sa.select(images.c.id, images.c.file_name, images.c.size, images.c.sha256)
             .where(images.c.blurhash.is_(None)).order_by(images.c.id))
    return [RecordedOriginal(row.id, row.file_name.rpartition(".")[2], row.size, row.sha256)
            for row in conn.execute(query)]


def image_exists(conn: sa.Connection, image_id: str) -> bool:
    """True while the image has a record."""
    query = sa.select(images.c.id).where(images.c.id == image_id)
    return conn.execute(query).first() is not None
