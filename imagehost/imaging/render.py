"""Render image variants with Pillow: resize/crop, EXIF orientation, sRGB, animation.

Pure functions: bytes or a path in, encoded bytes out. Nothing here knows about
Twisted, HTTP or SQL; callers run :func:`render_variant` in a CPU thread pool.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from PIL import Image

from imagehost.imaging import heif, memory, smartcrop
from imagehost.imaging import orientation as exif
from imagehost.imaging.geometry import Geometry, crop_size, fit_size
from imagehost.imaging.probe import (
    KNOWN_FORMATS,
    SOURCE_ONLY_FORMATS,
    CorruptImage,
    check_plausible_size,
)

if TYPE_CHECKING:
    # Loaded on the first source with an embedded ICC profile (idle RSS, imagehost.footprint).
    from PIL import ImageCms

__all__ = [
    "OUTPUT_FORMATS",
    "THUMBNAIL_SIZE",
    "Geometry",
    "RenderError",
    "RenderSpec",
    "plan_thumbnail",
    "plan_variant",
    "render_variant",
]

# URL extension -> (Pillow format, mime type): the stored formats, plus the .jpeg alias.
OUTPUT_FORMATS: dict[str, tuple[str, str]] = {
    ext: (fmt, mime) for fmt, (mime, ext) in KNOWN_FORMATS.items()
    if fmt not in SOURCE_ONLY_FORMATS
} | {"jpeg": ("JPEG", "image/jpeg")}
_EXTENSIONS = {fmt: ext for fmt, (_mime, ext) in KNOWN_FORMATS.items()}
_MIME_TYPES = {fmt: mime for fmt, mime in OUTPUT_FORMATS.values()}
# Bump when a change to rendering changes the pixels or bytes of a variant.
RENDER_VERSION = 1
WEBP_METHOD = 2
LOSSY_FORMATS = frozenset({"JPEG", "WEBP", "AVIF"})
ANIMATED_OUTPUTS = frozenset({"GIF", "WEBP"})
# MPO (camera JPEGs with a preview) and multi-page TIFF have frames but are not animations.
_ANIMATED_SOURCES = frozenset({"GIF", "WEBP", "PNG", "AVIF"})
# An MPO file's bytes are a valid JPEG; serving it as .jpg needs no re-encode.
_SAME_FORMAT = {"MPO": "JPEG"}

DEFAULT_QUALITY = 85
THUMBNAIL_SIZE = 300
# Integer reduce() first, then LANCZOS over at least this factor (Pillow's thumbnail value).
REDUCING_GAP = 2.0
_WHITE = 255


_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError,
                  CorruptImage)


class RenderError(Exception):
    """The source image cannot be decoded."""


@dataclass(frozen=True)
class RenderSpec:
    """A normalised variant request: equal specs always mean equal output pixels."""

    width: int
    height: int
    crop: bool
    format: str
    quality: int | None
    #: Crops only: the window follows the content (``crop=smart``) ...
    smart: bool = False
    #: ... or is centred on this point, in thousandths of the displayed width and height.
    focus: tuple[int, int] | None = None

    @property
    def extension(self) -> str:
        """Canonical file extension of the output format (``jpg``, ``png``, ...)."""
        return _EXTENSIONS[self.format]

    @property
    def mime_type(self) -> str:
        """MIME type of the output."""
        return _MIME_TYPES[self.format]

    def cache_key(self) -> str:
        """Short stable name for this variant, usable in a filename: ``r1-640x480-c-q80.jpg``
        (``-cs`` for a smart crop, ``-cf250-400`` for one around a focal point).

        The ``r`` prefix is RENDER_VERSION: bumping it gives every variant a new file name
        and ETag, so cached renders of an older pipeline are never served again.
        """
        crop = "-c" if self.crop else ""
        if self.crop and self.smart:
            crop += "s"
        elif self.crop and self.focus is not None:
            crop += f"f{self.focus[0]}-{self.focus[1]}"
        quality = "" if self.quality is None else f"-q{self.quality}"
        return f"r{RENDER_VERSION}-{self.width}x{self.height}{crop}{quality}.{self.extension}"

    def is_identity(self, src_width: int, src_height: int, src_format: str) -> bool:
        """True when the stored original (display size ``src_width`` x ``src_height``) can be
        served as is: same format, same size, no crop."""
        return (
            not self.crop
            and (self.width, self.height) == (src_width, src_height)
            and self.format == _normalise_format(src_format)
        )


def _normalise_format(pil_format: str) -> str:
    upper = pil_format.upper()
    return _SAME_FORMAT.get(upper, upper)


def plan_variant(
    src_width: int,
    src_height: int,
    src_format: str,
    *,
    width: int | None,
    height: int | None,
    crop: bool,
    out_ext: str,
    quality: int | None,
    smart: bool = False,
    focus: tuple[int, int] | None = None,
) -> RenderSpec:
    """Normalise a variant request for a source of display size ``src_width`` x ``src_height``.

    No bounds: original size. One bound: that side, aspect kept. Both: fit inside.
    ``crop`` with both: cover and centre-crop to exactly w x h; with one: a square.
    Never enlarges (a crop box too large shrinks, keeping its aspect ratio). Quality is
    None for lossless outputs and for an untouched same-format original, else defaults
    to 85. ``smart`` or ``focus`` (thousandths of the displayed width and height) place a
    crop's window; they are dropped when nothing is cropped. Raises ValueError for an
    unknown ``out_ext`` or non-positive numbers.
    """
    try:
        out_format = OUTPUT_FORMATS[out_ext][0]
    except KeyError:
        raise ValueError(f"unknown output extension: {out_ext!r}") from None
    _check_positive(src_width=src_width, src_height=src_height, width=width, height=height)
    if quality is not None and not 1 <= quality <= 100:
        raise ValueError(f"quality must be within 1-100, got {quality}")
    out_w, out_h, cropped = _plan_size(src_width, src_height, width, height, crop)
    placement = {"smart": smart and cropped,
                 "focus": focus if cropped and not smart else None}
    spec = RenderSpec(out_w, out_h, cropped, out_format, None, **placement)
    if out_format in LOSSY_FORMATS and not spec.is_identity(src_width, src_height, src_format):
        spec = RenderSpec(out_w, out_h, cropped, out_format, quality or DEFAULT_QUALITY,
                          **placement)
    return spec


def plan_thumbnail(
    src_width: int, src_height: int, src_format: str, *, out_ext: str, quality: int | None = None
) -> RenderSpec:
    """The spec of the ``THUMBNAIL_SIZE`` square cropped thumbnail (never enlarged): the
    built-in default of the ``thumbnail`` preset."""
    return plan_variant(
        src_width,
        src_height,
        src_format,
        width=THUMBNAIL_SIZE,
        height=THUMBNAIL_SIZE,
        crop=True,
        out_ext=out_ext,
        quality=quality,
    )


def _check_positive(**values: int | None) -> None:
    for name, value in values.items():
        if value is not None and value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")


def _plan_size(
    src_w: int, src_h: int, width: int | None, height: int | None, crop: bool
) -> tuple[int, int, bool]:
    if not crop or (width is None and height is None):
        return *fit_size(src_w, src_h, width, height), False
    box = crop_size(src_w, src_h, width or height or 0, height or width or 0)
    # A crop whose box has the source's aspect ratio is a plain resize: same pixels.
    return *box, fit_size(src_w, src_h, *box) != box


def render_variant(source: str | os.PathLike[str] | bytes, spec: RenderSpec) -> bytes:
    """Decode ``source`` (a path or the original's bytes), render ``spec`` and encode it.

    Raises RenderError when the source cannot be decoded.
    """
    with opened_source(source) as (im, size):
        return render_opened(im, size, spec)


@contextmanager
def opened_source(
    source: str | os.PathLike[str] | bytes,
) -> Iterator[tuple[Image.Image, int]]:
    """``source`` (a path or bytes) opened with Pillow, and its size in bytes; RenderError
    when Pillow cannot open it."""
    fp = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")
    heif.prepare(fp.read(16))
    fp.seek(0)
    with fp, _open_image(fp) as im:
        yield im, len(source) if isinstance(source, bytes) else os.fstat(fp.fileno()).st_size


def render_opened(im: Image.Image, size: int, spec: RenderSpec, *,
                  draft_gap: float = 1.0) -> bytes:
    """Render ``spec`` from the opened image ``im`` of ``size`` bytes and encode it.

    ``draft_gap``: a JPEG decoder may shrink the source only while it keeps this many
    times the pixels the output needs (1: down to the output's size).
    """
    with _decoding():
        check_plausible_size(im, size)
        frames, durations, loop = render_frames(im, spec, draft_gap=draft_gap)
    # Encode before the image closes: a closed Image drops its pixels.
    return _encode(frames, durations, loop, spec)


@contextmanager
def _decoding() -> Iterator[None]:
    try:
        yield
    except _DECODE_ERRORS as exc:
        raise RenderError(f"cannot decode image: {exc}") from exc


def _open_image(fp: IO[bytes]) -> Image.Image:
    with _decoding():
        return Image.open(fp)


def render_frames(
    im: Image.Image, spec: RenderSpec, *, draft_gap: float = 1.0
) -> tuple[list[Image.Image], list[int], int | None]:
    """The frames ``spec`` asks of ``im``, upright, resized, in sRGB and the output's mode,
    with their durations and the loop count (before encoding)."""
    orientation = exif.orientation(im)
    animate = spec.format in ANIMATED_OUTPUTS and _is_animated(im)
    geometry = _stored_geometry(im, spec, orientation)
    if not animate:
        geometry = _draft(im, geometry, draft_gap)
    to_srgb = _SrgbConverter(im.info.get("icc_profile"))
    loop = im.info.get("loop")
    frames, durations = [], []
    with memory.heavy_render(_working_bytes(im, geometry)):
        for index, frame in enumerate(_source_frames(im, animate)):
            if index == 0 and spec.smart:
                geometry = _smart_geometry(frame, geometry)
            durations.append(int(frame.info.get("duration", 0)))
            out = to_srgb(exif.upright(_resample(working_mode(frame), geometry), orientation))
            if out is frame and animate:
                out = out.copy()  # the next seek() reuses the source object
            frames.append(_output_mode(out, spec.format))
        if frames[0] is not im:
            im.close()  # the decoded source's pixels, before the slot goes to the next render
    return frames, durations, loop


def _working_bytes(im: Image.Image, geometry: Geometry) -> int:
    """About what decoding and resampling ``im`` (as drafted) to ``geometry`` hold at once:
    the decoded source, LANCZOS's first (horizontal) pass and the output, at 4 bytes a
    pixel (Pillow keeps RGB as RGBX)."""
    _left, top, _right, bottom = geometry.box
    region_height = min(im.size[1], math.ceil(bottom - top))
    return 4 * (im.size[0] * im.size[1] + geometry.width * region_height
                + geometry.width * geometry.height)


def _is_animated(im: Image.Image) -> bool:
    return im.format in _ANIMATED_SOURCES and getattr(im, "n_frames", 1) > 1


def _stored_geometry(im: Image.Image, spec: RenderSpec, orientation: int) -> Geometry:
    """The display-space geometry of ``spec``, expressed in the stored pixel layout.

    Resampling the stored pixels and transposing the small result afterwards is cheaper
    than transposing the full-size source first.
    """
    stored_w, stored_h = im.size
    out_w, out_h = spec.width, spec.height
    if orientation in exif.SWAPS_AXES:
        out_w, out_h = out_h, out_w
    if spec.focus is None:
        return Geometry.centred(stored_w, stored_h, out_w, out_h, spec.crop)
    focus = (spec.focus[0] / 1000, spec.focus[1] / 1000)
    anchor = smartcrop.stored_anchor(focus, orientation)
    return Geometry.anchored(stored_w, stored_h, out_w, out_h, spec.crop, anchor)


def _smart_geometry(frame: Image.Image, geometry: Geometry) -> Geometry:
    """Slide the crop window of ``geometry`` (in ``frame``'s pixels) onto the content."""
    left, top, right, bottom = geometry.box
    anchor = smartcrop.content_anchor(frame, (right - left, bottom - top))
    return Geometry.anchored(*frame.size, geometry.width, geometry.height, True, anchor)


def _draft(im: Image.Image, geometry: Geometry, gap: float = 1.0) -> Geometry:
    """Let the JPEG decoder shrink by 1/2, 1/4 or 1/8 while the region still covers the output.

    Asks for the whole source's needed size, so both axes stay large enough even for
    crops and non-square outputs (thumbnail()'s draft box is only right for plain fits).
    """
    original_w = im.size[0]
    needed_w, needed_h = geometry.draft_size(*im.size)
    drafted = im.draft(None, (math.ceil(needed_w * gap), math.ceil(needed_h * gap)))
    if drafted is None:
        return geometry
    return geometry.reduced(original_w / drafted[1][2])


def _source_frames(im: Image.Image, animate: bool) -> Iterator[Image.Image]:
    for index in range(im.n_frames if animate else 1):
        if animate:
            im.seek(index)
        im.load()  # decode errors surface here; animated WebP sets "duration" on load
        yield im


def working_mode(im: Image.Image) -> Image.Image:
    """Convert to a mode that resamples correctly: L, LA, RGB, RGBA or CMYK."""
    mode = im.mode
    if mode == "P" or mode == "PA" or "transparency" in im.info:
        if not im.has_transparency_data:
            return im.convert("RGB")
        return im.convert("LA" if mode == "L" else "RGBA")
    if mode in ("L", "LA", "RGB", "RGBA", "CMYK"):
        return im
    if mode.startswith("I;16"):
        im, mode = im.convert("I"), "I"
    if mode == "I":
        # 16-bit samples: plain convert("L") would clip everything above 255.
        return im.point(lambda v: v * (1 / 257)).convert("L")
    if mode in ("1", "F"):
        return im.convert("L")
    return im.convert({"La": "LA", "RGBa": "RGBA"}.get(mode, "RGB"))


def _resample(im: Image.Image, geometry: Geometry) -> Image.Image:
    if geometry.is_noop(*im.size):
        return im
    return im.resize(
        geometry.size, Image.Resampling.LANCZOS, box=geometry.box, reducing_gap=REDUCING_GAP
    )


class _SrgbConverter:
    """Converts frames to sRGB using the source's embedded ICC profile, if any."""

    def __init__(self, icc_profile: bytes | None) -> None:
        self._profile = _foreign_profile(icc_profile)
        self._transforms: dict[str, ImageCms.ImageCmsTransform | None] = {}

    def __call__(self, im: Image.Image) -> Image.Image:
        if im.mode in ("L", "LA"):
            # Grey profiles are close to sRGB's tone curve; keep the image single-channel.
            return im
        transform = self._transform(im.mode)
        if transform is not None:
            from PIL import ImageCms

            return ImageCms.applyTransform(im, transform)
        return im if im.mode in ("RGB", "RGBA") else im.convert("RGB")

    def _transform(self, mode: str) -> ImageCms.ImageCmsTransform | None:
        if self._profile is None:
            return None
        from PIL import ImageCms

        if mode not in self._transforms:
            out_mode = "RGBA" if mode == "RGBA" else "RGB"
            try:
                self._transforms[mode] = ImageCms.buildTransform(
                    self._profile, ImageCms.createProfile("sRGB"), mode, out_mode
                )
            except ImageCms.PyCMSError:
                self._transforms[mode] = None  # profile does not match the pixels: ignore it
        return self._transforms[mode]


def _foreign_profile(icc_profile: bytes | None) -> ImageCms.ImageCmsProfile | None:
    """The embedded profile, or None when there is none, it is sRGB or it is unreadable."""
    if not icc_profile:
        return None
    from PIL import ImageCms

    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
        description = ImageCms.getProfileDescription(profile)
    except (ImageCms.PyCMSError, OSError, TypeError):
        return None
    return None if "sRGB" in description else profile


def _output_mode(im: Image.Image, out_format: str) -> Image.Image:
    """Fit the frame to what the output format stores, and drop all source metadata."""
    if out_format == "JPEG" and im.mode in ("RGBA", "LA"):
        im = _flatten(im)
    elif out_format == "GIF" and im.mode != "L":
        im = _to_palette(im)
    transparency = im.info.get("transparency") if out_format == "GIF" else None
    im.info = {} if transparency is None else {"transparency": transparency}
    return im


def _flatten(im: Image.Image) -> Image.Image:
    """Composite on white (JPEG has no alpha)."""
    base_mode = im.mode[:-1]
    background = Image.new(base_mode, im.size, (_WHITE,) * len(base_mode))
    background.paste(im, mask=im.getchannel("A"))
    return background


def _to_palette(im: Image.Image) -> Image.Image:
    """Quantize to 256 colours; alpha becomes one fully transparent index (GIF has 1-bit alpha)."""
    if im.mode not in ("RGBA", "LA") or im.getchannel("A").getextrema()[0] >= 128:
        return im.convert("RGB").quantize(256)
    alpha = im.getchannel("A")
    palette_im = im.convert("RGB").quantize(255)
    palette = palette_im.getpalette() or []
    palette_im.putpalette(palette + [0] * (768 - len(palette)))
    transparent_index = 255
    palette_im.paste(transparent_index, mask=alpha.point([255] * 128 + [0] * 128))
    palette_im.info["transparency"] = transparent_index
    return palette_im


def _encode(
    frames: list[Image.Image], durations: list[int], loop: int | None, spec: RenderSpec
) -> bytes:
    options = encoder_options(spec)
    if len(frames) > 1:
        options.update(save_all=True, append_images=frames[1:], duration=durations)
        options.update(_animation_options(frames, loop, spec.format))
    with encode_buffer(spec.format) as buffer:
        frames[0].save(buffer, spec.format, **options)
        buffer.seek(0)
        return buffer.read()


def encode_buffer(out_format: str) -> IO[bytes]:
    """Where the encoder writes: an in-memory file with a descriptor where possible.

    Given a file descriptor, Pillow's JPEG encoder writes to it with the GIL released;
    into a BytesIO it holds the GIL for the whole encode. Measured on a 512 px JPEG
    (bench/encode_gil.py), two threads encoded 1.5x what one did into a memfd and
    0.8-0.95x into a BytesIO; PNG and WebP scaled with threads either way. Every format
    but WebP (which returns its bytes whole) goes through the same file path.
    """
    if out_format != "WEBP" and hasattr(os, "memfd_create"):
        return open(os.memfd_create("imagehost-variant", os.MFD_CLOEXEC), "w+b")  # noqa: SIM115
    return io.BytesIO()


def encoder_options(spec: RenderSpec) -> dict[str, Any]:
    """The keyword arguments ``Image.save`` gets for ``spec``'s format and quality."""
    # Identity specs carry no quality; re-encoding one anyway uses the default.
    quality = DEFAULT_QUALITY if spec.quality is None else spec.quality
    if spec.format == "JPEG":
        return {"quality": quality, "optimize": True}
    if spec.format == "WEBP":
        # method 2 encodes a 512 px photo in half the time of Pillow's default 4 for
        # ~3.5 % more bytes (bench/README.md): the right trade for on-the-fly variants.
        return {"quality": quality, "method": WEBP_METHOD}
    if spec.format == "AVIF":
        # Pillow's default speed 6 is about 20x slower for a barely smaller file.
        return {"quality": quality, "speed": 8}
    if spec.format == "PNG":
        return {"optimize": False, "compress_level": 6}
    return {}


def _animation_options(
    frames: list[Image.Image], loop: int | None, out_format: str
) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if out_format == "GIF":
        if loop is not None:
            options["loop"] = loop
        if any("transparency" in frame.info for frame in frames):
            # Frames are full canvases: clear before each so transparency shows the page.
            options["disposal"] = 2
    else:
        # WebP counts plays (0 = forever); a GIF without a loop extension plays once.
        options["loop"] = 1 if loop is None else loop
    return options
