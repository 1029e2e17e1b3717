"""Keyset paging: a page of a query in a fixed order of two columns (a value and a
unique id), continuing after the last row of the page before, so rows added meanwhile
are neither repeated nor skipped and no page scans the ones before it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa


def keyset_page(conn: sa.Connection, query: sa.Select, key: tuple[sa.Column, sa.Column], *,
                descending: bool, limit: int,
                after: tuple[Any, str] | None) -> tuple[Sequence[sa.Row], bool]:
    """Up to ``limit`` rows of ``query`` ordered by ``key``, after the row whose key is
    ``after`` (None: from the start); and whether more rows follow."""
    if after is not None:
        bound = sa.tuple_(*(sa.literal(value, column.type)
                            for value, column in zip(after, key, strict=True)))
        row = sa.tuple_(*key)
        query = query.where(row < bound if descending else row > bound)
    order = [column.desc() if descending else column.asc() for column in key]
    rows = conn.execute(query.order_by(*order).limit(limit + 1)).all()
    return rows[:limit], len(rows) > limit


def count_rows(conn: sa.Connection, query: sa.Select) -> int:
    """How many rows ``query`` selects."""
    return conn.execute(sa.select(sa.func.count()).select_from(query.subquery())).scalar_one()
