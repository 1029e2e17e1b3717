"""The JSON shape of share links (the CLI's ``--json`` shows the same)."""

from __future__ import annotations

from typing import Any

from imagehost.db.shares import Share
from imagehost.service.wire import iso


def share_json(share: Share) -> dict[str, Any]:
    """A share as ``POST /api/shares`` answers and ``GET /api/shares`` lists it (never
    its password, only whether it has one)."""
    variant = share.variant
    return {
        "code": share.code, "url": f"/s/{share.code}",
        "imageId": share.image_id, "albumId": share.album_id,
        "expiresAt": iso(share.expires_at), "hasPassword": share.password_hash is not None,
        "variant": None if variant is None else {
            "width": variant["w"], "height": variant["h"], "crop": variant["crop"],
            "format": variant["format"]},
        "views": share.views, "createdAt": iso(share.created_at),
    }
