"""Giving the memory of decoded images back to the system (glibc's allocator).

A render decodes a source into buffers of megabytes (Pillow allocates them with
``malloc`` in blocks of up to 16 MB by default, its block cache off; the daemon makes
them 2 MB and keeps some, see ``keep_image_blocks``). glibc serves such buffers from
``mmap`` and returns them on ``free`` only while they are above its
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

A render whose source is decoded at (nearly) full size holds far more: a 14 MP JPEG
resized to 2600 px wide is about 110 MB of pixels at once (decoded source, LANCZOS's
horizontal pass, output), where the JPEG draft keeps a 512 px variant of it under 2 MB.
Every process has a render thread per core, so the tree can run processes x cores such
renders at once on cores that can only compute as many as there are cores. ``RenderSlots``
lets only that many *heavy* renders (``HEAVY_RENDER_BYTES`` and more) hold their images at
once across all the processes of an installation (bench/README.md, "Wide bursts").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import functools
import itertools
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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


#: Freed image blocks kept per render thread, and the largest block Pillow allocates an
#: image's lines in (its default is 16 MB). Small blocks bound what the cache holds by
#: bytes (16 MB a thread) however large the images were: 4 blocks of 16 MB held up to
#: 64 MB a thread after renders of 14 MP sources. Page faults of a render of a 4 MP JPEG
#: were the same or fewer: 0 at 512 px either way, 401 against 861 at 800 px, 3931
#: against 3673 at 1200 px (decoded in full) (bench/README.md, "Wide bursts").
BLOCKS_PER_RENDER_THREAD = 8
IMAGE_BLOCK_SIZE = 2 * 1024 * 1024


def keep_image_blocks(count: int) -> None:
    """Let Pillow keep up to ``count`` freed image blocks (of at most
    ``IMAGE_BLOCK_SIZE``) for the images that follow, instead of handing each back to the
    system."""
    from PIL import Image  # (the daemon's pools are built before anything renders)

    Image.core.set_block_size(IMAGE_BLOCK_SIZE)
    Image.core.set_blocks_max(count)


def release_free_memory() -> bool:
    """Return free memory to the system: the image blocks Pillow keeps, then free heap
    memory (``malloc_trim(0)``); True if the heap gave any back."""
    from PIL import Image

    Image.core.clear_cache()
    libc = _glibc()
    return bool(libc and libc.malloc_trim(0) == 1)


#: A render whose images hold this many bytes at once is a heavy one (a 14 MP source
#: decoded in full is 56 MB: Pillow keeps RGB as 4 bytes a pixel).
HEAVY_RENDER_BYTES = 48 * 1000 * 1000
_SLOT_POLL = 0.005  # seconds between tries while every slot is taken


class RenderSlots:
    """At most ``count`` heavy renders at a time among every process that uses ``folder``
    (the processes of one installation): one lock file a slot, held with ``flock``, which
    the kernel releases if the holder dies."""

    def __init__(self, folder: Path, count: int):
        self._paths = [folder / f"slot-{n}" for n in range(max(1, count))]
        self._folder = folder
        self._turns = itertools.count()

    @contextmanager
    def held(self, nbytes: int) -> Iterator[None]:
        """A slot for a render holding ``nbytes`` of images, waiting for one if that is
        heavy and all are taken; nothing for a light render."""
        if nbytes < HEAVY_RENDER_BYTES:
            yield
            return
        fd = self._take()
        try:
            yield
        finally:
            if fd is not None:
                os.close(fd)  # releases the lock

    def _take(self) -> int | None:
        """A locked slot's descriptor; None where slots cannot be had at all (a read-only
        folder, a file system without ``flock``): the render goes ahead unlimited rather
        than failing."""
        # Each take starts at the next slot, so waiters do not all poll the same one first.
        first = next(self._turns) % len(self._paths)
        order = self._paths[first:] + self._paths[:first]
        try:
            while True:
                for path in order:
                    fd = self._open(path)
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        return fd
                    except BlockingIOError:
                        os.close(fd)
                    except OSError:
                        os.close(fd)
                        raise
                time.sleep(_SLOT_POLL)
        except OSError:
            return None

    def _open(self, path: Path) -> int:
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            self._folder.mkdir(parents=True, exist_ok=True)
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


_slots: RenderSlots | None = None


def limit_heavy_renders(slots: RenderSlots | None) -> None:
    """Make ``heavy_render`` wait for one of ``slots`` in this process (None: never)."""
    global _slots
    _slots = slots


@contextmanager
def heavy_render(nbytes: int) -> Iterator[None]:
    """Hold a render slot while images of ``nbytes`` are alive, if the process has
    slots (``limit_heavy_renders``) and the render is a heavy one."""
    if _slots is None:
        yield
        return
    with _slots.held(nbytes):
        yield
