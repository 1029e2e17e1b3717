"""Token buckets of the rate limits, one row per (limit, key)."""

from __future__ import annotations

import sqlalchemy as sa

from imagehost.db.schema import rate_buckets as buckets

_CREATE_ATTEMPTS = 3


def spend_token(conn: sa.Connection, name: str, key: str, capacity: float, rate: float,
                now: float) -> float:
    """Take one token from a bucket that refills ``rate`` tokens a second up to
    ``capacity``. Returns 0 when one was taken, else the seconds (> 0) until one will be.

    Safe under PostgreSQL's READ COMMITTED, where each statement sees what others have
    committed by then: a refusal is decided on the locked row, never on a read taken
    after an UPDATE that found no token (the bucket may have been created or refilled
    in between). SQLite holds its write lock from the first UPDATE on.
    """
    if _take(conn, name, key, capacity, rate, now):
        return 0.0
    for _ in range(_CREATE_ATTEMPTS):
        row = conn.execute(sa.select(buckets.c.tokens, buckets.c.updated)
                           .where(buckets.c.name == name, buckets.c.key == key)
                           .with_for_update()).first()
        if row is not None:
            return _spend_locked(conn, name, key, capacity, rate, now, row)
        if _create(conn, name, key, capacity - 1, now, forget_before=now - capacity / rate):
            return 0.0
        # Another process created the bucket meanwhile (and committed): lock and read it.
    raise AssertionError("a rate bucket neither exists nor can be created")


def _take(conn: sa.Connection, name: str, key: str, capacity: float, rate: float,
          now: float) -> bool:
    """One atomic UPDATE: refill, and spend a token if there is one."""
    refilled = buckets.c.tokens + (sa.literal(now) - buckets.c.updated) * rate
    refilled = sa.case((refilled > capacity, sa.literal(capacity)), else_=refilled)
    taken = conn.execute(
        buckets.update()
        .where(buckets.c.name == name, buckets.c.key == key, refilled >= 1)
        .values(tokens=refilled - 1, updated=now))
    return taken.rowcount > 0


def _spend_locked(conn: sa.Connection, name: str, key: str, capacity: float, rate: float,
                  now: float, row: sa.Row) -> float:
    """Spend from a bucket row this transaction holds locked, or say how long to wait."""
    tokens = min(capacity, row.tokens + (now - row.updated) * rate)
    if tokens < 1:
        return (1 - tokens) / rate
    conn.execute(buckets.update().where(buckets.c.name == name, buckets.c.key == key)
                 .values(tokens=tokens - 1, updated=now))
    return 0.0


def _create(conn: sa.Connection, name: str, key: str, tokens: float, now: float,
            forget_before: float) -> bool:
    """A new bucket; buckets full again (untouched since ``forget_before``) are dropped,
    but not those another transaction holds: on PostgreSQL two processes creating
    buckets at once would otherwise lock the same old rows in different orders and
    deadlock. (SQLite has one writer and no row locks; the FOR UPDATE is left out.)"""
    forgotten = (sa.select(buckets.c.key)
                 .where(buckets.c.name == name, buckets.c.updated < forget_before)
                 .with_for_update(skip_locked=True))
    conn.execute(buckets.delete().where(buckets.c.name == name,
                                        buckets.c.key.in_(forgotten.scalar_subquery())))
    try:
        with conn.begin_nested():
            conn.execute(buckets.insert().values(name=name, key=key, tokens=tokens,
                                                 updated=now))
    except sa.exc.IntegrityError:
        return False
    return True
