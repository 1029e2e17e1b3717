"""The on-disk cache of rendered variants, bounded in bytes with least-recently-used eviction.

Files live at ``storage.variants_dir(image_id) / spec.cache_key()`` and are written with
``atomic_write`` (temp file + rename), so two writers of the same variant (two requests,
two daemons) can only ever replace one complete file with another identical one.

The index of sizes and use order lives in memory. It is filled by a startup scan that
runs off the reactor, and by every file this process writes or opens; it may miss files
another process wrote or removed (``storage.delete_variants``), so the filesystem stays
the authority: a hit is an ``open`` that succeeds, and eviction ignores files already gone.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from imagehost.imaging.whole import is_whole, is_whole_data
from imagehost.service.pools import IoPool
from imagehost.storage import TEMP_PREFIX, Storage, atomic_write

_log = Logger()
# Deleted images remembered: far more than renders can be in flight when a delete comes.
_DELETED_MARKS = 10_000


@dataclass(frozen=True)
class CachedFile:
    """A variant found in the cache: opened for reading (the caller closes ``file``), or
    already read (``data``, when asked for files that small)."""

    file: BinaryIO | None
    size: int
    data: bytes | None = None


class VariantCache:
    """Variant files under the storage's cache folder, at most ``max_size`` bytes in total."""

    def __init__(self, storage: Storage, max_size: int, io: IoPool):
        self._storage = storage
        self._io = io
        self.max_size = max_size
        self._entries: OrderedDict[Path, int] = OrderedDict()  # oldest use first
        self.size = 0
        self.evictions = 0
        # Images deleted through this daemon (or found gone), most recent last, each with
        # the count of marks made when it was marked: none of their variants is written
        # any more, not even one rendered or being written when the delete came.
        self._deleted: OrderedDict[str, int] = OrderedDict()
        self._marks_made = 0

    def __len__(self) -> int:
        return len(self._entries)

    def path(self, image_id: str, key: str) -> Path:
        """Where the variant ``key`` of an image lives."""
        return self._storage.variants_dir(image_id) / key

    def open(self, path: Path, read_up_to: int = 0) -> CachedFile | None:
        """Open a cached variant and mark it as just used; None when it is not cached, or
        not a whole image (``imaging.whole``: then it is removed, to be rendered again).
        A file of at most ``read_up_to`` bytes is read at once and closed: one ``open``,
        ``fstat``, ``read`` and ``close``, where a file object costs twice the calls."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):  # (a file where its folder goes)
            self._forget(path)
            return None
        try:
            size = os.fstat(fd).st_size
            data = os.read(fd, size) if 0 < size <= read_up_to else None
            if data is None:
                whole = is_whole(lambda offset, length: os.pread(fd, length, offset), size)
            else:
                whole = len(data) == size and is_whole_data(data)
        except BaseException:
            os.close(fd)
            raise
        if not whole:
            self._refuse(path, fd)
            return None
        self._record(path, size)
        if data is not None:
            os.close(fd)
            return CachedFile(None, size, data)
        return CachedFile(open(fd, "rb"), size)  # noqa: SIM115 - the caller closes it

    def touch(self, path: Path) -> bool:
        """Mark a cached file as just used, without reading it; False when it is not
        there or not whole (on the calling thread, like ``open``)."""
        cached = self.open(path)
        if cached is None:
            return False
        assert cached.file is not None
        cached.file.close()
        return True

    def keep(self, path: Path, data: bytes) -> Deferred[None]:
        """Write a file into the cache and evict beyond the bound (both on the I/O pool);
        a failed write is only logged by its absence (the bytes still serve). Nothing is
        left of a variant whose image was deleted (``image_deleted``) before or while it
        was written."""
        image_id = path.parent.name
        if image_id in self._deleted:
            return succeed(None)
        write = self._io.run(_write_cache_file, path, data)
        write.addCallback(self._written, path, len(data), image_id)
        return write

    def _written(self, written: bool, path: Path, size: int,
                 image_id: str) -> Deferred | None:
        if not written:
            return None
        if image_id in self._deleted:
            # Deleted while this was written: the delete's removal of the image's folder
            # may have run before the rename, so this file could outlive it.
            return self._io.run(_unlink_all, [path])
        return self.stored(path, size)

    def stored(self, path: Path, size: int) -> Deferred:
        """Account for a variant just written, evicting the least recently used beyond the
        bound; fires once the evicted files are gone."""
        self._record(path, size)
        return self._evict()

    def image_deleted(self, image_id: str) -> None:
        """The image is being deleted: write none of its variants from now on (call it
        before its files are removed) and drop those indexed."""
        self._marks_made += 1
        self._deleted[image_id] = self._marks_made
        self._deleted.move_to_end(image_id)
        while len(self._deleted) > _DELETED_MARKS:
            self._deleted.popitem(last=False)
        self.forget_image(image_id)

    def image_added(self, image_id: str) -> None:
        """The image exists (again: an id restored after its delete): cache its variants."""
        self._deleted.pop(image_id, None)

    def marks_made(self) -> int:
        """How many delete marks were made so far (what ``image_found`` compares with)."""
        return self._marks_made

    def image_found(self, image_id: str, marks_before: int) -> None:
        """A read of the image's record that began when ``marks_made()`` was
        ``marks_before`` found it. If the image was marked before that read began, its
        record was deleted and has been made again since (a mark follows the record's
        delete): cache its variants again. A read already under way when the mark came
        may have seen the record before its delete, so it leaves the mark alone."""
        marked = self._deleted.get(image_id)
        if marked is not None and marked <= marks_before:
            del self._deleted[image_id]

    def is_deleted(self, image_id: str) -> bool:
        """Whether the image was deleted through this daemon (``image_deleted``)."""
        return image_id in self._deleted

    def forget_image(self, image_id: str) -> None:
        """Drop an image's variants from the index (after ``storage.delete_variants``)."""
        folder = self._storage.variants_dir(image_id)
        for path in [p for p in self._entries if p.parent == folder]:
            self._forget(path)

    def merge_scan(self, found: Iterable[tuple[Path, int]]) -> Deferred:
        """Add files found by ``scan`` (oldest first) as older than anything used since."""
        newer = self._entries
        self._entries = OrderedDict((path, size) for path, size in found if path not in newer)
        self._entries.update(newer)
        self.size = sum(self._entries.values())
        return self._evict()

    def scan(self) -> list[tuple[Path, int]]:
        """Every variant file on disk with its size, least recently used first (blocking)."""
        found = []
        for folder, _dirs, files in os.walk(self._storage.cache):
            for name in files:
                if name.startswith(TEMP_PREFIX):
                    continue
                path = Path(folder) / name
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                found.append((max(st.st_atime, st.st_mtime), path, st.st_size))
        found.sort()
        return [(path, size) for _used, path, size in found]

    def _record(self, path: Path, size: int) -> None:
        self.size += size - self._entries.get(path, 0)
        self._entries[path] = size
        self._entries.move_to_end(path)

    def _refuse(self, path: Path, fd: int) -> None:
        """Remove a cached file that is not a whole image (what a power cut can leave of
        a file written without fsync), so that it is rendered again; closes ``fd``."""
        _log.warn("Removing the damaged cached variant {path}", path=path)
        try:
            # Unless a writer has just replaced it with a whole one (another inode).
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                path.unlink()
        except FileNotFoundError:
            pass
        finally:
            os.close(fd)
        self._forget(path)

    def _forget(self, path: Path) -> None:
        self.size -= self._entries.pop(path, 0)

    def _evict(self) -> Deferred:
        """Drop the least recently used entries beyond the bound; their files are removed
        on the I/O pool (after a smaller ``max_size`` that can be most of the cache)."""
        victims = []
        while self.size > self.max_size and self._entries:
            path, size = self._entries.popitem(last=False)
            self.size -= size
            self.evictions += 1
            victims.append(path)
        if not victims:
            return succeed(None)
        d = self._io.run(_unlink_all, victims)
        d.addErrback(lambda f: _log.failure("Cannot evict {n} cached variants", f,
                                            n=len(victims)))
        return d


def _write_cache_file(path: Path, data: bytes) -> bool:
    """Write a variant to this daemon's cache; False if that failed (it still serves)."""
    try:
        atomic_write(path, data, durable=False)
    except OSError:
        return False
    return True


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        # An open reader keeps its file: POSIX unlink only removes the name.
        path.unlink(missing_ok=True)
