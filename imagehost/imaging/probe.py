"""Identify an uploaded file from its bytes: format, size, frames; prove it decodes.

Pure Pillow; no Twisted, HTTP or SQL.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from imagehost.imaging import heif, placeholder
from imagehost.imaging import orientation as exif
from imagehost.imaging.placeholder import Placeholder

# Pillow format name -> (mime type, file extension of stored originals)
KNOWN_FORMATS: dict[str, tuple[str, str]] = {
    "JPEG": ("image/jpeg", "jpg"),
    "PNG": ("image/png", "png"),
    "WEBP": ("image/webp", "webp"),
    "GIF": ("image/gif", "gif"),
    "AVIF": ("image/avif", "avif"),
}
if heif.available():
    # What phones send (pillow-heif; without it HEIC uploads are an unknown type). Every
    # HEIF file (HEVC-coded .heic or another .heif) is recorded as image/heic. Served as
    # is only as the original; browsers get rendered variants.
    KNOWN_FORMATS["HEIF"] = ("image/heic", "heic")
EXTENSION_BY_MIME = {mime: ext for mime, ext in KNOWN_FORMATS.values()}
#: Formats stored and served as originals but never rendered into (no encoder in use).
SOURCE_ONLY_FORMATS = frozenset({"HEIF"})
#: The extension of the URL a browser displays an image at: its own, JPEG for HEIC.
DISPLAY_EXTENSION_BY_MIME = EXTENSION_BY_MIME | {"image/heic": "jpg"}

# At most this many decoded bytes per compressed byte: deflate's limit is 1032 (one
# 258-byte match in ~2 bits); a 12-bit LZW code yields at most 4096 pixels (GIF).
_MAX_EXPANSION = {"PNG": 1032, "GIF": 4096 * 8 // 12 + 1}
# The fewest bits a pixel of each Pillow mode can have in a PNG (L and P may be 1-bit).
_MIN_PIXEL_BITS = {"LA": 16, "RGB": 24, "RGBA": 32, "I": 16, "I;16": 16, "I;16B": 16}


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
    placeholder: Placeholder | None = None

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
    import filetype  # only for refused uploads (idle RSS, imagehost.footprint)

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
    heif.prepare(data[:16])
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
        check_plausible_size(image, len(data))
        first_frame = _prove_decodes(image)
        orientation = exif.orientation(image)
    if orientation in exif.SWAPS_AXES:
        width, height = height, width
    mime, ext = KNOWN_FORMATS[fmt]
    return ImageInfo(fmt, mime, ext, width, height, frames,
                     placeholder.compute(first_frame, orientation))


def check_plausible_size(image: Image.Image, size: int) -> None:
    """CorruptImage when ``size`` bytes cannot hold the pixels the header declares.

    Decoding allocates the whole canvas first, so a 100-byte PNG declaring 7000x7000
    would cost ~200 MB before the decoder notices the data ends; no valid file of this
    format can expand more than its codec's maximum ratio, so such a file is refused
    from the header alone. JPEGs are decoded at 1/8 scale instead (``_prove_decodes``).
    """
    ratio = _MAX_EXPANSION.get(image.format or "")
    if ratio is None:
        return
    width, height = image.size
    if image.format == "PNG":
        # Every row of every pass starts with a filter byte.
        bits = _MIN_PIXEL_BITS.get(image.mode, 1)
        decoded = height * (1 + (width * bits + 7) // 8)
    else:
        decoded = width * height
    if decoded > size * ratio:
        raise CorruptImage(f"{size} bytes cannot hold {width}x{height} pixels")


def placeholder_of(data: bytes) -> Placeholder:
    """The placeholder of a stored original, exactly as its upload computed it (for images
    stored before placeholders)."""
    heif.prepare(data[:16])
    with Image.open(io.BytesIO(data)) as image:
        orientation = exif.orientation(image)
        _draft_for_proof(image)
        image.load()
        return placeholder.compute(placeholder.sample(image), orientation)


def _draft_for_proof(image: Image.Image) -> None:
    if image.format == "JPEG":
        image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))


def _prove_decodes(image: Image.Image) -> Image.Image:
    """Decode every frame; JPEGs at 1/8 scale, which still reads all the data. Returns a
    small copy of the first frame (``placeholder.sample``), taken while it is decoded."""
    try:
        _draft_for_proof(image)
        first = None
        for index in range(getattr(image, "n_frames", 1)):
            image.seek(index)
            image.load()
            if first is None:
                first = placeholder.sample(image)
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise CorruptImage(str(e)) from e
    assert first is not None
    return first


def _pixels_from_message(error: Exception) -> int:
    # Pillow says "Image size (N pixels) exceeds limit of M pixels, ...".
    found = re.search(r"\((\d+) pixels\)", str(error))
    return int(found.group(1)) if found else 0
