"""Where a crop window should sit: on the image's content (``crop=smart``) or a focal point.

Pure Pillow. A cover crop spans the whole source along one axis, so the window only
slides along the other: the best position is the one holding the most edge energy
(detail: outlines, texture, text), measured on a small greyscale copy. A flat image has
no preferred position and keeps the centre.
"""

from __future__ import annotations

import array

from PIL import Image, ImageFilter

from imagehost.imaging import orientation as exif

#: Longest side of the copy the energy is measured on: enough to find a subject, cheap.
ENERGY_SIZE = 256
_CENTRE = (0.5, 0.5)


def content_anchor(im: Image.Image, region: tuple[float, float]) -> tuple[float, float]:
    """The centre, as fractions of ``im``'s size, of the ``region``-sized window (width,
    height in ``im``'s pixels) that holds the most edge energy."""
    width, height = im.size
    region_w, region_h = region
    slide_x = width - region_w > 0.5
    slide_y = height - region_h > 0.5
    if not slide_x and not slide_y:
        return _CENTRE
    energy = _edge_energy(im).convert("F")  # floats: faint detail must not round to 0
    if slide_x:
        profile = _values(energy.resize((energy.width, 1), Image.Resampling.BOX))
        return _best_centre(profile, region_w / width), 0.5
    profile = _values(energy.resize((1, energy.height), Image.Resampling.BOX))
    return 0.5, _best_centre(profile, region_h / height)


def _values(im: Image.Image) -> list[float]:
    """The pixels of a mode F image, row by row."""
    return array.array("f", im.tobytes()).tolist()


def _edge_energy(im: Image.Image) -> Image.Image:
    """Edge magnitude of a small greyscale copy, with the outermost pixels cleared (the
    filter sees a hard edge at the image's border that is not content)."""
    grey = im.convert("L")
    grey.thumbnail((ENERGY_SIZE, ENERGY_SIZE), Image.Resampling.BOX)
    edges = grey.filter(ImageFilter.FIND_EDGES)
    inner = Image.new("L", edges.size, 0)
    if edges.width > 2 and edges.height > 2:
        inner.paste(edges.crop((1, 1, edges.width - 1, edges.height - 1)), (1, 1))
    return inner


def _best_centre(profile: list[float], fraction: float) -> float:
    """Centre (0..1) of the window covering ``fraction`` of ``profile`` with the largest
    sum; among equal sums the one nearest the middle."""
    cells = len(profile)
    window = max(1, min(cells, round(fraction * cells)))
    prefix = [0.0]
    for value in profile:
        prefix.append(prefix[-1] + value)
    middle = (cells - window) / 2
    best_start, best_sum = None, -1.0
    for start in range(cells - window + 1):
        total = prefix[start + window] - prefix[start]
        better = total > best_sum + 1e-9
        tie = abs(total - best_sum) <= 1e-9
        if better or (tie and best_start is not None
                      and abs(start - middle) < abs(best_start - middle)):
            best_start, best_sum = start, total
    if best_sum <= 0:
        return 0.5
    return (best_start + window / 2) / cells


def stored_anchor(display_anchor: tuple[float, float], orientation: int) -> tuple[float, float]:
    """A point given as fractions of the displayed image, as fractions of the stored pixels
    (before the EXIF orientation turns them)."""
    u, v = display_anchor
    return {
        2: (1 - u, v),
        3: (1 - u, 1 - v),
        4: (u, 1 - v),
        5: (v, u),
        6: (v, 1 - u),
        7: (1 - v, 1 - u),
        8: (1 - v, u),
    }.get(orientation if orientation in exif.TRANSPOSE_BY_ORIENTATION else 1, (u, v))
