"""Identify an uploaded file from its bytes: format, size, frames; prove it decodes.

Pure Pillow; no Twisted, HTTP or SQL.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass

import filetype
from PIL import Image, UnidentifiedImageError

from imagehost.imaging import orientation as exif

# Pillow format name -> (mime type, file extension of stored originals)
KNOWN_FORMATS: dict[str, tuple[str, str]] = {
    "JPEG": ("image/jpeg", "jpg"),
    "PNG": ("image/png", "png"),
    "WEBP": ("image/webp", "webp"),
    "GIF": ("image/gif", "gif"),
    "AVIF": ("image/avif", "avif"),
}
EXTENSION_BY_MIME = {mime: ext for mime, ext in KNOWN_FORMATS.values()}



@dataclass(frozen=True)
class SourceLimits:
    """How big a source image may be: pixels per frame, frames, pixels over all frames."""

    max_pixels: int = 50_000_000
    max_frames: int = 1000
    max_animation_pixels: int = 200_000_000


@dataclass(frozen=True)
class ImageInfo:
    """What an image is, as displayed (width/height after EXIF orientation)."""

    format: str
    mime_type: str
    ext: str
    width: int
    height: int
    frames: int

    @property
    def animated(self) -> bool:
        return self.frames > 1


class NotAnImage(Exception):
    """The bytes are not an image Pillow can open; ``mime_type`` is a best guess."""

    def __init__(self, mime_type: str):
        super().__init__(mime_type)
        self.mime_type = mime_type


class CorruptImage(Exception):
    """The image's header is readable but its data is truncated or corrupt."""


class TooManyFrames(Exception):
    """An animation with more frames, or more pixels over all frames, than allowed."""

    def __init__(self, frames: int, max_frames: int):
        super().__init__(frames, max_frames)
        self.frames = frames
        self.max_frames = max_frames


class TooManyPixels(Exception):
    """The header declares more pixels than allowed (a decompression bomb or just too big)."""

    def __init__(self, pixels: int, max_pixels: int):
        super().__init__(pixels, max_pixels)
        self.pixels = pixels
        self.max_pixels = max_pixels


def sniff_mime_type(data: bytes) -> str:
    """A mime type for bytes Pillow could not open (used in the wrong-type message)."""
    kind = filetype.guess(data[:8192])
    if kind is not None:
        return kind.mime
    head = data[:4096].lstrip().lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head):
        return "image/svg+xml"
    if head.startswith((b"<!doctype html", b"<html")):
        return "text/html"
    try:
        data[:4096].decode("utf-8")
    except UnicodeDecodeError:
        return "application/octet-stream"
    return "text/plain" if data else "application/x-empty"


def probe(data: bytes, limits: SourceLimits) -> ImageInfo:
    """Identify ``data`` and decode it fully enough to prove it is intact.

    Pixel limits are checked from the header, before any decoding.
    """
    max_pixels = limits.max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, Image.DecompressionBombWarning,
            Image.DecompressionBombError, OSError, SyntaxError, ValueError) as e:
        if isinstance(e, (Image.DecompressionBombWarning, Image.DecompressionBombError)):
            raise TooManyPixels(_pixels_from_message(e), max_pixels) from e
        raise NotAnImage(sniff_mime_type(data)) from e
    with image:
        fmt = image.format or ""
        width, height = image.size
        if width * height > max_pixels:
            raise TooManyPixels(width * height, max_pixels)
        frames = getattr(image, "n_frames", 1)
        if fmt not in KNOWN_FORMATS:
            mime = image.get_format_mimetype() or sniff_mime_type(data)
            return ImageInfo(fmt, mime, fmt.lower(), width, height, frames)
        if frames > limits.max_frames:
            raise TooManyFrames(frames, limits.max_frames)
        if frames * width * height > limits.max_animation_pixels:
            raise TooManyPixels(frames * width * height, limits.max_animation_pixels)
        _prove_decodes(image)
        orientation = exif.orientation(image)
    if orientation in exif.SWAPS_AXES:
        width, height = height, width
    mime, ext = KNOWN_FORMATS[fmt]
    return ImageInfo(fmt, mime, ext, width, height, frames)


def _prove_decodes(image: Image.Image) -> None:
    """Decode every frame; JPEGs at 1/8 scale, which still reads all the data."""
    try:
        if image.format == "JPEG":
            image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
        for index in range(getattr(image, "n_frames", 1)):
            image.seek(index)
            image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise CorruptImage(str(e)) from e


def _pixels_from_message(error: Exception) -> int:
    # Pillow says "Image size (N pixels) exceeds limit of M pixels, ...".
    found = re.search(r"\((\d+) pixels\)", str(error))
    return int(found.group(1)) if found else 0
