"""Usernames and e-mail addresses are unique in any case and Unicode form: the columns
``username_key`` and ``email_key`` hold their ``identity_key`` under unique indexes.

Existing rows that already collide (``Bob`` and ``bob``) both stay: the oldest gets the
plain key, each later one the key plus ``" <id>"`` (a space, which no valid name holds),
so it still logs in by its exact spelling.

Nothing here rebuilds ``users``: on SQLite a rebuild drops the table, and with foreign
keys on (they cannot be turned off inside the migration's transaction) that would
cascade to every API key, refresh token and session, and orphan every image. So the
columns are added NOT NULL with a placeholder default (dropped again where the database
can), and uniqueness is a unique index rather than a constraint.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

from imagehost.db.types import identity_key

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_KEYS = (("username_key", "username", 128), ("email_key", "email", 320))


def upgrade() -> None:
    for key, _source, length in _KEYS:
        op.add_column("users", sa.Column(key, sa.String(length), nullable=False,
                                         server_default=""))
    _fill_keys(op.get_bind())
    for key, _source, _length in _KEYS:
        if op.get_bind().dialect.name != "sqlite":
            op.alter_column("users", key, server_default=None)
        op.create_index(f"ix_users_{key}", "users", [key], unique=True)


def _fill_keys(conn: sa.Connection) -> None:
    users = sa.table("users", *(sa.column(name) for name in (
        "id", "created_at", "username", "email", "username_key", "email_key")))
    taken: dict[str, set[str]] = {key: set() for key, _source, _length in _KEYS}
    rows = conn.execute(sa.select(users.c.id, users.c.username, users.c.email)
                        .order_by(users.c.created_at, users.c.id)).mappings().all()
    for row in rows:
        values = {}
        for key, source, _length in _KEYS:
            value = identity_key(row[source])
            if value in taken[key]:
                value = f"{value} {row['id']}"
            taken[key].add(value)
            values[key] = value
        conn.execute(users.update().where(users.c.id == row["id"]).values(**values))


def downgrade() -> None:
    for key, _source, _length in _KEYS:
        op.drop_index(f"ix_users_{key}", "users")
        op.drop_column("users", key)
