"""Query functions for quotas: what an owner stores, and inserts that stay within a limit.

An owner is a user id, or None for all guest uploads together. Usage is counted from the
``images`` rows, never kept in a counter, so deletes and hand-overs need no bookkeeping.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa

from imagehost.db.images import ImageRecord, insert_image
from imagehost.db.schema import images, users

# The advisory lock that serialises guest uploads' quota checks on PostgreSQL (any
# constant: it only has to differ from other advisory locks, and there are none).
_GUEST_LOCK = 0x696D6771  # "imgq"

#: The largest limit accepted (the columns are BIGINT).
MAX_LIMIT = 2**62


@dataclass(frozen=True)
class Limits:
    """Effective limits of an owner; None means unlimited."""

    bytes: int | None = None
    images: int | None = None

    @property
    def unlimited(self) -> bool:
        return self.bytes is None and self.images is None


@dataclass(frozen=True)
class Usage:
    """What an owner stores: bytes of originals and number of images."""

    bytes: int
    images: int


def _owned_by(owner_id: str | None):
    return images.c.owner_id.is_(None) if owner_id is None else images.c.owner_id == owner_id


def usage(conn: sa.Connection, owner_id: str | None) -> Usage:
    """The bytes and images of one user (None: of all guest uploads)."""
    query = sa.select(sa.func.coalesce(sa.func.sum(images.c.size), 0), sa.func.count())
    total, count = conn.execute(query.where(_owned_by(owner_id))).one()
    return Usage(int(total), int(count))


def usage_of(conn: sa.Connection, owner_ids: Iterable[str]) -> dict[str, Usage]:
    """The usage of each of these users (zero for a user without images)."""
    ids = list(owner_ids)
    found = {owner: Usage(0, 0) for owner in ids}
    if not ids:
        return found
    query = (sa.select(images.c.owner_id, sa.func.coalesce(sa.func.sum(images.c.size), 0),
                       sa.func.count())
             .where(images.c.owner_id.in_(ids)).group_by(images.c.owner_id))
    for owner, total, count in conn.execute(query):
        found[owner] = Usage(int(total), int(count))
    return found


def lock_owner(conn: sa.Connection, owner_id: str | None) -> None:
    """Serialise quota checks of one owner until the transaction ends.

    SQLite: ``BEGIN IMMEDIATE`` takes the database's write lock before anything is read
    (the driver would otherwise begin the transaction only at the INSERT, after the
    count); it must be the transaction's first statement. PostgreSQL: the user's row
    ``FOR UPDATE``, or an advisory lock for the guests.
    """
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    elif owner_id is None:
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_GUEST_LOCK)))
    else:
        conn.execute(sa.select(users.c.id).where(users.c.id == owner_id).with_for_update())


def lock_owners(conn: sa.Connection, owner_ids: Iterable[str]) -> None:
    """``lock_owner`` for several users at once (in id order, so that two transactions
    locking the same users cannot deadlock). Must be the transaction's first statement."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        return
    conn.execute(sa.select(users.c.id).where(users.c.id.in_(sorted(set(owner_ids))))
                 .order_by(users.c.id).with_for_update())


def would_pass(limits: Limits, current: Usage, adding: Usage) -> bool:
    """Whether ``current`` plus ``adding`` would hold more than ``limits`` allow."""
    return ((limits.bytes is not None and current.bytes + adding.bytes > limits.bytes)
            or (limits.images is not None and current.images + adding.images > limits.images))


def insert_image_within(conn: sa.Connection, image: ImageRecord, limits: Limits) -> Usage | None:
    """Insert ``image`` unless its owner would then hold more than ``limits`` allow;
    returns the usage that refused it, else None.

    Must be the first function of its transaction (see ``lock_owner``).
    """
    lock_owner(conn, image.owner_id)
    current = usage(conn, image.owner_id)
    if would_pass(limits, current, Usage(image.size, 1)):
        return current
    insert_image(conn, image)
    return None
