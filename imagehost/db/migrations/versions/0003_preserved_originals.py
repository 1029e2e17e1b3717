"""Originals kept by a delete with preserveOnDisk, so garbage collection keeps them.

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


def downgrade() -> None:
    op.drop_table("preserved_originals")
