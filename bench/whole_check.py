"""What the cache damage check (``imagehost.imaging.whole``) costs a cache hit.

In-process, no HTTP: the check of real encodings of each output format, on bytes in
memory (``is_whole_data``, files the fast path reads at once) and through ``os.pread`` on
an open file (``is_whole``, larger files), in microseconds per check. ``--against FILE``
times another copy of ``whole.py`` (``git show REV:imagehost/imaging/whole.py > FILE``)
beside it, alternating, for an A/B on a busy machine.
``python bench/whole_check.py [--rounds N] [--against FILE]``
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import os
import tempfile
import timeit

from PIL import Image

from imagehost.imaging import whole


def encodings() -> dict[str, bytes]:
    """A 320x240 gradient in each format the renderer writes, and a 60-frame animation."""
    picture = Image.linear_gradient("L").resize((320, 240)).convert("RGB")
    found = {}
    for name, fmt, options in (("JPEG", "JPEG", {}), ("WebP", "WEBP", {}),
                               ("WebP lossless", "WEBP", {"lossless": True}),
                               ("AVIF", "AVIF", {}), ("PNG", "PNG", {})):
        buffer = io.BytesIO()
        picture.save(buffer, fmt, **options)
        found[name] = buffer.getvalue()
    frames = [picture.resize((200, 150)).rotate(n * 6) for n in range(60)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "WEBP", save_all=True, append_images=frames[1:], duration=50)
    found["WebP, 60 frames"] = buffer.getvalue()
    return found


def per_check_us(module, data: bytes, fd: int, number: int) -> tuple[float, float]:
    """Microseconds per check of ``data``: in memory, and through pread on ``fd``."""
    in_memory = timeit.timeit(lambda: module.is_whole_data(data), number=number)
    by_pread = timeit.timeit(
        lambda: module.is_whole(lambda offset, length: os.pread(fd, length, offset),
                                len(data)), number=number)
    return in_memory / number * 1e6, by_pread / number * 1e6


def load(path: str):
    spec = importlib.util.spec_from_file_location("whole_against", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--number", type=int, default=5000, help="checks per timing")
    parser.add_argument("--against", help="another whole.py to time beside this one")
    args = parser.parse_args()
    modules = [("this", whole)] + ([("against", load(args.against))] if args.against else [])
    print(f"{'round':<6}{'code':<9}{'file':<17}{'bytes':>7}{'memory us':>11}{'pread us':>10}")
    with tempfile.TemporaryDirectory() as folder:
        for name, data in encodings().items():
            path = os.path.join(folder, "variant")
            with open(path, "wb") as f:
                f.write(data)
            fd = os.open(path, os.O_RDONLY)
            try:
                for round_ in range(args.rounds):
                    for label, module in modules:
                        assert module.is_whole_data(data), (label, name)
                        memory, pread = per_check_us(module, data, fd, args.number)
                        print(f"{round_:<6}{label:<9}{name:<17}{len(data):>7}"
                              f"{memory:>11.2f}{pread:>10.2f}")
            finally:
                os.close(fd)


if __name__ == "__main__":
    main()
