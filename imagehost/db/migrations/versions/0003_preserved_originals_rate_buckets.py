"""Originals kept by a delete with preserveOnDisk, so that garbage collection keeps them;
token buckets of the rate limits, so that every daemon and worker shares them.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from imagehost.db.types import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "preserved_originals",
        sa.Column("image_id", sa.String(36), nullable=False),
        sa.Column("ext", sa.String(8), nullable=False),
        sa.Column("deleted_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("image_id", name="pk_preserved_originals"),
    )
    op.create_table(
        "rate_buckets",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("tokens", sa.Float, nullable=False),
        sa.Column("updated", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("name", "key", name="pk_rate_buckets"),
    )


def downgrade() -> None:
    op.drop_table("rate_buckets")
    op.drop_table("preserved_originals")
