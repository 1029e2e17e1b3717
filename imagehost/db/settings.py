"""Runtime settings stored in the database (override the config file's defaults)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from imagehost.db.schema import settings


def stored_settings(conn: sa.Connection) -> dict[tuple[str, str], Any]:
    rows = conn.execute(sa.select(settings.c.category, settings.c.name, settings.c.value))
    return {(category, name): value for category, name, value in rows}


def store_settings(conn: sa.Connection, category: str, values: Mapping[str, Any]) -> None:
    for name, value in values.items():
        where = (settings.c.category == category) & (settings.c.name == name)
        if conn.execute(settings.update().where(where).values(value=value)).rowcount == 0:
            conn.execute(settings.insert().values(category=category, name=name, value=value))
