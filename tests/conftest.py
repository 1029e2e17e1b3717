"""Shared fixtures: a real imagehost daemon on 127.0.0.1 and a small HTTP client for it.

The daemon is built by the same ``makeService`` twistd uses, listening on port 0.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from PIL import Image

ADMIN = ("admin", "admin-password-1", "admin@example.com")


@pytest.fixture
def reactor():
    from twisted.internet import reactor

    return reactor


def write_ini(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {value}" for key, value in values.items())
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Response:
    code: int
    headers: Any
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None


@dataclass
class Client:
    """treq against the running daemon; ``token`` is sent as a Bearer credential."""

    base_url: str
    token: str | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)

    def with_token(self, token: str | None) -> Client:
        return Client(self.base_url, token, dict(self.extra_headers))

    async def request(self, method: str, path: str, *, token: str | None = None,
                      headers: dict[str, str] | None = None, **kwargs) -> Response:
        import treq

        all_headers = dict(self.extra_headers)
        bearer = token if token is not None else self.token
        if bearer:
            all_headers["Authorization"] = f"Bearer {bearer}"
        all_headers.update(headers or {})
        response = await treq.request(method, self.base_url + path, headers=all_headers,
                                      **kwargs)
        body = await response.content()
        return Response(response.code, response.headers, body)

    async def get(self, path: str, **kwargs) -> Response:
        return await self.request("GET", path, **kwargs)

    async def post_json(self, path: str, body: Any, method: str = "POST",
                        **kwargs) -> Response:
        return await self.request(method, path, data=json.dumps(body).encode(),
                                  headers={"Content-Type": "application/json"}, **kwargs)

    async def upload(self, path: str, data: bytes, *, method: str = "POST",
                     filename: str = "photo.jpg", fields: dict[str, str] | None = None,
                     **kwargs) -> Response:
        files = {"image": (filename, "application/octet-stream", io.BytesIO(data))}
        return await self.request(method, path, data=fields or {}, files=files, **kwargs)

    async def login(self, username: str = ADMIN[0], password: str = ADMIN[1]) -> dict:
        response = await self.post_json("/api/auth/login",
                                         {"username": username, "password": password})
        assert response.code == 200, response.body
        return response.json()


@dataclass
class Server:
    """A running daemon: its URL, data directory and service graph."""

    base_url: str
    data_dir: Path
    service: Any
    client: Client

    @property
    def imagehost(self):
        return self.service.imagehost

    @property
    def db(self):
        """The daemon's database (for tests that set up or check rows directly)."""
        return self.service.imagehost.pools.db

    async def admin(self) -> Client:
        tokens = await self.client.login()
        return self.client.with_token(tokens["access_token"])


async def start_server(tmp_path: Path, reactor, sections: dict | None = None) -> Server:
    """Start a daemon through the twistd plugin's Options and makeService."""
    from imagehost.tap import Options, makeService

    # One process: the tests look into this daemon's objects (workers=auto would start
    # one more process per core, whose state a test cannot see).
    ini = {"admin": {"username": ADMIN[0], "password": ADMIN[1], "email": ADMIN[2]},
           "server": {"workers": "1"}}
    for section, values in (sections or {}).items():
        ini.setdefault(section, {}).update(values)
    config_file = write_ini(tmp_path / "imagehost.ini", ini)
    data_dir = tmp_path / "data"
    options = Options()
    options.parseOptions(["--listen", "tcp:0:interface=127.0.0.1",
                          "--data-dir", str(data_dir), "--config", str(config_file)])
    service = makeService(options, reactor)
    service.startService()
    [port] = await service.listening()
    base_url = f"http://127.0.0.1:{port.getHost().port}"
    return Server(base_url, data_dir, service, Client(base_url))


@pytest.fixture(scope="session")
def postgres():
    """One PostgreSQL server for the session (skipped, with the reason, if not installed)."""
    from tests.pg import SKIP_REASON, PostgresServer, find_bindir

    bindir = find_bindir()
    if bindir is None:
        pytest.skip(SKIP_REASON)
    server = PostgresServer(bindir)
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request):
    """Each test using the daemon runs on both databases: "" means the embedded SQLite."""
    if request.param == "sqlite":
        yield ""
        return
    with request.getfixturevalue("postgres").database() as url:
        yield url


@pytest_twisted.async_yield_fixture
async def make_server(tmp_path, reactor):
    """Start a daemon with extra config sections; it is stopped after the test."""
    started = []

    async def make(sections: dict | None = None) -> Server:
        started.append(await start_server(tmp_path, reactor, sections))
        return started[-1]

    yield make
    for running in started:
        if running.service.running:
            await running.service.stopService()


@contextlib.asynccontextmanager
async def running_server(tmp_path: Path, reactor, database_url: str = "",
                         sections: dict | None = None) -> AsyncIterator[Server]:
    """A daemon with these config ``sections`` on ``database_url`` ("": the embedded
    SQLite), stopped afterwards unless the test stopped it."""
    sections = dict(sections or {})
    if database_url:
        sections["database"] = {"url": database_url}
    running = await start_server(tmp_path, reactor, sections)
    try:
        yield running
    finally:
        if running.service.running:
            await running.service.stopService()


@pytest_twisted.async_yield_fixture
async def server(tmp_path, reactor, database_url):
    async with running_server(tmp_path, reactor, database_url) as running:
        yield running


@pytest_twisted.async_fixture
async def admin(server) -> Client:
    return await server.admin()


def image_bytes(fmt: str = "JPEG", size: tuple[int, int] = (64, 48),
                color=(200, 30, 30), mode: str = "RGB", **save_kwargs) -> bytes:
    """A real encoded image made by Pillow."""
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, fmt, **save_kwargs)
    return buffer.getvalue()
