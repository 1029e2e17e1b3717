"""Giving the memory of decoded images back to the system (glibc's allocator).

A render decodes a source into buffers of megabytes (Pillow allocates them with
``malloc`` in blocks of up to 16 MB; its own block cache is off by default). glibc serves
such buffers from ``mmap`` and returns them on ``free`` only while they are above its
*dynamic* mmap threshold, which rises to the size of the largest buffer freed so far (up
to 32 MB): after the first renders, later buffers come from the heap arenas and stay in
the process when freed. Measured in bench/README.md ("Memory return"): a daemon idling at
96 MB held 142 MB after 48 renders of a 4 MP PNG; with the threshold fixed at 1 MB it was
back at 96 MB. ``release_free_memory`` (``malloc_trim``) hands back what smaller
allocations left free in the arenas once renders go idle.

That costs a render of a 4 MP JPEG some 590 page faults (3 ms of system CPU, an eighth
of the render) as every buffer is mapped afresh. ``keep_image_blocks`` lets Pillow keep
the blocks of finished images (its block cache) for the next render instead: 60 faults,
under 1 ms (bench/README.md, "Uncached misses"). ``release_free_memory`` empties that
cache too, so what renders hold comes back once they go idle all the same.

On other C libraries (musl, macOS) the glibc calls are no-ops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

#: Allocations at least this large get their own mapping, returned to the system on free.
MMAP_THRESHOLD = 1024 * 1024
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)


@functools.cache
def _glibc():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt.argtypes, libc.malloc_trim.argtypes = [ctypes.c_int, ctypes.c_int], [
            ctypes.c_size_t]
    except (OSError, AttributeError):
        return None  # not glibc
    return libc


def map_large_buffers(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold, so that image buffers go back to the system when freed
    (setting it turns the dynamic threshold off). True if the allocator took it."""
    libc = _glibc()
    return bool(libc and libc.mallopt(_M_MMAP_THRESHOLD, threshold) == 1)


#: Freed image blocks kept per render thread: what one render of a 4 MP JPEG uses.
BLOCKS_PER_RENDER_THREAD = 4


def keep_image_blocks(count: int) -> None:
    """Let Pillow keep up to ``count`` freed image blocks (of at most its block size,
    16 MB) for the images that follow, instead of handing each back to the system."""
    from PIL import Image  # (the daemon's pools are built before anything renders)

    Image.core.set_blocks_max(count)


def release_free_memory() -> bool:
    """Return free memory to the system: the image blocks Pillow keeps, then free heap
    memory (``malloc_trim(0)``); True if the heap gave any back."""
    from PIL import Image

    Image.core.clear_cache()
    libc = _glibc()
    return bool(libc and libc.malloc_trim(0) == 1)
