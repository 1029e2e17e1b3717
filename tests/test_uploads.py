"""The three upload endpoints, their validation messages, body limits and delivery of originals."""

import io
import socket

import pytest
import pytest_twisted
from PIL import Image
from twisted.internet.threads import deferToThread

from imagehost.db.images import image_by_id
from tests.conftest import image_bytes

ENDPOINTS = ("/api/upload", "/api/guest/upload", "/api/external/upload")
PDF = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"


async def credentials(server, admin):
    """A token that works on each endpoint: JWT, nothing (guest), API key."""
    key = (await admin.post_json("/api/user/api-keys", {"name": "t"})).json()["key"]
    await admin.post_json("/api/settings", {"category": "access",
                                            "settings": {"allowGuestUploads": True}})
    return {"/api/upload": admin.token, "/api/guest/upload": "",
            "/api/external/upload": key}


@pytest.mark.parametrize("method", ["POST", "PUT"])
@pytest_twisted.ensureDeferred
async def test_every_endpoint_accepts_post_and_put(server, admin, method):
    tokens = await credentials(server, admin)
    for endpoint in ENDPOINTS:
        data = image_bytes("PNG", color=(1, 2, 3))
        response = await server.client.upload(endpoint, data, method=method,
                                              token=tokens[endpoint], filename="a.png")
        assert response.code == 201, (endpoint, response.body)
        body = response.json()
        image_id = body["id"]
        if endpoint == "/api/external/upload":
            assert body == {"id": image_id, "url": f"/api/image/{image_id}.png",
                            "thumbnailUrl": f"/api/image/{image_id}_thumbnail.png"}
        else:
            assert body == {"id": image_id}
        for prefix in ("/image/", "/api/image/"):
            served = await server.client.get(f"{prefix}{image_id}.png")
            assert served.code == 200
            assert served.body == data
            assert served.header("Content-Type") == "image/png"


@pytest_twisted.ensureDeferred
async def test_type_comes_from_the_bytes_not_the_name(server, admin):
    png = image_bytes("PNG")
    response = await admin.upload("/api/upload", png, filename="lies.jpg")
    image = await server.db.run(image_by_id, response.json()["id"])
    assert (image.mime_type, image.width, image.height) == ("image/png", 64, 48)
    assert (image.file_name, image.original_name) == (f"{image.id}.png", "lies.jpg")
    assert (await server.client.get(f"/image/{image.id}.png")).body == png


@pytest_twisted.ensureDeferred
async def test_fields_owner_and_visibility_are_recorded(server, admin):
    response = await admin.upload("/api/upload", image_bytes(),
                                  fields={"description": "sunset", "isPublic": "true"},
                                  filename="../../etc/passwd")
    image = await server.db.run(image_by_id, response.json()["id"])
    me = (await admin.get("/api/user")).json()["data"]
    assert (image.description, image.is_public, image.owner_id) == ("sunset", True, me["id"])
    assert image.original_name == "passwd"
    private = await admin.upload("/api/upload", image_bytes())
    image = await server.db.run(image_by_id, private.json()["id"])
    assert image.is_public is False


@pytest_twisted.ensureDeferred
async def test_guest_uploads_follow_the_runtime_setting_and_are_public_and_ownerless(
        server, admin):
    refused = await server.client.upload("/api/guest/upload", image_bytes())
    assert refused.code == 403
    assert refused.json()["error"]["message"] == "Guest uploads are disabled."
    await admin.post_json("/api/settings", {"category": "access",
                                            "settings": {"allowGuestUploads": True}})
    accepted = await server.client.upload("/api/guest/upload", image_bytes(),
                                          fields={"isPublic": "false"})
    assert accepted.code == 201
    image = await server.db.run(image_by_id, accepted.json()["id"])
    assert (image.owner_id, image.is_public) == (None, True)
    await server.imagehost.settings.update("access", {"allowGuestUploads": False})
    assert (await server.client.upload("/api/guest/upload", image_bytes())).code == 403


@pytest_twisted.ensureDeferred
async def test_authentication_per_endpoint(server, admin):
    assert (await server.client.upload("/api/upload", image_bytes())).code == 401
    assert (await server.client.upload("/api/external/upload", image_bytes())).code == 401
    # The external endpoint is for API keys only.
    jwt_on_external = await admin.upload("/api/external/upload", image_bytes())
    assert jwt_on_external.code == 401


def violation(response) -> str:
    assert response.code == 422, response.body
    error = response.json()["error"]
    assert error["title"] == "Symfony.Component.HttpKernel.Exception.HttpException"
    assert error["message"] == "Validation Error"
    [only] = error["violations"]
    assert only["property"] == "image"
    return only["message"]


@pytest_twisted.ensureDeferred
async def test_seed_validation_messages(server, admin):
    # The seed's installation accepts these four (the default adds image/heic).
    seed_types = ["image/jpeg", "image/png", "image/webp", "image/gif"]
    await admin.post_json("/api/settings", {"category": "image", "settings": {
        "maxSize": 1000000, "allowedMimeTypes": seed_types}})
    big = image_bytes("PNG", size=(1, 1)) + b"\0" * 2_140_000
    assert violation(await admin.upload("/api/upload", big)) == (
        "The file is too large (2.14 MB). Allowed maximum size is 1 MB.")
    assert violation(await admin.upload("/api/upload", PDF, filename="doc.jpg")) == (
        'The mime type of the file is invalid ("application/pdf"). Allowed mime types are '
        '"image/jpeg", "image/png", "image/webp", "image/gif".')
    bmp = image_bytes("BMP")
    assert violation(await admin.upload("/api/upload", bmp)).startswith(
        'The mime type of the file is invalid ("image/bmp").')
    truncated = image_bytes("JPEG", size=(400, 300))[:-400]
    assert violation(await admin.upload("/api/upload", truncated)) == (
        "The image file is corrupted.")
    assert violation(await admin.upload("/api/upload", b"")).startswith(
        "The mime type of the file is invalid")
    missing = await admin.request("POST", "/api/upload", data={"description": "no file"},
                                  files={"other": ("x.jpg", "image/jpeg", io.BytesIO(b"x"))})
    assert violation(missing) == "This value should not be null."


@pytest_twisted.ensureDeferred
async def test_size_limit_message_uses_two_decimals(server, admin):
    await admin.post_json("/api/settings", {"category": "image", "settings": {"maxSize": 1500000}})
    big = image_bytes("PNG", size=(1, 1)) + b"\0" * 2_000_000
    assert violation(await admin.upload("/api/upload", big)) == (
        f"The file is too large ({len(big) / 1e6:.2f} MB). Allowed maximum size is 1.5 MB.")


@pytest_twisted.ensureDeferred
async def test_malformed_forms_get_400(server, admin):
    not_multipart = await admin.request("POST", "/api/upload", data=b"hello",
                                        headers={"Content-Type": "text/plain"})
    assert not_multipart.code == 400
    no_boundary = await admin.request("POST", "/api/upload", data=b"x",
                                      headers={"Content-Type": "multipart/form-data"})
    assert no_boundary.code == 400
    wrong_boundary = await admin.request(
        "POST", "/api/upload", data=b"--other\r\n\r\nx\r\n--other--\r\n",
        headers={"Content-Type": "multipart/form-data; boundary=expected"})
    assert wrong_boundary.code == 400
    twice = (b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a\"\r\n\r\n"
             b"x\r\n--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"b\"\r\n"
             b"\r\ny\r\n--b--\r\n")
    duplicated = await admin.request("POST", "/api/upload", data=twice,
                                     headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert duplicated.code == 400
    for response in (not_multipart, no_boundary, wrong_boundary, duplicated):
        assert response.json()["error"]["message"]
    long_description = await admin.upload("/api/upload", image_bytes(),
                                          fields={"description": "x" * 256})
    assert long_description.code == 422
    bad_flag = await admin.upload("/api/upload", image_bytes(), fields={"isPublic": "maybe"})
    assert bad_flag.code == 422


def raw_exchange(port: int, head: bytes, body_chunks=(), read_timeout=5.0) -> bytes:
    """Send a request by hand and return what the server answers (blocking)."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as s:
        s.sendall(head)
        for chunk in body_chunks:
            try:
                s.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
        answer = b""
        while True:
            try:
                data = s.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            answer += data
    return answer


@pytest_twisted.ensureDeferred
async def test_a_declared_body_over_the_cap_is_refused_before_it_is_sent(make_server):
    server = await make_server({"server": {"max_body_size": 100000}})
    port = int(server.base_url.rsplit(":", 1)[1])
    head = (b"POST /api/guest/upload HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\n"
            b"Expect: 100-continue\r\nContent-Length: 1000000000\r\n\r\n")
    # Only the head is sent: a 413 proves the server did not wait for a gigabyte.
    answer = await deferToThread(raw_exchange, port, head)
    assert answer.startswith(b"HTTP/1.1 413 "), answer
    assert b"100 Continue" not in answer
    assert b'"title":"PayloadTooLarge"' in answer.replace(b" ", b"")
    assert (await server.client.get("/health")).code == 200


@pytest_twisted.ensureDeferred
async def test_a_chunked_body_over_the_cap_is_cut_off(make_server):
    server = await make_server({"server": {"max_body_size": 100000}})
    port = int(server.base_url.rsplit(":", 1)[1])
    head = (b"PUT /api/guest/upload HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (50000, b"a" * 50000)
    answer = await deferToThread(raw_exchange, port, head, [chunk] * 5)
    assert answer.startswith(b"HTTP/1.1 413 "), answer
    assert not list((server.data_dir / "originals").rglob("*.*"))


@pytest_twisted.ensureDeferred
async def test_unknown_images_and_wrong_extensions_are_404(server, admin):
    image_id = (await admin.upload("/api/upload", image_bytes())).json()["id"]
    for path in ("/image/00000000-0000-0000-0000-000000000000.jpg",
                 f"/image/{image_id}.exe", f"/image/{image_id}", "/image/..%2F..%2Fetc.jpg",
                 f"/api/image/{image_id.upper()}.jpg"):
        response = await server.client.get(path)
        assert response.code == 404, path
        assert response.json()["error"]["title"] == "NotFound"
    jpeg = await server.client.get(f"/image/{image_id}.jpeg")
    assert jpeg.code == 200
    assert Image.open(io.BytesIO(jpeg.body)).size == (64, 48)


@pytest_twisted.ensureDeferred
async def test_a_failed_upload_leaves_no_file_behind(server, admin):
    await admin.upload("/api/upload", PDF)
    await admin.upload("/api/upload", image_bytes("JPEG", size=(300, 300))[:-300])
    assert not [p for p in (server.data_dir / "originals").rglob("*") if p.is_file()]


@pytest_twisted.ensureDeferred
async def test_slow_heads_long_uris_and_huge_headers_are_refused(make_server):
    server = await make_server({"server": {
        "header_timeout": 0.5, "max_uri_length": 200, "max_header_size": 2000}})
    port = int(server.base_url.rsplit(":", 1)[1])
    # A head that never ends is cut off after header_timeout, not the idle timeout.
    slow = await deferToThread(raw_exchange, port, b"GET /health HTTP/1.1\r\nHost: x\r\n")
    assert slow.startswith(b"HTTP/1.1 408 "), slow
    long_uri = await server.client.get("/health?" + "a" * 300)
    assert long_uri.code == 414
    assert long_uri.json()["error"]["title"] == "URITooLong"
    huge = await deferToThread(
        raw_exchange, port, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 3000
        + b"\r\n\r\n")
    assert huge.startswith(b"HTTP/1.1 431 "), huge
    assert (await server.client.get("/health")).code == 200
