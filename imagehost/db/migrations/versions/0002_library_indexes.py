"""Library listings: a sortable "last changed" column and one index per feed ordering.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from imagehost.db.types import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_FEED_INDEXES = {
    "ix_images_is_public_created_at_id": ["is_public", "created_at", "id"],
    "ix_images_is_public_sort_updated_at_id": ["is_public", "sort_updated_at", "id"],
    "ix_images_is_public_views_id": ["is_public", "views", "id"],
    "ix_images_is_public_size_id": ["is_public", "size", "id"],
}


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("sort_updated_at", UTCDateTime, nullable=True))
    op.execute("UPDATE images SET sort_updated_at = COALESCE(updated_at, created_at)")
    with op.batch_alter_table("images") as batch:
        batch.alter_column("sort_updated_at", existing_type=UTCDateTime, nullable=False)
    for name, columns in _FEED_INDEXES.items():
        op.create_index(name, "images", columns)


def downgrade() -> None:
    for name in _FEED_INDEXES:
        op.drop_index(name, "images")
    with op.batch_alter_table("images") as batch:
        batch.drop_column("sort_updated_at")
