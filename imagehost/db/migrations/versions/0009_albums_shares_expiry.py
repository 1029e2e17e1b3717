"""Albums, share links and expiring images.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

from imagehost.db.types import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("expires_at", UTCDateTime, nullable=True))
    op.create_index("ix_images_expires_at", "images", ["expires_at"])
    op.create_table(
        "albums",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("owner_id", sa.String(36), nullable=False),
        sa.Column("title", sa.String(255), nullable=False),
        sa.Column("description", sa.String(1000), nullable=False, server_default=""),
        sa.Column("is_public", sa.Boolean, nullable=False),
        sa.Column("cover_image_id", sa.String(36), nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=True),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], ondelete="CASCADE",
                                name="fk_albums_owner_id_users"),
        sa.ForeignKeyConstraint(["cover_image_id"], ["images.id"], ondelete="SET NULL",
                                name="fk_albums_cover_image_id_images"),
        sa.PrimaryKeyConstraint("id", name="pk_albums"),
    )
    op.create_index("ix_albums_owner_id_created_at_id", "albums",
                    ["owner_id", "created_at", "id"])
    op.create_table(
        "album_images",
        sa.Column("album_id", sa.String(36), nullable=False),
        sa.Column("image_id", sa.String(36), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.ForeignKeyConstraint(["album_id"], ["albums.id"], ondelete="CASCADE",
                                name="fk_album_images_album_id_albums"),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], ondelete="CASCADE",
                                name="fk_album_images_image_id_images"),
        sa.PrimaryKeyConstraint("album_id", "image_id", name="pk_album_images"),
    )
    op.create_index("ix_album_images_album_id_position", "album_images",
                    ["album_id", "position"])
    op.create_index("ix_album_images_image_id", "album_images", ["image_id"])
    op.create_table(
        "shares",
        sa.Column("code", sa.String(32), nullable=False),
        sa.Column("owner_id", sa.String(36), nullable=False),
        sa.Column("image_id", sa.String(36), nullable=True),
        sa.Column("album_id", sa.String(36), nullable=True),
        sa.Column("password_hash", sa.String(255), nullable=True),
        sa.Column("variant", sa.JSON, nullable=True),
        sa.Column("expires_at", UTCDateTime, nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("views", sa.Integer, nullable=False, server_default="0"),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], ondelete="CASCADE",
                                name="fk_shares_owner_id_users"),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], ondelete="CASCADE",
                                name="fk_shares_image_id_images"),
        sa.ForeignKeyConstraint(["album_id"], ["albums.id"], ondelete="CASCADE",
                                name="fk_shares_album_id_albums"),
        sa.PrimaryKeyConstraint("code", name="pk_shares"),
    )
    op.create_index("ix_shares_owner_id_created_at", "shares", ["owner_id", "created_at"])
    op.create_index("ix_shares_image_id", "shares", ["image_id"])
    op.create_index("ix_shares_album_id", "shares", ["album_id"])


def downgrade() -> None:
    op.drop_table("shares")
    op.drop_table("album_images")
    op.drop_table("albums")
    op.drop_index("ix_images_expires_at", table_name="images")
    with op.batch_alter_table("images") as batch:
        batch.drop_column("expires_at")
