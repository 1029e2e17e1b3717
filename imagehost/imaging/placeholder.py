"""Tiny placeholders painted before an image arrives: a BlurHash and a dominant colour.

Pure Pillow plus the BlurHash reference encoder (``blurhash-python``, by BlurHash's
authors). Computed from a small copy of the first frame, upright as displayed.
"""

from __future__ import annotations

from dataclasses import dataclass

import blurhash
from PIL import Image

from imagehost.imaging import orientation as exif

#: Longest side of the copy the placeholder is computed from.
SAMPLE_SIZE = 64
#: BlurHash components along the longer side (3 along the shorter): a soft gradient.
COMPONENTS = 4
_WHITE = (255, 255, 255)


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
    color = _dominant_color(small)
    # The encoder closes the image it is given.
    hashed = blurhash.encode(small.copy(), x_components=x_components, y_components=y_components)
    return Placeholder(hashed, color)


def _dominant_color(small: Image.Image) -> str:
    """The most frequent of 8 adaptive palette colours."""
    quantized = small.quantize(8)
    count, index = max(quantized.getcolors())
    palette = quantized.getpalette() or [0, 0, 0]
    red, green, blue = palette[index * 3:index * 3 + 3]
    return f"#{red:02x}{green:02x}{blue:02x}"

