"""A cached variant that a power cut left damaged is never served: it is removed and
rendered again (variant cache files are written without fsync)."""

from __future__ import annotations

import io
import random

import pytest
import pytest_twisted
from PIL import Image
from twisted.internet.defer import Deferred, gatherResults

from imagehost.imaging.intermediate import make_intermediate
from imagehost.imaging.render import plan_variant, render_variant
from imagehost.imaging.whole import is_whole_data
from tests.conftest import image_bytes
from tests.test_delivery_fast_path import upload


def noisy_png(size: tuple[int, int]) -> bytes:
    """A PNG that does not compress (so its variants are large files)."""
    rng = random.Random(7)
    im = Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))
    buffer = io.BytesIO()
    im.save(buffer, "PNG")
    return buffer.getvalue()


def animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (40, 30), color) for color in ((200, 0, 0), (0, 0, 200))]
    buffer = io.BytesIO()
    frames[0].save(buffer, fmt, save_all=True, append_images=frames[1:], duration=100,
                   loop=0)
    return buffer.getvalue()


def encodings() -> list[tuple[str, bytes]]:
    """What the renderer and the intermediates write, in every output format."""
    photo = image_bytes("JPEG", (320, 240))
    found = []
    for ext in ("jpg", "png", "webp", "gif", "avif"):
        spec = plan_variant(320, 240, "JPEG", width=100, height=None, crop=False,
                            out_ext=ext, quality=None)
        found.append((ext, render_variant(photo, spec)))
    for fmt in ("GIF", "WEBP"):
        source = animated(fmt)
        spec = plan_variant(40, 30, fmt, width=20, height=None, crop=False,
                            out_ext=fmt.lower(), quality=None)
        found.append((f"animated {fmt}", render_variant(source, spec)))
    for fmt in ("PNG", "WEBP"):
        found.append((f"intermediate of a {fmt}",
                      make_intermediate(image_bytes(fmt, (3000, 2000)), 1024)))
    return found


def test_every_encoding_we_write_is_whole_and_any_cut_of_it_is_not():
    for name, data in encodings():
        assert is_whole_data(data), name
        for size in {0, 1, 15, 16, len(data) // 2, len(data) - 1}:
            assert not is_whole_data(data[:size]), (name, size)
        assert not is_whole_data(bytes(len(data))), name  # the length, but zeros
        if name != "webp":  # a lossy VP8 stream may end in zeros (imaging/whole.py)
            assert not is_whole_data(damaged(data, "zero tail")), name


def test_a_lossless_webp_or_an_avif_with_its_tail_lost_as_zeros_is_not_whole():
    """Their lengths sit in the first block: a file whose last blocks never reached the
    disk has them right, and only the data's end tells."""
    rgba = Image.frombytes("RGBA", (300, 200), random.Random(3).randbytes(300 * 200 * 4))
    for fmt, options in (("WEBP", {"lossless": True}), ("AVIF", {"quality": 60}),
                         ("WEBP", {"lossless": True, "exif": b"Exif\0\0" + bytes(40)})):
        buffer = io.BytesIO()
        rgba.save(buffer, fmt, **options)
        data = buffer.getvalue()
        assert is_whole_data(data), fmt
        block = 4096 if len(data) > 8192 else len(data) // 2
        for lost_from in (len(data) - 1 - (len(data) - 1) % block, len(data) // 2):
            lost = data[:lost_from] + bytes(len(data) - lost_from)
            assert not is_whole_data(lost), (fmt, options, lost_from)


def test_real_encodings_of_every_kind_are_whole():
    """No false alarm (a variant taken for damaged is rendered again on every hit):
    flat, black, noisy and graded pictures, lossy and lossless, still and animated."""
    rng = random.Random(11)
    pictures = [Image.new("RGB", (3000, 2000)), Image.new("RGBA", (64, 64)),
                Image.new("L", (1, 1), 255)]
    for _ in range(12):
        size, mode = (rng.randint(1, 300), rng.randint(1, 300)), rng.choice(["RGB", "RGBA"])
        pictures += [Image.new(mode, size, tuple(rng.randrange(256) for _ in mode)),
                     Image.frombytes(mode, size, rng.randbytes(size[0] * size[1] * len(mode))),
                     Image.linear_gradient("L").resize(size).convert(mode)]
    for picture in pictures:
        for fmt, options in (("WEBP", {"lossless": True}), ("WEBP", {"quality": 80}),
                             ("WEBP", {"quality": 5}), ("AVIF", {})):
            buffer = io.BytesIO()
            picture.convert("RGBA" if "A" in picture.mode else "RGB").save(buffer, fmt,
                                                                        **options)
            assert is_whole_data(buffer.getvalue()), (picture, fmt, options)
    for fmt in ("WEBP", "GIF", "AVIF"):
        for count in (4, 20):  # (more frames than chunks are walked)
            frames = [Image.new("RGB", (40, 30), (n % 2 * 9, n, 0)) for n in range(count)]
            buffer = io.BytesIO()
            frames[0].save(buffer, fmt, save_all=True, append_images=frames[1:], duration=100)
            assert is_whole_data(buffer.getvalue()), (fmt, count)


def damaged(data: bytes, how: str) -> bytes:
    """``data`` cut short, zeroed, or zeroed from its middle on (same length)."""
    if how == "cut short":
        return data[: len(data) // 2]
    if how == "zero tail":
        return data[: len(data) // 2] + bytes(len(data) - len(data) // 2)
    return bytes(len(data))


def variant_file(server, image_id: str, key_start: str):
    [path] = [p for p in (server.data_dir / "cache").rglob(f"{key_start}*")
              if p.parent.name == image_id]
    return path


@pytest_twisted.ensureDeferred
async def test_a_damaged_variant_is_rendered_again_on_the_fast_path(server, admin):
    delivery = server.imagehost.delivery
    image_id = await upload(admin, image_bytes("JPEG", (400, 300)))
    await delivery.rendered_ahead(image_id)
    for ext in ("jpg", "png", "webp", "gif", "avif"):
        # (a lossy WebP's lost tail is not seen without a decode: imaging/whole.py)
        for how in ("cut short", "zeros") + (() if ext == "webp" else ("zero tail",)):
            url = f"/image/{image_id}.{ext}?w=50"
            first = await server.client.get(url)
            await delivery.written()
            path = variant_file(server, image_id, "r1-50x")
            path.write_bytes(damaged(path.read_bytes(), how))
            renders, immediate = delivery.renders, delivery.immediate_misses
            again = await server.client.get(url)
            assert (again.code, again.header("X-Cache")) == (200, "MISS"), (ext, how)
            assert again.body == first.body, (ext, how)
            assert delivery.renders == renders + 1
            assert delivery.immediate_misses == immediate + 1  # the fast path saw it
            await delivery.written()
            assert path.read_bytes() == first.body  # whole again on disk
            hit = await server.client.get(url)
            assert (hit.header("X-Cache"), hit.body) == ("HIT", first.body)
            path.unlink()  # the next format's variant is the only r1-50x file


@pytest.mark.parametrize("how", ["cut short", "zeros"])
@pytest_twisted.ensureDeferred
async def test_a_damaged_large_variant_is_refused_by_the_route_and_by_head(server, admin,
                                                                           how):
    delivery = server.imagehost.delivery
    image_id = await upload(admin, noisy_png((600, 400)))
    await delivery.rendered_ahead(image_id)
    url = f"/image/{image_id}.png?w=500"
    first = await server.client.get(url)
    assert len(first.body) > 2 ** 16  # streamed from the file, not read at once
    await delivery.written()
    path = variant_file(server, image_id, "r1-500x")
    path.write_bytes(damaged(path.read_bytes(), how))
    # A HEAD of a hit is answered at once from the file's length: not this one's.
    head = await server.client.request("HEAD", url)
    assert head.code == 200 and head.header("X-Cache") != "HIT"
    assert int(head.header("Content-Length")) == len(first.body)
    await delivery.written()
    path.write_bytes(damaged(path.read_bytes(), how))
    delivery.forget(image_id)  # the next request reads the record: the route answers
    hits = delivery.immediate_hits
    again = await server.client.get(url)
    assert (again.code, again.header("X-Cache")) == (200, "MISS")
    assert again.body == first.body
    assert delivery.immediate_hits == hits


@pytest_twisted.ensureDeferred
async def test_concurrent_requests_for_a_damaged_variant_share_one_render(server, admin):
    delivery = server.imagehost.delivery
    image_id = await upload(admin, image_bytes("JPEG", (400, 300)))
    await delivery.rendered_ahead(image_id)
    url = f"/image/{image_id}.webp?w=80"
    first = await server.client.get(url)
    await delivery.written()
    path = variant_file(server, image_id, "r1-80x")
    path.write_bytes(damaged(path.read_bytes(), "cut short"))
    renders = delivery.renders
    answers = await gatherResults([Deferred.fromCoroutine(server.client.get(url))
                                   for _ in range(8)])
    assert {(a.code, a.body) for a in answers} == {(200, first.body)}
    assert delivery.renders == renders + 1
