"""Quotas and the end of old credentials: per-user limits and a token generation.

``users.quota_bytes`` and ``users.quota_images`` are a user's own limits (NULL: the
default of the runtime settings; -1: unlimited whatever the default).
``users.token_generation`` goes up on a password change, a reset and a disable; access
tokens carry the generation they were issued under, so older ones stop working on every
daemon at once.

Columns are added, never the table rebuilt (see 0006: on SQLite a rebuild would cascade
to every API key, token and session).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("quota_bytes", sa.BigInteger, nullable=True))
    op.add_column("users", sa.Column("quota_images", sa.BigInteger, nullable=True))
    op.add_column("users", sa.Column("token_generation", sa.Integer, nullable=False,
                                     server_default="0"))


def downgrade() -> None:
    for column in ("token_generation", "quota_images", "quota_bytes"):
        op.drop_column("users", column)
