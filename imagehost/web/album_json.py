"""The JSON shapes of albums (the CLI's ``--json`` shows the same)."""

from __future__ import annotations

from typing import Any

from imagehost.db.albums import Album
from imagehost.service.accounts import Principal
from imagehost.service.albums import AlbumPage, AlbumView
from imagehost.service.wire import iso
from imagehost.web.library_json import feed_item_json, keyset_meta


def album_json(album: Album) -> dict[str, Any]:
    """An album without its images (``GET /api/albums`` items, ``POST /api/albums``)."""
    return {"id": album.id, "title": album.title, "description": album.description,
            "isPublic": album.is_public, "coverImageId": album.cover_image_id,
            "imageCount": album.image_count, "createdAt": iso(album.created_at),
            "updatedAt": iso(album.updated_at)}


def album_view_json(view: AlbumView, viewer: Principal) -> dict[str, Any]:
    """``GET /api/album/{id}``: the album with (a page of) the images the viewer may see,
    in order; ``imageCount`` counts them all."""
    cover = view.cover
    return {**album_json(view.album), "coverImageId": cover.image.id if cover else None,
            "imageCount": view.total,
            "meta": keyset_meta(view.size, view.total, view.next_cursor),
            "images": [feed_item_json(e, viewer) for e in view.entries]}


def album_page_json(page: AlbumPage) -> dict[str, Any]:
    return {"meta": keyset_meta(page.size, page.total, page.next_cursor),
            "data": [album_json(a) for a in page.albums]}


def album_order_json(image_ids: list[str]) -> dict[str, Any]:
    """What the image list routes answer: the album's images, in order."""
    return {"data": {"imageIds": image_ids}}
