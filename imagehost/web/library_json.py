"""The seed's JSON shapes for library listings and image details."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from imagehost.db.images import ImageRecord
from imagehost.db.library import LibraryEntry, Owner
from imagehost.service.accounts import Principal
from imagehost.service.library import Page, email_visible
from imagehost.service.wire import iso

# Month names fixed in English: strftime("%b") follows the process locale.
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun",
           "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def feed_date(moment: datetime) -> str:
    """``Jan 15, 2024`` (the feed's and batch lookup's style)."""
    return f"{_MONTHS[moment.month - 1]} {moment.day}, {moment.year}"


def history_date(moment: datetime) -> str:
    """``2025-07-11 22:03:06`` (the history's style)."""
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def detail_json(image: ImageRecord, url: str) -> dict[str, Any]:
    """The flat object of ``GET /api/image/{id}/detail``; ``url`` is its display URL
    (``Delivery.display_url``: signed when the installation requires it)."""
    return {
        "id": image.id,
        "fileName": image.file_name,
        "originalName": image.original_name or None,
        "description": image.description,
        "isPublic": image.is_public,
        "createdAt": iso(image.created_at),
        "updatedAt": iso(image.updated_at),
        "views": image.views,
        "size": image.size,
        "mimeType": image.mime_type,
        "width": image.width,
        "height": image.height,
        # Uploads accept only types the renderer resizes, so every stored image does.
        "supportsResize": True,
        "url": url,
        "expiresAt": iso(image.expires_at),  # null: never
        "focalPoint": _focal_point_json(image),
        "placeholder": placeholder_json(image),
    }


def placeholder_json(image: ImageRecord) -> dict[str, str] | None:
    """``{"blurhash", "dominantColor"}``, null until the image has one."""
    if image.blurhash is None or image.dominant_color is None:
        return None
    return {"blurhash": image.blurhash, "dominantColor": image.dominant_color}


def _focal_point_json(image: ImageRecord) -> dict[str, float] | None:
    focus = image.focal_point
    return None if focus is None else {"x": focus[0] / 1000, "y": focus[1] / 1000}


def feed_item_json(entry: LibraryEntry, viewer: Principal) -> dict[str, Any]:
    """An item of the public feed and of the batch lookup."""
    owner = entry.owner
    return _item(entry.image, feed_date, None if owner is None else {
        "id": owner.id,
        "email": _email(owner, viewer),
        "displayName": owner.display_name,
    })


def history_item_json(entry: LibraryEntry, viewer: Principal) -> dict[str, Any]:
    """An item of the history (the owner also carries ``username``)."""
    owner = entry.owner
    return _item(entry.image, history_date, None if owner is None else {
        "id": owner.id,
        "email": _email(owner, viewer),
        "username": owner.username,
        "displayName": owner.display_name,
    })


def keyset_meta(size: int, total: int, next_cursor: str | None) -> dict[str, Any]:
    """``meta`` of a listing paged by ``nextCursor`` only (albums, shares, album images)."""
    return {"size": size, "total": total, "nextCursor": next_cursor}


def feed_json(page: Page, viewer: Principal) -> dict[str, Any]:
    meta = {"size": page.size, "page": page.page, "total": page.total,
            "nextCursor": page.next_cursor, "prevCursor": page.prev_cursor}
    return {"meta": meta, "data": [feed_item_json(e, viewer) for e in page.entries]}


def history_json(page: Page, viewer: Principal) -> dict[str, Any]:
    meta = {"size": page.size, "page": page.page, "total": page.total}
    return {"meta": meta, "data": [history_item_json(e, viewer) for e in page.entries]}


def _item(image: ImageRecord, date_style, owner: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "id": image.id,
        "owner": owner,
        "attributes": {
            "fileName": image.file_name,
            "originalName": image.original_name or None,
            "description": image.description,
            "isPublic": image.is_public,
            "createdAt": {"formattedDate": date_style(image.created_at),
                          "timestamp": int(image.created_at.timestamp())},
            "views": image.views,
        },
        "metadata": {
            "size": image.size,
            "mimeType": image.mime_type,
            "width": image.width,
            "height": image.height,
        },
        "placeholder": placeholder_json(image),
    }


def _email(owner: Owner, viewer: Principal) -> str | None:
    return owner.email if email_visible(viewer, owner.id) else None
