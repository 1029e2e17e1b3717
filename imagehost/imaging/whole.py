"""Whether an encoded image file is whole: what a crash before its data reached the disk
cannot leave looking right.

Cached variants are written without fsync (they can be rendered again). After a power
cut such a file can be empty, cut short, or of the right length but full of zeros, all
of it or from some block on. Each format we encode marks its start and its end (or, for
RIFF and ISOBMFF, its length), so a handful of bytes at both ends tells a whole file
from a damaged one without decoding.

The lengths of WebP (RIFF) and AVIF (ISOBMFF) sit in their first block, so a file whose
later blocks were lost as zeros still has them right. Their chunk and box headers are
walked (a zeroed one names no chunk), and where the data's own last bytes cannot be zero
they must not be: AV1 ends every unit with a one bit, and a lossless VP8L image ends
within a byte of padding. A lossy VP8 stream can end in hundreds of zero bytes (a flat
black picture's does), and metadata (EXIF) in zeros, so a lossy WebP whose tail was lost
within its image data still passes (only a decode could tell).
"""

from __future__ import annotations

from collections.abc import Callable

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk: empty, then its CRC
_ISOBMFF_BOXES = 64  # an AVIF has a handful of top-level boxes; more is not ours
# A still WebP has at most seven chunks, an animation one per frame: a long one's later
# frames are not walked (each chunk is a read: 60 of them cost a hit about 60 us).
_RIFF_CHUNKS = 8
HEAD_SIZE = 20  # a WebP's first chunk header included
TAIL_SIZE = len(_PNG_END)

#: ``read_at(offset, length)``: up to ``length`` bytes of the file from ``offset``.
ReadAt = Callable[[int, int], bytes]


def is_whole(read_at: ReadAt, size: int) -> bool:
    """Whether the ``size`` bytes that ``read_at`` reads are a whole JPEG, PNG, WebP, GIF
    or AVIF (checked by their start and end markers or recorded lengths, never decoded);
    False for anything else, an empty file included."""
    if size < HEAD_SIZE:
        return False
    head = read_at(0, HEAD_SIZE)
    if head[4:8] == b"ftyp":
        return _boxes_fill(read_at, size) and any(read_at(size - TAIL_SIZE, TAIL_SIZE))
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return _riff_whole(head, read_at, size)
    return _marks_whole(head, read_at(size - TAIL_SIZE, TAIL_SIZE))


def is_whole_data(data: bytes) -> bool:
    """``is_whole`` of bytes in memory (a few slices: free next to reading them)."""
    if data[4:8] == b"ftyp" or data.startswith(b"RIFF"):
        return is_whole(lambda offset, length: data[offset:offset + length], len(data))
    return len(data) >= HEAD_SIZE and _marks_whole(data[:HEAD_SIZE], data[-TAIL_SIZE:])


def _marks_whole(head: bytes, tail: bytes) -> bool:
    """Whether a file that starts with ``head`` and ends with ``tail`` (``TAIL_SIZE``
    bytes) is a whole JPEG, PNG or GIF."""
    if head.startswith(b"\xff\xd8\xff"):
        return tail.endswith(b"\xff\xd9")
    if head.startswith(_PNG_SIGNATURE):
        return tail == _PNG_END
    if head.startswith((b"GIF87a", b"GIF89a")):
        return tail.endswith(b";")
    return False


def _riff_whole(head: bytes, read_at: ReadAt, size: int) -> bool:
    """Whether a WebP's RIFF length and chunks fill ``size`` bytes exactly, and its VP8L
    image, if it has one, does not end in zeros."""
    if int.from_bytes(head[4:8], "little") + 8 != size:
        return False
    offset = 12
    for _chunk in range(_RIFF_CHUNKS):
        header = head[offset:offset + 8] if offset + 8 <= HEAD_SIZE else read_at(offset, 8)
        if len(header) < 8 or not header[:4].strip(b" ").isalnum():
            return False  # cut short, or a header lost as zeros
        start, end = offset + 8, offset + 8 + int.from_bytes(header[4:8], "little")
        if end > size:
            return False
        if header[:4] == b"VP8L" and not any(
                read_at(max(start, end - TAIL_SIZE), min(TAIL_SIZE, end - start))):
            return False
        offset = end + (end & 1)  # chunks are padded to an even length
        if offset >= size - 1:  # the last chunk (a writer may leave out its pad byte)
            return True
    return True  # many frames: the RIFF length has to do


def _boxes_fill(read_at: ReadAt, size: int) -> bool:
    """Whether the top-level ISOBMFF boxes (AVIF) end exactly at ``size``."""
    offset = 0
    for _box in range(_ISOBMFF_BOXES):
        if offset == size:
            return True
        header = read_at(offset, 16)
        if len(header) < 8:
            return False
        length = int.from_bytes(header[0:4], "big")
        if length == 0:  # the last box, to the end of the file
            return True
        if length == 1:  # a 64-bit length follows the type
            if len(header) < 16:
                return False
            length = int.from_bytes(header[8:16], "big")
        if length < 8:
            return False
        offset += length
    return offset == size
