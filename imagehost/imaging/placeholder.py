"""Tiny placeholders painted before an image arrives: a BlurHash and a dominant colour.

Pure Pillow plus the BlurHash reference encoder (``blurhash-python``, by BlurHash's
authors). Computed from a small copy of the first frame, upright as displayed.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from imagehost.imaging import orientation as exif

#: Longest side of the copy the placeholder is computed from.
SAMPLE_SIZE = 64
#: BlurHash components along the longer side (3 along the shorter): a soft gradient.
COMPONENTS = 4
_WHITE = (255, 255, 255)
_LONGEST_HASH = 2 + 4 + (9 * 9 - 1) * 2  # 9×9 components


@dataclass(frozen=True)
class Placeholder:
    """A BlurHash string and a ``#rrggbb`` dominant colour."""

    blurhash: str
    dominant_color: str


def sample(frame: Image.Image) -> Image.Image:
    """A small RGB copy of a decoded frame (transparency flattened on white), cheap to
    keep while the rest of the image is checked."""
    if frame.mode == "P" or "transparency" in frame.info:
        frame = frame.convert("RGBA")
    elif frame.mode not in ("RGB", "RGBA", "L", "LA"):
        frame = frame.convert("RGB")
    factor = max(1, max(frame.size) // SAMPLE_SIZE)
    small = frame.reduce(factor) if factor > 1 else frame.copy()
    if small.mode in ("RGBA", "LA"):
        background = Image.new("RGB", small.size, _WHITE)
        background.paste(small.convert("RGBA"), mask=small.getchannel("A"))
        small = background
    return small.convert("RGB")


def compute(small: Image.Image, orientation: int = 1) -> Placeholder:
    """The placeholder of a ``sample`` (stored pixels; ``orientation`` turns them)."""
    small = exif.upright(small, orientation)
    wide = small.width >= small.height
    x_components, y_components = (COMPONENTS, 3) if wide else (3, COMPONENTS)
    return Placeholder(_blurhash(small, x_components, y_components), _dominant_color(small))


def _blurhash(small: Image.Image, x_components: int, y_components: int) -> str:
    """The BlurHash of an RGB image, from the C encoder ``blurhash.encode`` wraps.

    ``blurhash.encode`` reads the pixels with ``Image.getdata``, which Pillow deprecates
    (removed in Pillow 14); ``tobytes`` gives the encoder the same RGB rows at once.
    """
    # Imported on the first upload: a daemon that only serves never loads it (idle RSS,
    # imagehost.footprint).
    from blurhash import _functions as _encoder

    ffi = _encoder.ffi
    destination = ffi.new("char[]", _LONGEST_HASH + 1)
    hashed = _encoder.lib.create_hash_from_pixels(
        x_components, y_components, small.width, small.height,
        ffi.from_buffer("uint8_t[]", small.tobytes()), small.width * 3, destination)
    if hashed == ffi.NULL:
        raise ValueError(f"a BlurHash has 1 to 9 components, not {x_components}×{y_components}")
    return ffi.string(hashed).decode("ascii")


def _dominant_color(small: Image.Image) -> str:
    """The most frequent of 8 adaptive palette colours."""
    quantized = small.quantize(8)
    count, index = max(quantized.getcolors())
    palette = quantized.getpalette() or [0, 0, 0]
    red, green, blue = palette[index * 3:index * 3 + 3]
    return f"#{red:02x}{green:02x}{blue:02x}"

