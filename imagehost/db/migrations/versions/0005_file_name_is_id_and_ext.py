"""fileName is "{id}.{ext}", as in the seed; the client's file name moves to original_name.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# The extensions of stored originals when this migration was written (imaging.probe).
_EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp",
               "image/gif": "gif", "image/avif": "avif"}

_images = sa.table("images", sa.column("id", sa.String), sa.column("file_name", sa.String),
                   sa.column("original_name", sa.String), sa.column("mime_type", sa.String))


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("original_name", sa.String(255), nullable=False,
                                   server_default=""))
    extension = sa.case(*((_images.c.mime_type == mime, ext)
                          for mime, ext in _EXTENSIONS.items()), else_="bin")
    id_and_ext = _images.c.id + "." + extension
    # Uploads without a file name used to get "{id}.{ext}" as their name: they had none.
    # Both SET expressions read the row as it was before this UPDATE.
    op.execute(_images.update().values(
        original_name=sa.case((_images.c.file_name == id_and_ext, ""),
                              else_=_images.c.file_name),
        file_name=id_and_ext))


def downgrade() -> None:
    op.execute(_images.update().where(_images.c.original_name != "")
               .values(file_name=_images.c.original_name))
    with op.batch_alter_table("images") as batch:
        batch.drop_column("original_name")
