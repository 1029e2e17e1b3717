"""EXIF orientation: how the stored pixels turn into the image as displayed."""

from __future__ import annotations

from PIL import ExifTags, Image

# Transpose turning the stored pixels into the displayed image, by EXIF orientation.
TRANSPOSE_BY_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
#: Orientations whose displayed width is the stored height.
SWAPS_AXES = frozenset({5, 6, 7, 8})


def orientation(im: Image.Image) -> int:
    """The image's EXIF orientation, 1 (as stored) when absent or not a valid one."""
    value = im.getexif().get(ExifTags.Base.Orientation, 1)
    return value if value in TRANSPOSE_BY_ORIENTATION else 1


def upright(im: Image.Image, value: int) -> Image.Image:
    """``im`` turned as orientation ``value`` says (itself for 1)."""
    if value not in TRANSPOSE_BY_ORIENTATION:
        return im
    return im.transpose(TRANSPOSE_BY_ORIENTATION[value])
