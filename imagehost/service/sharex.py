"""ShareX custom uploaders (``.sxcu``) for the external upload endpoint."""

from __future__ import annotations

from typing import Any

#: Image lifetimes the web page offers for a ShareX profile (seconds, label).
SHAREX_EXPIRIES = ((3600, "1 hour"), (86400, "1 day"), (7 * 86400, "1 week"),
                   (30 * 86400, "30 days"))


def sharex_uploader(public_url: str, key: str, *, expires_in: int | None = None,
                    album_id: str | None = None) -> dict[str, Any]:
    """A ShareX custom uploader (.sxcu) for /api/external/upload with ``key``; its
    uploads expire after ``expires_in`` seconds and go into ``album_id`` when given."""
    base = public_url.rstrip("/")
    arguments = {}
    if expires_in is not None:
        arguments["expiresIn"] = str(expires_in)
    if album_id:
        arguments["albumId"] = album_id
    uploader = {
        "Version": "15.0.0",
        "Name": f"imagehost ({base})",
        "DestinationType": "ImageUploader",
        "RequestMethod": "POST",
        "RequestURL": f"{base}/api/external/upload",
        "Headers": {"Authorization": f"Bearer {key}"},
        "Body": "MultipartFormData",
        "FileFormName": "image",
        "URL": f"{base}$json:url$",
        "ThumbnailURL": f"{base}$json:thumbnailUrl$",
        "ErrorMessage": "$json:error.message$",
    }
    if arguments:
        uploader["Arguments"] = arguments
    return uploader
