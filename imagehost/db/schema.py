"""The database schema (SQLAlchemy Core). Alembic migrations must produce exactly this."""

import sqlalchemy as sa

from imagehost.db.types import UTCDateTime

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("username", sa.String(64), nullable=False, unique=True),
    sa.Column("email", sa.String(255), nullable=False, unique=True),
    sa.Column("display_name", sa.String(255), nullable=False, server_default=""),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("is_admin", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("is_active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # identity_key() of username and email: unique, so names differing only in case or
    # Unicode form cannot coexist (room for the " <id>" suffix migration 0006 gives
    # later duplicates that existed before).
    sa.Column("username_key", sa.String(128), nullable=False, unique=True, index=True),
    sa.Column("email_key", sa.String(320), nullable=False, unique=True, index=True),
    # Own limits (NULL: the runtime settings' default; -1: unlimited); migration 0007.
    sa.Column("quota_bytes", sa.BigInteger, nullable=True),
    sa.Column("quota_images", sa.BigInteger, nullable=True),
    # Access tokens carry it; raising it ends every token issued before.
    sa.Column("token_generation", sa.Integer, nullable=False, server_default="0"),
)

refresh_tokens = sa.Table(
    "refresh_tokens",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("user_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("family_id", sa.String(36), nullable=False, index=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("used_at", UTCDateTime, nullable=True),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("user_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"),
              nullable=False, index=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=True),
    sa.Column("last_used_at", UTCDateTime, nullable=True),
)

images = sa.Table(
    "images",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("owner_id", sa.String(36), sa.ForeignKey("users.id", ondelete="SET NULL"),
              nullable=True),
    # "{id}.{ext}", as the seed and Slink show it; the client's name is original_name.
    sa.Column("file_name", sa.String(255), nullable=False),
    sa.Column("original_name", sa.String(255), nullable=False, server_default=""),
    sa.Column("description", sa.String(255), nullable=False, server_default=""),
    sa.Column("is_public", sa.Boolean, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=True),
    # COALESCE(updated_at, created_at), stored so the feed's default order has an index.
    sa.Column("sort_updated_at", UTCDateTime, nullable=False),
    sa.Column("views", sa.Integer, nullable=False, server_default="0"),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("mime_type", sa.String(64), nullable=False),
    sa.Column("width", sa.Integer, nullable=False),
    sa.Column("height", sa.Integer, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    # The owner's focal point for crops, in thousandths of the displayed width and height.
    sa.Column("focal_x", sa.Integer, nullable=True),
    sa.Column("focal_y", sa.Integer, nullable=True),
    # Painted before the image arrives (NULL until ``imagehost placeholders`` for images
    # stored before migration 0008).
    sa.Column("blurhash", sa.String(64), nullable=True),
    sa.Column("dominant_color", sa.String(7), nullable=True),
    sa.Index("ix_images_owner_id_created_at_id", "owner_id", "created_at", "id"),
    sa.Index("ix_images_owner_id_sha256", "owner_id", "sha256"),
    # One index per orderBy of the public feed; see docs/library-indexes.md.
    sa.Index("ix_images_is_public_created_at_id", "is_public", "created_at", "id"),
    sa.Index("ix_images_is_public_sort_updated_at_id", "is_public", "sort_updated_at", "id"),
    sa.Index("ix_images_is_public_views_id", "is_public", "views", "id"),
    sa.Index("ix_images_is_public_size_id", "is_public", "size", "id"),
)

# Originals kept on disk by a delete with preserveOnDisk: their record is gone, so
# without this table ``imagehost gc`` could not tell them from a crash's leftovers.
preserved_originals = sa.Table(
    "preserved_originals",
    metadata,
    sa.Column("image_id", sa.String(36), primary_key=True),
    sa.Column("ext", sa.String(8), nullable=False),
    sa.Column("deleted_at", UTCDateTime, nullable=False),
)

# Token buckets of the rate limits (imagehost.service.throttle): in the database so that
# every daemon and ``--workers`` process spends from the same bucket.
rate_buckets = sa.Table(
    "rate_buckets",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("tokens", sa.Float, nullable=False),
    sa.Column("updated", sa.Float, nullable=False),  # seconds since the epoch
)

# Browser sessions of the web pages: the cookie holds a random token, this table its
# SHA-256, so a session ends for every daemon when its row goes.
browser_sessions = sa.Table(
    "browser_sessions",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"),
              nullable=False, index=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
)

settings = sa.Table(
    "settings",
    metadata,
    sa.Column("category", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.JSON, nullable=False),
)
