"""The intermediate: a reduced, high-quality copy of a source that is expensive to decode.

PNG, WebP, AVIF and HEIC sources have no JPEG draft: every variant decodes every pixel
of the original (a 4 MP PNG: 60-150 ms before any resizing). The intermediate is made
once per image and variants that are clearly smaller than it are rendered from it:

- **Size**: the longest side is ``long_side`` (1536 by default, ``[delivery]
  intermediate_size``); it is made only for sources at least ``MIN_SOURCE_FACTOR``
  times larger (about twice the pixels), and serves variants needing at most half its
  size (``MIN_REDUCTION``), so that its own small losses shrink away in the resize.
- **Encoding**: opaque sources become a JPEG at quality 95 without chroma subsampling
  (fast to decode, and small variants get JPEG draft from it); sources with alpha a
  lossless WebP (RGBA) or PNG (grey + alpha), exact.
- **Same result**: it keeps the stored pixel layout with the source's EXIF orientation
  and ICC profile, so rendering from it goes through exactly the same steps (turning,
  focal points in display coordinates, colour conversion, metadata dropped) as
  rendering from the original. Smart crops come from the original (``serves``). Its
  EXIF ImageDescription records the source's frame count: animated outputs of an
  animated source still need the original.

bench/README.md has the measurements behind these numbers (decode times, PSNR and SSIM
of variants from the intermediate against variants from the original).
"""

from __future__ import annotations

import io
import os

from PIL import ExifTags, Image

from imagehost.imaging import memory
from imagehost.imaging import orientation as exif
from imagehost.imaging.geometry import fit_size
from imagehost.imaging.render import (
    ANIMATED_OUTPUTS,
    REDUCING_GAP,
    RenderSpec,
    opened_source,
    render_opened,
    working_mode,
)

__all__ = [
    "DEFAULT_LONG_SIDE",
    "EXPENSIVE_FORMATS",
    "NotFromIntermediate",
    "file_name",
    "make_intermediate",
    "render_from_intermediate",
    "serves",
    "wanted",
]

#: Bump when a change here changes an intermediate's pixels (its file gets a new name).
VERSION = 1
DEFAULT_LONG_SIDE = 1536
#: Source formats decoded in full for every variant (no draft): what an intermediate helps.
EXPENSIVE_FORMATS = frozenset({"PNG", "WEBP", "AVIF", "HEIF"})
#: An intermediate is made for sources whose longest side is at least this many times its own.
MIN_SOURCE_FACTOR = 1.4
#: A variant is rendered from the intermediate when it shrinks it at least this much.
MIN_REDUCTION = 2
#: JPEG draft on the intermediate keeps at least this many times the output's size, so
#: that LANCZOS still has pixels to work with (measured: at 1.0 a 640 px variant of a
#: 1536 px intermediate fell to 37 dB PSNR against the original's; at 1.5 it is >= 47).
DRAFT_GAP = 1.5
JPEG_QUALITY = 95
_FRAMES_NOTE = "imagehost intermediate of {frames} frames"
_DECODED_BYTES_PER_PIXEL = 4  # Pillow keeps RGB as RGBX


class NotFromIntermediate(Exception):
    """This variant cannot come from the intermediate (an animation): use the original."""


def file_name(long_side: int) -> str:
    """The intermediate's file name among the image's variants: ``i1-1536``."""
    return f"i{VERSION}-{long_side}"


def wanted(src_format: str, width: int, height: int, long_side: int) -> bool:
    """Whether a source of this format and display size gets an intermediate."""
    return (long_side > 0 and src_format in EXPENSIVE_FORMATS
            and max(width, height) >= long_side * MIN_SOURCE_FACTOR)


def serves(spec: RenderSpec, width: int, height: int, long_side: int) -> bool:
    """Whether the variant ``spec`` of a ``width`` x ``height`` source comes from the
    intermediate: it is clearly smaller (a fit or a crop: the scale of the source it
    needs) and no smart crop. A smart crop's window is chosen on a 256 px copy of the
    edges, which, made from the intermediate, tipped to another window for 2 of the
    benchmark's 5 sources: one URL must be the same crop whichever way it was rendered."""
    if spec.smart:
        return False
    longest = max(width, height)  # integers: 768 of 2200 must not be 768.0000001
    return (spec.width * longest * MIN_REDUCTION <= long_side * width
            and spec.height * longest * MIN_REDUCTION <= long_side * height)


def make_intermediate(source: str | os.PathLike[str] | bytes, long_side: int) -> bytes:
    """The intermediate of ``source`` (a path or bytes): its first frame in the stored
    layout, fit in ``long_side``, with its EXIF orientation and ICC profile.

    Raises RenderError when the source cannot be decoded.
    """
    with opened_source(source) as (im, _size):
        frames = getattr(im, "n_frames", 1)
        orientation = exif.orientation(im)
        icc_profile = im.info.get("icc_profile")
        with memory.heavy_render(_DECODED_BYTES_PER_PIXEL * im.size[0] * im.size[1]):
            im.load()
            small = _reduced(working_mode(im), long_side)
            im.close()  # the decoded source, before the slot goes to the next render
    metadata = Image.Exif()
    metadata[ExifTags.Base.ImageDescription] = _FRAMES_NOTE.format(frames=frames)
    if orientation != 1:
        metadata[ExifTags.Base.Orientation] = orientation
    options = {"exif": metadata.tobytes()}
    if icc_profile:
        options["icc_profile"] = icc_profile
    buffer = io.BytesIO()
    if small.mode == "RGBA":
        small.save(buffer, "WEBP", lossless=True, exact=True, quality=0, method=0, **options)
    elif small.mode == "LA":
        small.save(buffer, "PNG", compress_level=1, **options)
    else:  # RGB, L or CMYK
        small.save(buffer, "JPEG", quality=JPEG_QUALITY, subsampling=0, **options)
    return buffer.getvalue()


def _reduced(frame: Image.Image, long_side: int) -> Image.Image:
    """``frame`` fit in ``long_side``. Colour and alpha are resized apart: resizing RGBA
    premultiplies, which would blacken the colour under transparent pixels, and smart
    crops measure that colour as the original has it."""
    size = fit_size(*frame.size, long_side, long_side)
    if frame.mode not in ("RGBA", "LA"):
        return _resize(frame, size)
    bands = frame.split()
    colour = _resize(Image.merge(frame.mode[:-1], bands[:-1]) if frame.mode == "RGBA"
                     else bands[0], size)
    return Image.merge(frame.mode, (*colour.split(), _resize(bands[-1], size)))


def _resize(im: Image.Image, size: tuple[int, int]) -> Image.Image:
    return im.resize(size, Image.Resampling.LANCZOS, reducing_gap=REDUCING_GAP)


def render_from_intermediate(source: str | os.PathLike[str] | bytes, spec: RenderSpec) -> bytes:
    """``render_variant`` of ``spec`` from an intermediate (a path or bytes).

    Raises NotFromIntermediate for an animated output of an animated source,
    FileNotFoundError when the file is gone, RenderError when it cannot be decoded.
    """
    with opened_source(source) as (im, size):
        if spec.format in ANIMATED_OUTPUTS and _source_frames(im) > 1:
            raise NotFromIntermediate(spec)
        return render_opened(im, size, spec, draft_gap=DRAFT_GAP)


def _source_frames(im: Image.Image) -> int:
    note = str(im.getexif().get(ExifTags.Base.ImageDescription, ""))
    prefix, _, rest = note.partition(" of ")
    try:
        return int(rest.split()[0]) if prefix == "imagehost intermediate" else 1
    except (IndexError, ValueError):
        return 1
