"""Bad input gets a clear 4xx with the error envelope, and the server keeps answering.

Every case asserts the status, the envelope and that ``/health`` still answers 200.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import os
import struct
import zlib

import pytest
import pytest_twisted
from PIL import Image
from twisted.internet.threads import deferToThread

from tests.conftest import image_bytes
from tests.test_uploads import raw_exchange


async def refused(server, response, *statuses: int) -> dict:
    """The envelope of a refusal with one of ``statuses``; the server still answers."""
    assert response.code in statuses, (response.code, response.body[:300])
    assert response.header("Content-Type").startswith("application/json")
    error = response.json()["error"]
    assert error["title"] and error["message"]
    assert ("violations" in error) == (response.code == 422)
    assert (await server.client.get("/health")).code == 200
    return error


async def send_json(client, method: str, path: str, raw: bytes):
    return await client.request(method, path, data=raw,
                                headers={"Content-Type": "application/json"})


# -- JSON bodies --------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_deeply_nested_json_is_400_everywhere(server, admin):
    for opener in (b"[", b'{"a":'):
        raw = opener * 100_000
        for path in ("/api/auth/login", "/api/auth/signup", "/api/settings",
                     "/api/user/api-keys"):
            response = await send_json(admin, "POST", path, raw)
            error = await refused(server, response, 400)
            assert "nested" in error["message"] or "JSON" in error["message"]
    # Nesting a little deeper than any body we take is refused too, as a 400, not a crash.
    raw = b'{"username": ' + b"[" * 200 + b"]" * 200 + b', "password": "x"}'
    await refused(server, await send_json(server.client, "POST", "/api/auth/login", raw), 400)


@pytest_twisted.ensureDeferred
async def test_lone_surrogates_in_json_strings_are_refused_on_every_endpoint(server, admin):
    upload = await admin.upload("/api/upload", image_bytes())
    image_id = upload.json()["id"]
    await admin.post_json("/api/settings", {"category": "access",
                                            "settings": {"allowRegistration": True}})
    cases = [
        ("POST", "/api/auth/login", b'{"username": "admin", "password": "\\ud800"}'),
        ("POST", "/api/auth/login", b'{"username": "\\udfff", "password": "x"}'),
        ("POST", "/api/auth/refresh", b'{"refresh_token": "\\ud800"}'),
        ("POST", "/api/auth/logout", b'{"refresh_token": "\\ud800"}'),
        ("POST", "/api/auth/signup", b'{"email": "a@example.com", "username": "bob",'
                                     b' "password": "\\ud800\\ud800\\ud800\\ud800x",'
                                     b' "confirm": "\\ud800\\ud800\\ud800\\ud800x"}'),
        ("PATCH", f"/api/image/{image_id}", b'{"description": "caf\\ud800"}'),
        ("PATCH", f"/api/image/{image_id}", b'{"description": "a\\u0000b"}'),
        ("POST", "/api/auth/login", b'{"username": "ad\\u0000min", "password": "x"}'),
        ("POST", "/api/user/api-keys", b'{"name": "laptop \\ud800"}'),
        ("POST", "/api/settings", b'{"category": "image", "settings":'
                                  b' {"allowedMimeTypes": ["image/png\\ud800"]}}'),
        ("POST", "/api/settings", b'{"category": "image", "settings": {"\\ud800": 1}}'),
    ]
    for method, path, raw in cases:
        client = server.client if path.startswith("/api/auth") else admin
        error = await refused(server, await send_json(client, method, path, raw), 400, 422)
        assert error["message"], path
    detail = await admin.get(f"/api/image/{image_id}/detail")
    assert detail.json()["description"] == ""


# -- settings, dates ----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_settings_with_wrongly_typed_entries_are_422(server, admin):
    for value in ([["image/png"]], [{}], [None], ["image/png", 3], "image/png", {}):
        response = await admin.post_json("/api/settings", {
            "category": "image", "settings": {"allowedMimeTypes": value}})
        error = await refused(server, response, 422)
        assert error["violations"][0]["property"] == "image.allowedMimeTypes"
    public = await server.client.get("/api/settings/public")
    assert "image/png" in public.json()["data"]["image"]["allowedMimeTypes"]


@pytest_twisted.ensureDeferred
async def test_api_key_expiry_at_the_edges_of_the_calendar_is_422(server, admin):
    for moment in ("9999-12-31T23:00:00-05:00", "9999-12-31T23:59:59+00:00",
                   "0001-01-01T00:00:00+00:00", "0001-01-01T00:30:00+01:00",
                   "9999-12-31T23:59:59.999999-23:59"):
        response = await admin.post_json("/api/user/api-keys",
                                         {"name": "edge", "expiresAt": moment})
        error = await refused(server, response, 422)
        [violation] = error["violations"]
        assert violation["property"] == "expiresAt", moment
        assert violation["message"], moment
    fine = await admin.post_json("/api/user/api-keys",
                                 {"name": "fine", "expiresAt": "2999-01-01T00:00:00-05:00"})
    assert fine.code == 201, fine.body
    assert fine.json()["expiresAt"] == "2999-01-01T05:00:00.000000+00:00"
    listed = await admin.get("/api/user/api-keys")
    assert [k["name"] for k in listed.json()["data"]] == ["fine"]


# -- URLs ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_trailing_newline_in_an_extension_or_number_is_refused(server, admin):
    image_id = (await admin.upload("/api/upload", image_bytes())).json()["id"]
    assert (await server.client.get(f"/image/{image_id}.jpg")).code == 200
    for path in (f"/image/{image_id}.jpg%0a", f"/image/{image_id}.jpg%0A",
                 f"/api/image/{image_id}_thumbnail.jpg%0a"):
        await refused(server, await server.client.get(path), 404)
    for query in ("w=10%0A", "h=10%0a", "q=50%0a", "width=%0a10", "crop=true%0a"):
        await refused(server, await server.client.get(f"/image/{image_id}.jpg?{query}"), 400)
    for query in ("limit=10%0a", "orderBy=attributes.views%0a"):
        await refused(server, await admin.get(f"/api/images/1?{query}"), 400)
    await refused(server, await admin.get("/api/images/1%0a"), 400, 404)


@pytest_twisted.ensureDeferred
async def test_double_slashes_are_404_never_a_redirect_to_the_host_header(server, admin):
    image_id = (await admin.upload("/api/upload", image_bytes())).json()["id"]
    for path in ("//health", "/api//user", f"//image/{image_id}.jpg", "/api/images//1",
                 f"/image//{image_id}.jpg", "//evil.example/api/user", "/health/"):
        answer = await raw_request(server, f"GET {path} HTTP/1.0\r\nHost: evil.example\r\n"
                                           "Connection: close\r\n\r\n".encode())
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 404 "), (path, head)
        assert b"\r\nlocation:" not in head.lower(), (path, head)
        assert json.loads(body)["error"]["title"] == "NotFound", (path, body)
    await refused(server, await server.client.get("/image/%ff.jpg"), 400)


def raw_request(server, head: bytes):
    """Send bytes to the daemon over a plain socket; what it answered (a Deferred)."""
    port = int(server.base_url.rsplit(":", 1)[1])
    return deferToThread(raw_exchange, port, head)


# -- feed cursors -------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _payload(cursor: str) -> dict:
    body = cursor.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def _signed(server, payload: dict) -> str:
    """A cursor signed with the installation's own secret (what only the server can make)."""
    from imagehost.service.library import cursor_signing_key

    secret = (server.data_dir / "secret.key").read_bytes().strip()
    body = _b64(json.dumps(payload).encode())
    mac = hmac.new(cursor_signing_key(secret), body.encode(), hashlib.sha256).digest()[:16]
    return f"{body}.{_b64(mac)}"


@pytest_twisted.ensureDeferred
async def test_feed_cursors_the_server_did_not_issue_are_400(server, admin):
    for _ in range(3):
        await admin.upload("/api/upload", image_bytes(), fields={"isPublic": "true"})
    issued = {}
    for order_by in ("attributes.createdAt", "attributes.views"):
        page = (await admin.get(f"/api/images/1?limit=1&orderBy={order_by}")).json()
        issued[order_by] = page["meta"]["nextCursor"]
        follow = await admin.get(f"/api/images/2?limit=1&orderBy={order_by}"
                                 f"&cursor={issued[order_by]}")
        assert follow.code == 200, follow.body
    by_date, by_views = _payload(issued["attributes.createdAt"]), _payload(
        issued["attributes.views"])
    mac = issued["attributes.views"].split(".")[1]
    edited = {
        "views edited": dict(by_views, v=by_views["v"] + 1),
        "huge views": dict(by_views, v=10**30),
        "negative views": dict(by_views, v=-1),
        "date past 9999 in UTC": dict(by_date, v="9999-12-31T23:00:00-05:00"),
        "year 1 before UTC": dict(by_date, v="0001-01-01T00:00:00+01:00"),
        "not a date": dict(by_date, v="yesterday"),
    }
    forged = [_b64(json.dumps(p).encode()) + "." + mac for p in edited.values()]
    forged.append(issued["attributes.views"].split(".")[0])  # unsigned, as before
    forged.append(issued["attributes.views"][:-2])
    # Even with the installation's secret, out-of-range values are refused, not a 500.
    forged += [_signed(server, p) for p in edited.values() if p != edited["views edited"]]
    for cursor in forged:
        order_by = "attributes.views" if isinstance(_payload(cursor)["v"], int) else (
            "attributes.createdAt")
        response = await admin.get(f"/api/images/2?limit=1&orderBy={order_by}&cursor={cursor}")
        error = await refused(server, response, 400)
        assert "cursor" in error["message"], cursor


# -- images -------------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def _with_png_chunk(png: bytes, kind: bytes, data: bytes) -> bytes:
    """``png`` with one more chunk right after IHDR (8-byte signature + 25-byte IHDR)."""
    return png[:33] + _chunk(kind, data) + png[33:]


def malformed_metadata() -> dict[str, bytes]:
    png = image_bytes("PNG", size=(40, 30))
    return {
        "png eXIf that is not TIFF": _with_png_chunk(png, b"eXIf", b"this is not a TIFF"),
        "png raw exif profile, not hex": _with_png_chunk(
            png, b"tEXt", b"Raw profile type exif\0\nexif\n      20\nzzzz not hex at all\n"),
        "png compressed raw exif profile, not hex": _with_png_chunk(
            png, b"zTXt",
            b"Raw profile type exif\0\0" + zlib.compress(b"\nexif\n 9\n45786966zz\n")),
        "webp garbage exif": image_bytes("WEBP", size=(40, 30), exif=b"Exif\0\0garbage!"),
        "webp exif without header": image_bytes("WEBP", size=(40, 30), exif=b"garbage"),
    }


@pytest_twisted.ensureDeferred
async def test_images_with_malformed_metadata_are_accepted_and_render(server, admin):
    for name, data in malformed_metadata().items():
        response = await admin.upload("/api/upload", data)
        assert response.code == 201, (name, response.body)
        image_id = response.json()["id"]
        detail = (await admin.get(f"/api/image/{image_id}/detail")).json()
        assert (detail["width"], detail["height"]) == (40, 30), name
        for variant in (f"/image/{image_id}.jpg?w=20", f"/image/{image_id}.png?w=20",
                        f"/image/{image_id}.webp?w=20", f"/api/image/{image_id}_thumbnail.gif"):
            served = await server.client.get(variant)
            assert served.code == 200, (name, variant, served.body[:200])
            assert Image.open(io.BytesIO(served.body)).width in (20, 30), (name, variant)
    assert (await server.client.get("/health")).code == 200


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` over ~100 bytes of pixel data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(os.urandom(60), 0)) + _chunk(b"IEND", b""))


@pytest_twisted.ensureDeferred
async def test_a_tiny_png_declaring_a_large_canvas_is_corrupted(server, admin):
    data = png_declaring(7000, 7000)
    assert len(data) < 200
    error = await refused(server, await admin.upload("/api/upload", data), 422)
    assert error["violations"] == [{"property": "image",
                                    "message": "The image file is corrupted."}]
    assert not [p for p in (server.data_dir / "originals").rglob("*") if p.is_file()]


def test_probing_a_tiny_file_that_declares_a_large_canvas_never_decodes_it(monkeypatch):
    from PIL import ImageFile

    from imagehost.imaging.probe import CorruptImage, SourceLimits, probe
    from imagehost.imaging.render import RenderError, RenderSpec, render_variant

    decoded = []
    load = ImageFile.ImageFile.load

    def spy(image):
        decoded.append(image.size)
        return load(image)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    for width, height in ((7000, 7000), (2000, 30), (30, 2000)):
        with pytest.raises(CorruptImage):
            probe(png_declaring(width, height), SourceLimits())
        with pytest.raises(RenderError):
            render_variant(png_declaring(width, height), RenderSpec(10, 10, False, "PNG", None))
    assert decoded == []
    # Real images that compress extremely well are not mistaken for such files.
    for mode in ("1", "P", "L", "RGB", "RGBA"):
        flat = image_bytes("PNG", size=(2500, 2500), mode=mode, color=0, compress_level=9)
        assert probe(flat, SourceLimits()).width == 2500, mode
    gif = image_bytes("GIF", size=(2500, 2500), mode="P", color=0)
    assert probe(gif, SourceLimits()).width == 2500


# -- oversized request heads --------------------------------------------------------


def _answer(raw: bytes) -> tuple[bytes, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"\r\ncontent-type: application/json" in head.lower(), head
    return head.split(b"\r\n")[0], json.loads(body)


@pytest_twisted.ensureDeferred
async def test_oversized_request_heads_get_414_or_431_with_the_envelope(server):
    host = b"Host: x\r\n"
    cases = {
        # request line over the URI limit (8192), whole or never ending
        b"GET /health?" + b"a" * 9000 + b" HTTP/1.1\r\n" + host + b"\r\n": b"414",
        b"GET /health?" + b"a" * 100_000: b"414",
        b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n" + host + b"\r\n": b"414",
        # one header line over the head limit (16384), whole or never ending
        b"GET /health HTTP/1.1\r\n" + host + b"X-Big: " + b"a" * 17_000 + b"\r\n\r\n": b"431",
        b"GET /health HTTP/1.1\r\n" + host + b"X-Big: " + b"a" * 100_000: b"431",
        # many small header lines that add up to more than the limit
        b"GET /health HTTP/1.1\r\n" + host
        + b"".join(b"X-%d: %s\r\n" % (n, b"a" * 90) for n in range(200)) + b"\r\n": b"431",
        # a request line Twisted cannot parse
        b"NONSENSE\r\n\r\n": b"400",
    }
    for request, status in cases.items():
        first_line, body = _answer(await raw_request(server, request))
        assert first_line.startswith(b"HTTP/1.1 " + status + b" "), (request[:40], first_line)
        assert body["error"]["title"] and body["error"]["message"], body
    # A long but allowed head is still served.
    fine = await raw_request(server, b"GET /health?" + b"a" * 8000 + b" HTTP/1.0\r\n" + host
                             + b"X-Big: " + b"a" * 15_000 + b"\r\n\r\n")
    assert fine.startswith(b"HTTP/1.0 200 "), fine[:100]
    assert (await server.client.get("/health")).code == 200


@pytest_twisted.ensureDeferred
async def test_a_nul_in_an_upload_description_is_422(server, admin):
    response = await admin.upload("/api/upload", image_bytes(), fields={"description": "a\0b"})
    error = await refused(server, response, 422)
    assert error["violations"][0]["property"] == "description"


@pytest_twisted.ensureDeferred
async def test_nul_in_a_path_is_404_and_in_a_query_parameter_400(server, admin):
    for path in ("/api/images/1?searchTerm=a%00b", "/api/images/1?searchTerm=a%00&searchBy=user",
                 "/api/images?uuid[]=%00", "/api/images/history/1?limit=%00"):
        await refused(server, await admin.get(path), 400)
    await refused(server, await admin.get("/api/image/%00/detail"), 404)
    await refused(server, await admin.request("DELETE", "/api/user/api-keys/%00"), 404)
    await refused(server, await admin.request("PATCH", "/api/image/a%00b"), 404)
