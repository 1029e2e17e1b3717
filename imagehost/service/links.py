"""How an image is linked and embedded: variant URLs, their sizes, share snippets.

Pure functions of an image record (no I/O), for the web pages: ``srcset`` widths,
thumbnails with their real size, the OpenGraph image, and the direct link, Markdown,
HTML and BBCode at a chosen size and format.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from imagehost.db.images import ImageRecord
from imagehost.imaging.geometry import crop_size, fit_size
from imagehost.imaging.probe import EXTENSION_BY_MIME

THUMBNAIL = 300  # the _thumbnail variant: 300x300, cropped, never enlarged
SHARE_SIZES = {"original": None, "1280": 1280, "640": 640, "thumbnail": THUMBNAIL}
SHARE_FORMATS = ("original", "jpg", "png", "webp")
SRCSET_WIDTHS = (320, 640, 960, 1280, 1920)
OG_IMAGE_WIDTH = 1200


@dataclass(frozen=True)
class Variant:
    """A URL path of one variant of an image and the size it is served at."""

    path: str
    width: int
    height: int


def extension(image: ImageRecord) -> str:
    return EXTENSION_BY_MIME[image.mime_type]


def original(image: ImageRecord) -> Variant:
    return Variant(f"/image/{image.id}.{extension(image)}", image.width, image.height)


def thumbnail(image: ImageRecord, ext: str | None = None) -> Variant:
    """The ``_thumbnail`` variant (what the grids show)."""
    width, height = crop_size(image.width, image.height, THUMBNAIL, THUMBNAIL)
    return Variant(f"/image/{image.id}_thumbnail.{ext or extension(image)}", width, height)


def resized(image: ImageRecord, width: int, ext: str | None = None) -> Variant:
    """The image fitted to ``width`` (never enlarged: the original size at most)."""
    ext = ext or extension(image)
    if width >= image.width and ext == extension(image):
        return original(image)
    out_w, out_h = fit_size(image.width, image.height, width, None)
    query = f"?w={width}" if width < image.width else ""
    return Variant(f"/image/{image.id}.{ext}{query}", out_w, out_h)


def srcset(image: ImageRecord) -> list[Variant]:
    """Widths for a responsive preview: those below the original's, then the original."""
    smaller = [resized(image, w) for w in SRCSET_WIDTHS if w < image.width]
    return [*smaller, original(image)]


def og_image(image: ImageRecord) -> Variant:
    """The picture chat apps unfurl: JPEG at most ``OG_IMAGE_WIDTH`` wide."""
    return resized(image, OG_IMAGE_WIDTH, "jpg")


def share_variant(image: ImageRecord, size: str, fmt: str) -> Variant:
    """The variant for a size in ``SHARE_SIZES`` and a format in ``SHARE_FORMATS``."""
    ext = None if fmt == "original" else fmt
    if size == "thumbnail":
        return thumbnail(image, ext)
    width = SHARE_SIZES.get(size)
    return resized(image, width or image.width, ext)


def alt_text(image: ImageRecord) -> str:
    """What a screen reader says: the description, else the original file name."""
    return image.description or image.original_name or "Image"


def share_snippets(base_url: str, image: ImageRecord, size: str, fmt: str) -> dict[str, str]:
    """Direct link, Markdown, HTML ``<img>`` and BBCode for one variant."""
    variant = share_variant(image, size, fmt)
    url = base_url.rstrip("/") + variant.path
    alt = alt_text(image)
    markdown_alt = alt.replace("[", "\\[").replace("]", "\\]")
    return {
        "direct": url,
        "markdown": f"![{markdown_alt}]({url})",
        "html": (f'<img src="{html.escape(url)}" alt="{html.escape(alt)}" '
                 f'width="{variant.width}" height="{variant.height}">'),
        "bbcode": f"[img]{url}[/img]",
    }


def all_share_snippets(base_url: str, image: ImageRecord) -> dict[str, dict[str, str]]:
    """``share_snippets`` for every size and format, keyed ``"size/format"``."""
    return {f"{size}/{fmt}": share_snippets(base_url, image, size, fmt)
            for size in SHARE_SIZES for fmt in SHARE_FORMATS}
