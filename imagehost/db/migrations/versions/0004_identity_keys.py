"""Usernames and e-mail addresses are unique in any case and Unicode form: the columns
``username_key`` and ``email_key`` hold their ``identity_key`` under unique constraints.

Existing rows that already collide (``Bob`` and ``bob``) both stay: the oldest gets the
plain key, each later one the key plus ``" <id>"`` (a space, which no valid name holds),
so it still logs in by its exact spelling.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

from imagehost.db.types import identity_key

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_KEYS = (("username_key", "username", 128), ("email_key", "email", 320))


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        for key, _source, length in _KEYS:
            batch.add_column(sa.Column(key, sa.String(length), nullable=True))
    users = sa.table("users", *(sa.column(name) for name in (
        "id", "created_at", "username", "email", "username_key", "email_key")))
    conn = op.get_bind()
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
    with op.batch_alter_table("users") as batch:
        for key, _source, length in _KEYS:
            batch.alter_column(key, existing_type=sa.String(length), nullable=False)
            batch.create_unique_constraint(f"uq_users_{key}", [key])


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        for key, _source, _length in _KEYS:
            batch.drop_constraint(f"uq_users_{key}", type_="unique")
            batch.drop_column(key)
