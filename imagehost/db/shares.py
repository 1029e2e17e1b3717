"""Query functions for share links (run on a DB thread)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from imagehost.db.keyset import count_rows, keyset_page
from imagehost.db.schema import shares


@dataclass(frozen=True)
class Share:
    code: str
    owner_id: str
    image_id: str | None
    album_id: str | None
    password_hash: str | None
    variant: dict[str, Any] | None  # the fixed variant's query: {"w", "h", "crop", "format"}
    expires_at: datetime | None
    created_at: datetime
    views: int = 0

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


_COLUMNS = tuple(shares.c[f.name] for f in fields(Share))


def insert_share(conn: sa.Connection, share: Share) -> None:
    conn.execute(shares.insert().values(**share.__dict__))


def share_by_code(conn: sa.Connection, code: str) -> Share | None:
    row = conn.execute(sa.select(*_COLUMNS).where(shares.c.code == code)).first()
    return None if row is None else Share(*row)


def list_shares(conn: sa.Connection, owner_id: str, limit: int,
                after: tuple[datetime, str] | None = None) -> tuple[list[Share], bool, int]:
    """A page of an owner's shares, newest first, continuing after (created_at, code);
    the shares, whether more follow, and how many the owner has."""
    query = sa.select(*_COLUMNS).where(shares.c.owner_id == owner_id)
    rows, more = keyset_page(conn, query, (shares.c.created_at, shares.c.code),
                             descending=True, limit=limit, after=after)
    return [Share(*row) for row in rows], more, count_rows(conn, query)


def delete_share(conn: sa.Connection, code: str) -> bool:
    return conn.execute(shares.delete().where(shares.c.code == code)).rowcount > 0


def count_view(conn: sa.Connection, code: str) -> None:
    conn.execute(shares.update().where(shares.c.code == code)
                 .values(views=shares.c.views + 1))
