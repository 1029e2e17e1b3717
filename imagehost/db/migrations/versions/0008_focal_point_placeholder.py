"""Images get a focal point (for their crops) and a placeholder (BlurHash and dominant
colour, painted before the image arrives).

All four columns are nullable: existing images have no focal point, and their
placeholders come from ``imagehost placeholders`` (a backfill on the CPU pool: computing
them here would decode every original inside the migration).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMNs (nullable): no table rebuild on SQLite.
    op.add_column("images", sa.Column("focal_x", sa.Integer, nullable=True))
    op.add_column("images", sa.Column("focal_y", sa.Integer, nullable=True))
    op.add_column("images", sa.Column("blurhash", sa.String(64), nullable=True))
    op.add_column("images", sa.Column("dominant_color", sa.String(7), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("images") as batch:
        for name in ("dominant_color", "blurhash", "focal_y", "focal_x"):
            batch.drop_column(name)
