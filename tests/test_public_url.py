"""Absolute URLs in pages (OpenGraph, share snippets) never carry a forged Host header:
``[server] public_url`` wins when set; without it the Host must be a host name."""

from __future__ import annotations

import json
import re

import pytest
import pytest_twisted

from imagehost.config import ConfigError, load_config
from tests.conftest import image_bytes, running_server
from tests.test_bad_input import raw_request

PUBLIC_URL = "https://img.example.com"


@pytest_twisted.async_yield_fixture
async def configured(tmp_path, reactor, database_url):
    """A daemon with ``[server] public_url`` set."""
    sections = {"server": {"public_url": PUBLIC_URL + "/"}}
    async with running_server(tmp_path, reactor, database_url, sections) as running:
        yield running


async def public_image(server) -> str:
    admin = await server.admin()
    uploaded = await admin.upload("/api/upload", image_bytes(size=(800, 400)),
                                  fields={"isPublic": "true"})
    assert uploaded.code == 201, uploaded.body
    return uploaded.json()["id"]


async def page(server, path: str, host: str | None, accept: str = "text/html"):
    """GET ``path`` with this Host header (none at all for None): (status, head, body)."""
    host_line = "" if host is None else f"Host: {host}\r\n"
    answer = await raw_request(server, f"GET {path} HTTP/1.0\r\n{host_line}Accept: {accept}"
                                       "\r\nConnection: close\r\n\r\n".encode("latin-1"))
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head.decode("latin-1"), body.decode()


def og_image(body: str) -> str:
    return re.search(r'<meta property="og:image" content="([^"]+)"', body).group(1)


@pytest_twisted.ensureDeferred
async def test_with_a_public_url_a_forged_host_changes_no_absolute_url(configured):
    image_id = await public_image(configured)
    for host in ("evil.example", "evil.example:8080", None):
        status, _head, body = await page(configured, f"/i/{image_id}", host)
        assert status == 200, host
        assert og_image(body) == f"{PUBLIC_URL}/image/{image_id}.jpg", host
        assert "evil" not in body, host


@pytest_twisted.ensureDeferred
async def test_without_one_the_host_must_be_a_host_name(server):
    image_id = await public_image(server)
    port = server.base_url.rsplit(":", 1)[1]
    for host, base in (("img.example.org", "http://img.example.org"),
                       (f"127.0.0.1:{port}", server.base_url),
                       ("[::1]:8080", "http://[::1]:8080"),
                       ("image_host:8080", "http://image_host:8080"),  # a Compose service
                       (None, server.base_url)):  # HTTP/1.0 without Host: where it came
        status, _head, body = await page(server, f"/i/{image_id}", host)
        assert (status, og_image(body)) == (200, f"{base}/image/{image_id}.jpg"), host
    # Not a host (RFC 9112 3.2: 400), on every route: "a..b" was a 500 (werkzeug's BadHost).
    for forged in ("evil.example/x", "evil.example@x", "a b", 'x"><script>', "[::1",
                   "[evil]:80", "x:99999", "x:abc", "x:", "-x.example", "a..b", "x" * 300):
        for path in (f"/i/{image_id}", "/health", f"/image/{image_id}.png?w=20", "/login"):
            status, head, body = await page(server, path, forged)
            assert status == 400, (forged, path)
            assert forged not in body and "\r\nlocation:" not in head.lower(), forged
            assert json.loads(body)["error"] == {
                "title": "BadRequest", "message": "The Host header does not name a host."}
    two = await raw_request(server, b"GET /health HTTP/1.0\r\nHost: a.example\r\n"
                                    b"Host: evil.example\r\nConnection: close\r\n\r\n")
    assert two.startswith(b"HTTP/1.0 400 "), two


@pytest_twisted.ensureDeferred
async def test_an_http11_request_without_host_is_a_400_with_the_envelope(server):
    """RFC 9112 3.2: a server MUST answer 400 to an HTTP/1.1 request that lacks Host
    (HTTP/1.0 may leave it out, as the test above shows)."""
    image_id = await public_image(server)
    cached = f"/image/{image_id}.png?w=20"
    assert (await server.client.get(cached)).code == 200  # now a hit for the fast path
    for path in (f"/i/{image_id}", "/health", cached, "/api/settings/public", "/login"):
        for host_line in (b"", b"Host: img.example.org\r\n"):
            answer = await raw_request(server, b"GET " + path.encode() + b" HTTP/1.1\r\n"
                                       + host_line + b"Connection: close\r\n\r\n")
            head, _, body = answer.partition(b"\r\n\r\n")
            if host_line:
                assert head.startswith(b"HTTP/1.1 200 "), (path, head)
                continue
            assert head.startswith(b"HTTP/1.1 400 "), (path, head)
            assert b"\r\ncontent-type: application/json" in head.lower(), head
            assert json.loads(body)["error"] == {
                "title": "BadRequest",
                "message": "An HTTP/1.1 request must carry a Host header."}


@pytest.mark.parametrize("value", ["img.example.com", "ftp://img.example.com", "https://",
                                   "https://user:pw@img.example.com", "http://x:0",
                                   "https://img.example.com/?a=1"])
def test_a_public_url_that_is_no_absolute_http_url_is_one_clear_config_error(value):
    with pytest.raises(ConfigError, match="PUBLIC_URL: must be an absolute http"):
        load_config(environ={"IMAGEHOST_SERVER_PUBLIC_URL": value})


def test_unset_the_cli_tells_clients_the_default_listener():
    config = load_config(environ={})
    assert (config.server.public_url, config.server.client_url()) == (
        "", "http://localhost:8080")
    config = load_config(environ={"IMAGEHOST_SERVER_PUBLIC_URL": "https://i.example/"})
    assert config.server.client_url() == "https://i.example"
