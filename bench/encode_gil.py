"""Does Pillow's encoder release the GIL? Encodes per second with 1 and 2 threads,
into a BytesIO and into a memfd (a file descriptor), for each output format.

    /work/venv/bin/python bench/encode_gil.py [photo.jpg]

Two threads doing about twice what one does means the encoder ran without the GIL.
imagehost.imaging.render encodes non-WebP variants into a memfd because of this table.
"""

from __future__ import annotations

import io
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
OPTIONS = {"JPEG": {"quality": 80, "optimize": True}, "WEBP": {"quality": 80, "method": 2},
           "PNG": {"compress_level": 6}}


def into_bytesio(im: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, fmt, **OPTIONS[fmt])
    return buffer.getvalue()


def into_memfd(im: Image.Image, fmt: str) -> bytes:
    with open(os.memfd_create("encode-gil"), "w+b") as f:
        im.save(f, fmt, **OPTIONS[fmt])
        f.seek(0)
        return f.read()


def rate(encode, im: Image.Image, fmt: str, threads: int, seconds: float = 2.0) -> float:
    done = 0
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        while time.perf_counter() - started < seconds:
            done += len(list(pool.map(lambda _: encode(im, fmt), range(threads * 4))))
    return done / (time.perf_counter() - started)


def main() -> None:
    photo = Path(sys.argv[1]) if len(sys.argv) > 1 else next(
        (HERE / ".cache" / "photos").rglob("*.jpg"))
    with Image.open(photo) as src:
        src.draft("RGB", (512, 512))
        im = src.convert("RGB")
    im.thumbnail((512, 512), Image.Resampling.LANCZOS)
    print(f"{photo.name} -> {im.size[0]}x{im.size[1]}; encodes per second")
    print(f"{'format':6} {'into':8} {'1 thread':>9} {'2 threads':>10} {'2/1':>5}")
    for fmt in OPTIONS:
        assert into_bytesio(im, fmt) == into_memfd(im, fmt), f"{fmt}: different bytes"
        for encode, name in ((into_bytesio, "BytesIO"), (into_memfd, "memfd")):
            one, two = rate(encode, im, fmt, 1), rate(encode, im, fmt, 2)
            print(f"{fmt:6} {name:8} {one:9.0f} {two:10.0f} {two / one:5.2f}")


if __name__ == "__main__":
    main()
