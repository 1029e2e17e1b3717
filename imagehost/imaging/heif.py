"""HEIC/HEIF through pillow-heif, loaded only when a HEIF file turns up.

Importing the plugin costs ~230 ms and ~7.5 MB per process (measured on the development
machine), which a library without HEIC images need not pay: the probe and the renderer
look at a file's first bytes and register the opener just before Pillow opens one.
"""

from __future__ import annotations

import functools
import importlib.util

#: Major brands of the ``ftyp`` box that mark HEIF images (HEVC-coded or generic).
HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm",
                         b"hevs", b"mif1", b"msf1"})


def available() -> bool:
    """True when pillow-heif is installed (checked without importing it)."""
    return importlib.util.find_spec("pillow_heif") is not None


def is_heif(head: bytes) -> bool:
    """True when ``head`` (a file's first 12 bytes or more) starts a HEIF file."""
    return head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS


@functools.cache
def register_opener() -> bool:
    """Teach Pillow HEIF (once per process); False without pillow-heif."""
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


def prepare(head: bytes) -> None:
    """Register the opener if ``head`` starts a HEIF file."""
    if is_heif(head):
        register_opener()
