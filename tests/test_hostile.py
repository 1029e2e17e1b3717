"""Hostile input: bombs, lying headers, polyglots, markup, odd names and paths.

Each case gets its status and envelope, the server keeps answering /health, and the
data directory holds nothing but what was accepted.
"""

import io
import struct
import zlib

import pytest
import pytest_twisted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imagehost.service.errors import ServiceError
from imagehost.service.forms import parse_upload_form
from imagehost.service.transforms import canonical_parameters, parse_transform
from imagehost.web.errors import status_of
from tests.conftest import image_bytes


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def png_declaring(width: int, height: int) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(b"\0" * 100)) + _chunk(b"IEND", b""))


def patched(fmt: str, marker: bytes, offset: int, fields: bytes, mode: str = "RGB") -> bytes:
    data = bytearray(image_bytes(fmt, size=(16, 16), mode=mode, color=0))
    at = data.find(marker)
    assert at >= 0, marker
    at += offset
    data[at:at + len(fields)] = fields
    return bytes(data)


BOMBS = {
    "png 10 gigapixels": png_declaring(100_000, 100_000),
    "png just over the limit": png_declaring(8000, 7000),
    "jpeg 65000x65000": patched("JPEG", b"\xff\xc0", 5, struct.pack(">HH", 65000, 65000)),
    "gif 65535x65535": patched("GIF", b"GIF8", 6, struct.pack("<HH", 65535, 65535), "P"),
    "webp 16383x16383": patched("WEBP", b"VP8 ", 14, struct.pack("<HH", 16383, 16383)),
}

REFUSED_TYPES = {
    "svg": (b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
            "image/svg+xml"),
    "html": (b"<!DOCTYPE html><html><script>alert(1)</script></html>", "text/html"),
    "pdf": (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\n", "application/pdf"),
    "zip": (b"PK\x03\x04" + b"\0" * 40, "application/zip"),
    "text": (b"just some words", "text/plain"),
}


def only_violation(response) -> str:
    assert response.code == 422, response.body
    [violation] = response.json()["error"]["violations"]
    return violation["message"]


def stored_files(server) -> set:
    return {p.name for p in (server.data_dir / "originals").rglob("*") if p.is_file()}


@pytest_twisted.ensureDeferred
async def test_decompression_bombs_are_refused_from_the_header(server, admin):
    for name, data in BOMBS.items():
        message = only_violation(await admin.upload("/api/upload", data))
        assert message.startswith("The image has too many pixels ("), name
        assert message.endswith("Maximum amount expected is 50000000 pixels."), name
    message = only_violation(await admin.upload("/api/upload", BOMBS["png 10 gigapixels"]))
    assert "(10000000000 pixels)" in message
    assert (await server.client.get("/health")).code == 200
    assert stored_files(server) == set()


@pytest_twisted.ensureDeferred
async def test_markup_and_documents_are_refused_with_their_type(server, admin):
    for name, (data, mime) in REFUSED_TYPES.items():
        message = only_violation(await admin.upload("/api/upload", data, filename=f"x.{name}"))
        assert message.startswith(f'The mime type of the file is invalid ("{mime}").'), name
    assert stored_files(server) == set()


@pytest_twisted.ensureDeferred
async def test_lying_and_broken_images_are_corrupted_not_500(server, admin):
    real = image_bytes("PNG", size=(32, 32))
    cases = {
        "header says bigger than the data": png_declaring(4000, 3000),
        "truncated png": real[: len(real) // 2],
        "jpeg header only": image_bytes("JPEG", size=(200, 200))[:200],
        "gif without frames": image_bytes("GIF", size=(20, 20), mode="P")[:30],
        "garbage after a jpeg marker": b"\xff\xd8\xff\xe0" + b"\x13" * 500,
    }
    for name, data in cases.items():
        assert only_violation(await admin.upload("/api/upload", data)) == (
            "The image file is corrupted."), name
    assert (await server.client.get("/health")).code == 200
    assert stored_files(server) == set()


@pytest_twisted.ensureDeferred
async def test_polyglots_are_stored_as_images_and_served_unsniffable(server, admin):
    gif = image_bytes("GIF", size=(8, 8), mode="P", color=1)
    polyglot = gif[:-1] + b"<html><script>alert(1)</script></html>" + gif[-1:]
    response = await admin.upload("/api/upload", polyglot, filename="x.html")
    assert response.code == 201, response.body
    served = await server.client.get(f"/image/{response.json()['id']}.gif")
    assert served.header("Content-Type") == "image/gif"
    assert served.header("X-Content-Type-Options") == "nosniff"


@pytest_twisted.ensureDeferred
async def test_odd_file_names_are_cleaned(server, admin):
    names = {"../../etc/passwd": "passwd", "a\x00b.jpg": "ab.jpg", "C:\\temp\\x.jpg": "x.jpg",
             "\u00e9t\u00e9 \U0001f600.jpg": "\u00e9t\u00e9 \U0001f600.jpg", "": None}
    for raw, expected in names.items():
        response = await admin.upload("/api/upload", image_bytes(), filename=raw)
        assert response.code == 201, raw
        detail = await admin.get(f"/api/image/{response.json()['id']}/detail")
        assert detail.json()["fileName"] == f"{response.json()['id']}.jpg", raw
        assert detail.json()["originalName"] == expected, raw
    non_utf8 = (b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"\xff\xfe.jpg\""
                b"\r\n\r\n" + image_bytes() + b"\r\n--b--\r\n")
    response = await admin.request("POST", "/api/upload", data=non_utf8,
                                   headers={"Content-Type": "multipart/form-data; boundary=b"})
    # The multipart parser refuses a part header that is not UTF-8: a 400 naming it.
    assert response.code == 400, response.body
    assert response.json()["error"]["message"].startswith("The multipart body is malformed")
    assert (await server.client.get("/health")).code == 200


@pytest.mark.parametrize("path", [
    "/image/../../etc/passwd", "/image/..%2F..%2Fetc%2Fpasswd.jpg", "/image/%00.jpg",
    "/image/00000000-0000-0000-0000-000000000000.jpg%00.html",
    "/image/00000000-0000-0000-0000-000000000000.jpg/../x", "/api/image/..%5c..%5cwin.ini.jpg",
    "/image/00000000-0000-0000-0000-000000000000.JPG", "/image/" + "a" * 2000 + ".jpg",
])
@pytest_twisted.ensureDeferred
async def test_path_like_ids_and_extensions_are_404(server, path):
    response = await server.client.get(path)
    assert response.code == 404, (path, response.code)
    assert response.header("Content-Type").startswith("application/json")
    assert response.header("X-Content-Type-Options") == "nosniff"


@pytest_twisted.ensureDeferred
async def test_error_bodies_cannot_be_sniffed_as_html(server, admin):
    response = await admin.post_json("/api/settings", {
        "category": "<script>alert(1)</script>", "settings": {"<b>": 1}})
    assert response.code == 422
    assert b"<" not in response.body and b">" not in response.body
    assert response.header("X-Content-Type-Options") == "nosniff"


# -- property-based: the parsers never fail with anything but a ServiceError ----------

_fields = st.lists(st.tuples(st.sampled_from(["image", "description", "isPublic", "x"]),
                             st.binary(max_size=200)), max_size=4)


def _form(boundary: str, fields, tail: bytes) -> bytes:
    body = b""
    for name, value in fields:
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; "
                 f"filename=\"f\"\r\n\r\n").encode() + value + b"\r\n"
    return body + f"--{boundary}--\r\n".encode() + tail


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(boundary=st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1,
                        max_size=70).filter(lambda b: '"' not in b and ";" not in b),
       fields=_fields, tail=st.binary(max_size=50), cut=st.integers(min_value=0, max_value=600))
def test_multipart_parsing_never_crashes(boundary, fields, tail, cut):
    body = _form(boundary, fields, tail)
    body = body[: len(body) - cut] if cut < len(body) else body
    try:
        form = parse_upload_form(io.BytesIO(body), f"multipart/form-data; boundary={boundary}")
    except ServiceError as e:
        assert status_of(e) in (400, 422)
        return
    assert len(form.description) <= 255
    assert isinstance(form.is_public, bool)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.text(max_size=80))
def test_multipart_parsing_of_garbage_never_crashes(body, content_type):
    try:
        parse_upload_form(io.BytesIO(body), content_type)
    except ServiceError as e:
        assert status_of(e) in (400, 422)


_query_values = st.lists(st.one_of(st.text(max_size=12), st.integers().map(str)), max_size=3)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.sampled_from(["w", "h", "width", "height", "crop", "q", "quality",
                                        "gravity", "fp", "dpr", "format", "x"]),
                       _query_values, max_size=6))
def test_variant_query_parsing_accepts_or_says_400(query):
    try:
        params = parse_transform(canonical_parameters(query), 8192)
    except ServiceError as e:
        assert status_of(e) == 400
        return
    for value in (params.width, params.height):
        assert value is None or 1 <= value <= 8192
    assert params.quality is None or 1 <= params.quality <= 100


def test_probe_reads_every_bomb_without_decoding():
    import gc
    import time

    from imagehost.imaging.probe import SourceLimits, TooManyPixels, probe

    for name, data in BOMBS.items():
        # This thread's CPU time, not the wall clock: other processes on a busy machine
        # do not count, and decoding any of these bombs would take seconds of it. Nor a
        # garbage collection of the test run's heap (0.37 s late in the suite).
        gc.disable()
        try:
            started = time.thread_time()
            with pytest.raises(TooManyPixels):
                probe(data, SourceLimits())
            elapsed = time.thread_time() - started
        finally:
            gc.enable()
        assert elapsed < 0.5, name


def animated_gif(frames: int, size=(40, 40)) -> bytes:
    from PIL import Image

    images = [Image.new("RGB", size, (n * 40 % 256, 255 - n * 30 % 256, 0)) for n in range(frames)]
    out = io.BytesIO()
    images[0].save(out, "GIF", save_all=True, append_images=images[1:], duration=40)
    return out.getvalue()


@pytest_twisted.ensureDeferred
async def test_animations_are_bounded_by_frames_and_total_pixels(make_server):

    server = await make_server({"image": {
        "max_frames": 5, "max_animation_pixels": 40 * 40 * 8}})
    admin = await server.admin()
    assert (await admin.upload("/api/upload", animated_gif(4))).code == 201
    assert only_violation(await admin.upload("/api/upload", animated_gif(6))) == (
        "The animation has too many frames (6 frames). "
        "Maximum amount expected is 5 frames.")
    message = only_violation(await admin.upload("/api/upload",
                                                 animated_gif(5, size=(60, 60))))
    assert message.startswith("The image has too many pixels (18000 pixels)")
