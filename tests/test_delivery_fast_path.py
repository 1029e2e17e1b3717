"""Cache hits answered without a database read stay correct when images go away."""

from __future__ import annotations

import io
import socket
import time

import pytest_twisted
import sqlalchemy as sa
from PIL import Image
from twisted.internet.defer import DeferredList
from twisted.internet.threads import deferToThread

from tests.conftest import image_bytes, running_server
from tests.test_delivery import raw_request, views_in_db

REVALIDATE_AFTER = 1.0


@pytest_twisted.async_yield_fixture
async def bounded(tmp_path, reactor, database_url):
    """A daemon that trusts a remembered image for REVALIDATE_AFTER seconds."""
    sections = {"cache": {"revalidate_after": REVALIDATE_AFTER}}
    async with running_server(tmp_path, reactor, database_url, sections) as running:
        yield running


async def sleep(reactor, seconds: float) -> None:
    from twisted.internet.task import deferLater

    await deferLater(reactor, seconds, lambda: None)


async def upload(client, data: bytes) -> str:
    response = await client.upload("/api/upload", data)
    assert response.code == 201, response.body
    return response.json()["id"]


def delete_row(server, image_id: str) -> None:
    """Remove the record as another daemon sharing the database would."""
    engine = sa.create_engine(server.db.engine.url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM images WHERE id = :id"), {"id": image_id})
    finally:
        engine.dispose()


@pytest_twisted.ensureDeferred
async def test_no_database_read_within_the_bound_then_404(bounded, reactor):
    server = bounded
    admin = await server.admin()
    image_id = await upload(admin, image_bytes("JPEG", (400, 300)))
    url = f"/image/{image_id}.webp?w=120"
    first = await server.client.get(url)
    second = await server.client.get(url)
    assert (first.header("X-Cache"), second.header("X-Cache")) == ("MISS", "HIT")
    assert second.body == first.body
    # The record is gone from the database (another daemon deleted it, keeping the
    # original): within the bound this daemon reads nothing from the database, so the
    # hit, a new size and the original are all still served...
    delete_row(server, image_id)
    other_size = f"/image/{image_id}.webp?w=121"
    for path in (url, other_size, f"/image/{image_id}.jpg"):
        assert (await server.client.get(path)).code == 200, path
    # ...and once the bound has passed, every URL asks, answers 404, and the dead variant
    # files go away.
    await sleep(reactor, REVALIDATE_AFTER + 0.2)
    for path in (url, other_size, f"/image/{image_id}.jpg"):
        gone = await server.client.get(path)
        assert gone.code == 404, (path, gone.body)
    variants = server.imagehost.storage.variants_dir(image_id)
    for _ in range(50):
        if not variants.exists():
            break
        await sleep(reactor, 0.05)
    assert not variants.exists()


@pytest_twisted.ensureDeferred
async def test_hits_keep_being_served_across_revalidations(bounded, reactor):
    server = bounded
    admin = await server.admin()
    image_id = await upload(admin, image_bytes("PNG", (300, 200)))
    url = f"/image/{image_id}.png?w=60"
    assert (await server.client.get(url)).header("X-Cache") == "MISS"
    await sleep(reactor, REVALIDATE_AFTER + 0.2)
    again = await server.client.get(url)
    assert (again.code, again.header("X-Cache")) == (200, "HIT")


def answer_on(s: socket.socket) -> tuple[str, dict[str, str]]:
    """Read one answer (status line and headers; the body is read and dropped)."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        buffer += _recv(s)
    head, body = buffer.split(b"\r\n\r\n", 1)
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    while len(body) < int(headers["Content-Length"]):
        body += _recv(s)
    return status, headers


def together_after(port: int, request: bytes, connections: int, pause: float) -> list:
    """Open keep-alive connections (one request each), wait ``pause`` seconds, then send
    ``request`` on all of them at once: the answers to that."""
    sockets = [socket.create_connection(("127.0.0.1", port), timeout=10)
               for _ in range(connections)]
    try:
        for s in sockets:
            s.sendall(request)
            answer_on(s)
        time.sleep(pause)
        for s in sockets:
            s.sendall(request)
        return [answer_on(s) for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest_twisted.ensureDeferred
async def test_requests_at_the_bound_share_one_read_of_the_record(bounded, reactor):
    server = bounded
    admin = await server.admin()
    image_id = await upload(admin, image_bytes("JPEG", (400, 300)))
    url = f"/image/{image_id}.jpg?w=90"
    assert (await server.client.get(url)).header("X-Cache") == "MISS"
    reads = []

    def count(_conn, _cursor, statement, parameters, _context, _many):
        if "FROM images" in statement and image_id in str(parameters):
            reads.append(statement)

    port = int(server.base_url.rsplit(":", 1)[1])
    request = f"GET {url} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    sa.event.listen(server.db.engine, "before_cursor_execute", count)
    try:
        # The pause makes the remembered record stale: all 8 requests find it so at once.
        answers = await deferToThread(together_after, port, request, 8, REVALIDATE_AFTER + 0.2)
    finally:
        sa.event.remove(server.db.engine, "before_cursor_execute", count)
    assert [(status, h["X-Cache"]) for status, h in answers] == [("HTTP/1.1 200 OK", "HIT")] * 8
    assert len(reads) == 1, reads


@pytest_twisted.ensureDeferred
async def test_delete_preserving_the_original_ends_hits_and_renders(server, admin):
    image_id = await upload(admin, image_bytes("JPEG", (400, 300)))
    urls = [f"/image/{image_id}.png?w=50", f"/image/{image_id}_thumbnail.jpg",
            f"/image/{image_id}.jpg"]
    for url in urls * 2:
        assert (await server.client.get(url)).code == 200
    response = await admin.request("DELETE", f"/api/image/{image_id}",
                                   data=b'{"preserveOnDisk": true}',
                                   headers={"Content-Type": "application/json"})
    assert response.code == 204, response.body
    for url in urls:
        assert (await server.client.get(url)).code == 404, url


@pytest_twisted.ensureDeferred
async def test_an_empty_cache_file_is_a_miss_not_an_empty_image(server, admin):
    image_id = await upload(admin, image_bytes("JPEG", (400, 300)))
    url = f"/image/{image_id}.png?w=50"
    first = await server.client.get(url)
    await server.imagehost.delivery.written()
    [cached] = [p for p in (server.data_dir / "cache").rglob("*") if p.is_file()
                and p.name.startswith("r1-50x")]  # (not the eager thumbnail)
    cached.write_bytes(b"")  # what a power cut after an unsynced rename can leave
    again = await server.client.get(url)
    assert again.code == 200
    assert again.header("X-Cache") != "HIT"
    assert again.body == first.body


# -- hits answered at once, without the route ---------------------------------


async def rendered_once(server, admin, variant: str):
    """Upload a JPEG and render ``variant`` (``.png?w=50``) of it once, its cache file
    written: (url, answer)."""
    image_id = await upload(admin, image_bytes("JPEG", (400, 300)))
    await server.imagehost.delivery.rendered_ahead(image_id)
    url = f"/image/{image_id}{variant}"
    first = await server.client.get(url)
    assert first.header("X-Cache") == "MISS"
    await server.imagehost.delivery.written()
    return url, first


@pytest_twisted.ensureDeferred
async def test_a_hit_answered_at_once_is_the_same_answer_as_the_routes(server, admin):
    delivery = server.imagehost.delivery
    url, _first = await rendered_once(server, admin, ".png?w=50")
    image_id = url.split("/")[2].split(".")[0]
    delivery.forget(image_id)  # the next request reads the record: the route answers
    by_route = await deferToThread(raw_request, server.base_url, "GET", url)
    assert delivery.immediate_hits == 0
    at_once = await deferToThread(raw_request, server.base_url, "GET", url)
    assert delivery.immediate_hits == 1
    for answer in (by_route, at_once):
        answer[1].pop("Date")
    assert at_once == by_route and at_once[1]["X-Cache"] == "HIT"
    head = await deferToThread(raw_request, server.base_url, "HEAD", f"/api{url}")
    assert (head[0], head[1]["Content-Length"], head[2]) == (200, str(len(at_once[2])), b"")
    assert delivery.immediate_hits == 2
    etag = at_once[1]["ETag"]
    again = await server.client.request("GET", url, headers={"If-None-Match": etag})
    assert (again.code, again.body, again.header("ETag")) == (304, b"", etag)
    await delivery.views.flush()
    # Every GET answered 200 counted a view, whichever way it was answered (not HEAD, 304).
    assert views_in_db(server, image_id) == 3


@pytest_twisted.ensureDeferred
async def test_what_cannot_be_answered_at_once_goes_to_the_route(server, admin):
    image_id = await upload(admin, image_bytes("JPEG", (400, 300)))
    await server.imagehost.delivery.rendered_ahead(image_id)
    bad = await server.client.get(f"/image/{image_id}.png?w=0")
    assert bad.code == 400 and bad.json()["error"]["title"] == "BadRequest"
    missing = await server.client.get(f"/image/{image_id}.png?w=51")
    assert missing.header("X-Cache") == "MISS"
    original = await server.client.get(f"/image/{image_id}.jpg")
    assert original.code == 200 and original.header("X-Cache") is None
    unknown = await server.client.get(f"/image/{image_id}.txt")
    assert unknown.code == 404
    assert server.imagehost.delivery.immediate_hits == 0


def exchange(port: int, data: bytes, answers: int, timeout: float = 10.0):
    """Send ``data`` on one connection and read ``answers`` responses in order, each as
    (status line, headers, body); then whether the server closed the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        buffer, responses = b"", []
        while len(responses) < answers:
            while b"\r\n\r\n" not in buffer:
                buffer += _recv(s)
            head, buffer = buffer.split(b"\r\n\r\n", 1)
            status, *lines = head.decode("latin-1").split("\r\n")
            headers = dict(line.split(": ", 1) for line in lines)
            length = 0 if status.split()[1] == "304" or responses_head(data, responses) \
                else int(headers["Content-Length"])
            while len(buffer) < length:
                buffer += _recv(s)
            responses.append((status, headers, buffer[:length]))
            buffer = buffer[length:]
        s.settimeout(2.0)
        try:
            closed = s.recv(1) == b""
        except TimeoutError:
            closed = False
        return responses, closed


def responses_head(data: bytes, responses: list) -> bool:
    """Whether the request that the next response answers is a HEAD."""
    return data.split(b"\r\n\r\n")[len(responses)].startswith(b"HEAD ")


def _recv(s: socket.socket) -> bytes:
    chunk = s.recv(65536)
    if not chunk:
        raise ConnectionError("the server closed the connection early")
    return chunk


@pytest_twisted.ensureDeferred
async def test_hits_at_once_keep_http_keep_alive_pipelining_head_and_304(server, admin):
    delivery = server.imagehost.delivery
    url, first = await rendered_once(server, admin, ".jpg?w=80")
    port = int(server.base_url.rsplit(":", 1)[1])
    etag = first.header("ETag").encode()
    get = b"GET " + url.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    head = b"HEAD /api" + url.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    conditional = (b"GET " + url.encode() + b" HTTP/1.1\r\nHost: x\r\nIf-None-Match: " + etag
                   + b"\r\n\r\n")
    # Four requests sent at once on one keep-alive connection: answered in order.
    answers, closed = await deferToThread(exchange, port, get + head + conditional + get, 4)
    assert [status for status, _, _ in answers] == [
        "HTTP/1.1 200 OK", "HTTP/1.1 200 OK", "HTTP/1.1 304 Not Modified", "HTTP/1.1 200 OK"]
    assert answers[0][2] == answers[3][2] == first.body
    assert answers[1][2] == b"" and answers[1][1]["Content-Length"] == str(len(first.body))
    assert answers[2][1]["ETag"] == etag.decode()
    for _status, headers, _body in answers:
        assert "Connection" not in headers and headers["X-Content-Type-Options"] == "nosniff"
    assert [h.get("X-Cache") for _, h, _ in answers] == ["HIT", "HIT", None, "HIT"]
    assert not closed  # still open for the next request
    assert delivery.immediate_hits == 3
    # A client that asks to close, and an HTTP/1.0 one: answered, then the server closes.
    for request, status, connection in (
            (get.replace(b"Host: x", b"Host: x\r\nConnection: close"), "HTTP/1.1 200 OK",
             "close"),
            (get.replace(b"HTTP/1.1", b"HTTP/1.0"), "HTTP/1.0 200 OK", None)):
        [(line, headers, body)], closed = await deferToThread(exchange, port, request, 1)
        assert (line, body, headers["X-Cache"]) == (status, first.body, "HIT")
        assert headers.get("Connection") == connection and "Date" in headers
        assert closed
    assert delivery.immediate_hits == 5


@pytest_twisted.ensureDeferred
async def test_an_image_expiring_is_no_hit_after_its_expiry(server, admin, reactor):
    response = await admin.upload("/api/upload", image_bytes("JPEG", (400, 300)),
                                  fields={"expiresIn": "3"})  # slack for a busy machine
    assert response.code == 201, response.body
    image_id = response.json()["id"]
    url = f"/image/{image_id}.jpg?w=80"
    assert (await server.client.get(url)).header("X-Cache") == "MISS"
    for _ in range(2):  # the second is answered from what the first prepared
        hit = await server.client.get(url)
        assert (hit.code, hit.header("X-Cache")) == (200, "HIT")
        assert int(hit.header("Cache-Control").split("max-age=")[1]) <= 3
    await sleep(reactor, 3.2)  # within revalidate_after: the record is not read again
    assert (await server.client.get(url)).code == 404


# -- misses of remembered images, rendered without the route ------------------------


@pytest_twisted.ensureDeferred
async def test_a_miss_answered_at_once_is_the_same_answer_as_the_routes(server, admin):
    delivery = server.imagehost.delivery
    image_id = await upload(admin, image_bytes("JPEG", (400, 300)))
    await delivery.rendered_ahead(image_id)
    at_once = await deferToThread(raw_request, server.base_url, "GET",
                                  f"/image/{image_id}.png?w=50")
    assert (at_once[0], at_once[1]["X-Cache"]) == (200, "MISS")
    assert delivery.immediate_misses == 1
    delivery.forget(image_id)  # the next request reads the record: the route answers
    by_route = await deferToThread(raw_request, server.base_url, "GET",
                                   f"/api/image/{image_id}.png?w=60")
    assert (by_route[0], by_route[1]["X-Cache"]) == (200, "MISS")
    assert delivery.immediate_misses == 1
    for answer, width in ((at_once, 50), (by_route, 60)):
        answer[1].pop("Date")
        assert answer[1].pop("ETag") != answer[1].pop("X-Cache")  # (differ by variant)
        assert Image.open(io.BytesIO(answer[2])).size == (width, round(width * 0.75))
        assert answer[1].pop("Content-Length") == str(len(answer[2]))
    assert at_once[1] == by_route[1]  # every other header the same
    # Concurrent misses of one variant still share one render; each is answered.
    renders = delivery.renders
    urls = [f"/image/{image_id}.webp?w=70"] * 3
    answers = await DeferredList([deferToThread(raw_request, server.base_url, "GET", u)
                                  for u in urls], consumeErrors=False)
    bodies = {body for _ok, (_status, _headers, body) in answers}
    assert {status for _ok, (status, _h, _b) in answers} == {200} and len(bodies) == 1
    assert delivery.renders == renders + 1
    await delivery.views.flush()
    assert views_in_db(server, image_id) == 5  # every GET answered 200 counted a view


@pytest_twisted.ensureDeferred
async def test_a_miss_that_fails_gets_the_envelope_without_the_image_headers(server, admin):
    delivery = server.imagehost.delivery
    image_id = await upload(admin, image_bytes("JPEG", (400, 300)))
    await delivery.rendered_ahead(image_id)
    server.imagehost.storage.local_original(image_id, "jpg").unlink()  # damaged storage
    at_once = await server.client.get(f"/image/{image_id}.png?w=50")
    assert delivery.immediate_misses == 1
    delivery.forget(image_id)
    by_route = await server.client.get(f"/image/{image_id}.png?w=60")
    assert delivery.immediate_misses == 1
    for answer in (at_once, by_route):
        assert answer.code == 404 and answer.json()["error"]["title"] == "NotFound"
        # Nothing that would let a cache keep the error for a year, or revalidate it.
        assert answer.header("Cache-Control") is None and answer.header("ETag") is None


@pytest_twisted.ensureDeferred
async def test_a_head_of_a_miss_goes_to_the_route(server, admin):
    delivery = server.imagehost.delivery
    image_id = await upload(admin, image_bytes("JPEG", (400, 300)))
    await delivery.rendered_ahead(image_id)
    status, headers, body = await deferToThread(raw_request, server.base_url, "HEAD",
                                                f"/image/{image_id}.png?w=50")
    assert (status, body, headers["X-Cache"]) == (200, b"", "MISS")
    assert int(headers["Content-Length"]) > 0
    assert delivery.immediate_misses == 0


@pytest_twisted.ensureDeferred
async def test_a_client_gone_during_the_render_of_a_miss_leaves_it_cached(server, admin,
                                                                           reactor):
    delivery = server.imagehost.delivery
    image_id = await upload(admin, image_bytes("JPEG", (2000, 1500)))
    await delivery.rendered_ahead(image_id)
    port = int(server.base_url.rsplit(":", 1)[1])
    url = f"/image/{image_id}.png?w=1900"

    def ask_and_hang_up() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET " + url.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n")

    await deferToThread(ask_and_hang_up)
    for _ in range(200):
        if delivery.renders:
            break
        await sleep(reactor, 0.05)
    assert delivery.immediate_misses == 1 and delivery.renders == 1
    again = await server.client.get(url)
    assert (again.code, again.header("X-Cache")) == (200, "HIT")
