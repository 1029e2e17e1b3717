"""How an image is linked and embedded: variant URLs, their sizes, share snippets.

Pure functions of an image record (no I/O), for the web pages: ``srcset`` widths,
thumbnails with their real size, the OpenGraph image, and the direct link, Markdown,
HTML and BBCode at a chosen size and format, each URL signed when the installation
requires signatures (``[delivery] require_signature``).
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from imagehost.db.images import ImageRecord
from imagehost.imaging.geometry import fit_size
from imagehost.imaging.probe import DISPLAY_EXTENSION_BY_MIME
from imagehost.imaging.render import plan_variant
from imagehost.service.transforms import THUMBNAIL_PRESET, ImageUrls, Presets

SHARE_SIZES = {"original": None, "1280": 1280, "640": 640, "thumbnail": None}
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
    """The extension a browser displays the image at (JPEG for HEIC)."""
    return DISPLAY_EXTENSION_BY_MIME[image.mime_type]


def alt_text(image: ImageRecord) -> str:
    """What a screen reader says: the description, else the original file name."""
    return image.description or image.original_name or "Image"


class ImageLinks:
    """The URLs of an installation's variants (signed when it requires signatures) with
    the sizes they are served at; the web pages' ``share`` object."""

    SHARE_SIZES = SHARE_SIZES
    SHARE_FORMATS = SHARE_FORMATS
    alt_text = staticmethod(alt_text)

    def __init__(self, urls: ImageUrls, presets: Presets):
        self._urls = urls
        self._thumbnail = presets[THUMBNAIL_PRESET].transform
        self._max_dimension = 1 << 30  # sizes here come from presets and fixed widths

    def original(self, image: ImageRecord) -> Variant:
        return Variant(self._urls.path(image.id, extension(image)), image.width, image.height)

    def thumbnail(self, image: ImageRecord, ext: str | None = None) -> Variant:
        """The ``_thumbnail`` variant (what the grids show), at the thumbnail preset's size."""
        ext = ext or extension(image)
        t = self._thumbnail
        width, height = t.scaled_size(self._max_dimension)
        spec = plan_variant(image.width, image.height, "PNG", width=width, height=height,
                            crop=t.crop, out_ext="png", quality=None)
        return Variant(self._urls.path(image.id, ext, thumbnail=True), spec.width, spec.height)

    def resized(self, image: ImageRecord, width: int, ext: str | None = None) -> Variant:
        """The image fitted to ``width`` (never enlarged: the original size at most)."""
        ext = ext or extension(image)
        if width >= image.width and ext == extension(image):
            return self.original(image)
        out_w, out_h = fit_size(image.width, image.height, width, None)
        parameters = {"w": str(width)} if width < image.width else {}
        return Variant(self._urls.path(image.id, ext, parameters), out_w, out_h)

    def srcset(self, image: ImageRecord) -> list[Variant]:
        """Widths for a responsive preview: those below the original's, then the original."""
        smaller = [self.resized(image, w) for w in SRCSET_WIDTHS if w < image.width]
        return [*smaller, self.original(image)]

    def og_image(self, image: ImageRecord) -> Variant:
        """The picture chat apps unfurl: JPEG at most ``OG_IMAGE_WIDTH`` wide."""
        return self.resized(image, OG_IMAGE_WIDTH, "jpg")

    def share_variant(self, image: ImageRecord, size: str, fmt: str) -> Variant:
        """The variant for a size in ``SHARE_SIZES`` and a format in ``SHARE_FORMATS``."""
        ext = None if fmt == "original" else fmt
        if size == "thumbnail":
            return self.thumbnail(image, ext)
        width = SHARE_SIZES.get(size)
        return self.resized(image, width or image.width, ext)

    def share_snippets(self, base_url: str, image: ImageRecord, size: str,
                       fmt: str) -> dict[str, str]:
        """Direct link, Markdown, HTML ``<img>`` and BBCode for one variant."""
        variant = self.share_variant(image, size, fmt)
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

    def all_share_snippets(self, base_url: str, image: ImageRecord) -> dict[str, dict[str, str]]:
        """``share_snippets`` for every size and format, keyed ``"size/format"``."""
        return {f"{size}/{fmt}": self.share_snippets(base_url, image, size, fmt)
                for size in SHARE_SIZES for fmt in SHARE_FORMATS}
