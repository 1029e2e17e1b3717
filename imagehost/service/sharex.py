"""ShareX custom uploaders (``.sxcu``) for the external upload endpoint."""

from __future__ import annotations

from typing import Any


def sharex_uploader(public_url: str, key: str) -> dict[str, Any]:
    """A ShareX custom uploader (.sxcu) for /api/external/upload with ``key``."""
    base = public_url.rstrip("/")
    return {
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
