"""Output sizes and source regions for image variants: integer maths, no Pillow."""

from __future__ import annotations

import math
from dataclasses import dataclass

Box = tuple[float, float, float, float]


def _scaled(length: int, num: int, den: int) -> int:
    """``length * num / den`` rounded half up, at least 1 (exact integer arithmetic)."""
    return max(1, (2 * length * num + den) // (2 * den))


def fit_size(
    src_width: int, src_height: int, width: int | None, height: int | None
) -> tuple[int, int]:
    """Size of the source scaled down to fit inside ``width`` x ``height`` (either may be None).

    Never enlarges: a bound larger than the source leaves that side alone.
    """
    width = src_width if width is None else min(width, src_width)
    height = src_height if height is None else min(height, src_height)
    # Compare width/src_width with height/src_height without floats.
    if width * src_height <= height * src_width:
        return width, min(height, _scaled(src_height, width, src_width))
    return min(width, _scaled(src_width, height, src_height)), height


def crop_size(src_width: int, src_height: int, width: int, height: int) -> tuple[int, int]:
    """The crop box ``width`` x ``height``, shrunk (same aspect) until it fits in the source."""
    if width <= src_width and height <= src_height:
        return width, height
    if src_width * height <= src_height * width:
        return src_width, min(src_height, _scaled(height, src_width, width))
    return min(src_width, _scaled(width, src_height, height)), src_height


@dataclass(frozen=True)
class Geometry:
    """A centred region (``box``) of a source image and the size it is resampled to."""

    width: int
    height: int
    box: Box

    @classmethod
    def centred(
        cls, src_width: int, src_height: int, width: int, height: int, crop: bool
    ) -> Geometry:
        """The whole source resized to ``width`` x ``height``, or with ``crop``: the largest
        centred region with the output's aspect ratio (cover, then centre-crop)."""
        return cls.anchored(src_width, src_height, width, height, crop, (0.5, 0.5))

    @classmethod
    def anchored(
        cls, src_width: int, src_height: int, width: int, height: int, crop: bool,
        anchor: tuple[float, float],
    ) -> Geometry:
        """Like :meth:`centred`, but the crop region is centred on ``anchor`` (fractions
        of the source's width and height), moved inward as far as needed to stay inside."""
        if not crop:
            return cls(width, height, (0.0, 0.0, float(src_width), float(src_height)))
        scale = max(width / src_width, height / src_height)
        region_w, region_h = width / scale, height / scale
        if anchor == (0.5, 0.5):  # the exact centre, as every variant before anchors had
            left, top = (src_width - region_w) / 2, (src_height - region_h) / 2
        else:
            left = _clamp(anchor[0] * src_width - region_w / 2, src_width - region_w)
            top = _clamp(anchor[1] * src_height - region_h / 2, src_height - region_h)
        return cls(width, height, (left, top, left + region_w, top + region_h))

    @property
    def size(self) -> tuple[int, int]:
        """Output size as a ``(width, height)`` tuple."""
        return self.width, self.height

    def source_scale(self) -> tuple[float, float]:
        """How much the source shrinks on each axis (output / region)."""
        left, top, right, bottom = self.box
        return self.width / (right - left), self.height / (bottom - top)

    def draft_size(self, src_width: int, src_height: int) -> tuple[int, int]:
        """Size the *whole* source needs to keep so the region still covers the output.

        This is what a decoder-side reduction (JPEG ``draft``) may shrink to at most.
        """
        scale_x, scale_y = self.source_scale()
        # The epsilon keeps float noise (500.0000001) from costing a whole draft step.
        return (
            max(1, math.ceil(src_width * scale_x - 1e-6)),
            max(1, math.ceil(src_height * scale_y - 1e-6)),
        )

    def transposed(self) -> Geometry:
        """The same geometry with x and y swapped (the box mirrored on the diagonal)."""
        left, top, right, bottom = self.box
        return Geometry(self.height, self.width, (top, left, bottom, right))

    def reduced(self, factor: float) -> Geometry:
        """The geometry for a source already shrunk by ``factor`` (e.g. by the decoder)."""
        left, top, right, bottom = self.box
        return Geometry(
            self.width, self.height, (left / factor, top / factor, right / factor, bottom / factor)
        )

    def is_noop(self, src_width: int, src_height: int) -> bool:
        """True when applying the geometry to a source of this size changes nothing."""
        return self.size == (src_width, src_height) and self.box == (0, 0, src_width, src_height)


def _clamp(start: float, highest: float) -> float:
    """``start`` kept within 0..``highest`` (where a region of the source may begin)."""
    return min(max(start, 0.0), max(highest, 0.0))
