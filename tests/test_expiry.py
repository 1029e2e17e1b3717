"""Expiring images over the real listener, on SQLite and PostgreSQL: what an upload may
ask for, the operator's per-role defaults and maxima, 404 everywhere after expiry, and
deletion by ``imagehost gc`` and by the daemon's sweep."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest_twisted
import sqlalchemy as sa

from imagehost.db.images import image_by_id
from imagehost.db.schema import images as images_table
from tests import cli_support  # noqa: F401  (registers imagehost_cli)
from tests.conftest import image_bytes
from tests.test_albums import new_album, violation
from tests.test_cli import local_cli
from tests.test_library import person
from tests.web_support import PageClient


async def upload(client, path: str = "/api/upload", **fields) -> dict:
    response = await client.upload(path, image_bytes("PNG", size=(40, 30)), filename="e.png",
                                   fields={"isPublic": "true", **fields})
    assert response.code == 201, response.body
    return response.json()


async def expires_at(server, image_id: str) -> datetime | None:
    return (await server.db.run(image_by_id, image_id)).expires_at


async def expire_now(server, image_id: str) -> None:
    """Move an image's expiry into the past (as time passing would)."""
    past = datetime.now(UTC) - timedelta(seconds=1)

    def thd(conn):
        conn.execute(sa.update(images_table).where(images_table.c.id == image_id)
                     .values(expires_at=past))

    await server.db.run(thd)


def near(moment: datetime | None, seconds: float) -> bool:
    expected = datetime.now(UTC) + timedelta(seconds=seconds)
    return moment is not None and abs((moment - expected).total_seconds()) < 30


@pytest_twisted.ensureDeferred
async def test_an_upload_asks_for_its_expiry(server):
    alice = await person(server, "alice")
    by_seconds = (await upload(alice.client, expiresIn="3600"))["id"]
    assert near(await expires_at(server, by_seconds), 3600)
    moment = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    by_time = (await upload(alice.client, expiresAt=moment.isoformat()))["id"]
    assert await expires_at(server, by_time) == moment
    detail = (await alice.client.get(f"/api/image/{by_time}/detail")).json()
    assert datetime.fromisoformat(detail["expiresAt"]) == moment
    forever = (await upload(alice.client))["id"]
    assert await expires_at(server, forever) is None

    served = await server.client.get(f"/image/{by_seconds}.png")
    max_age = int(served.header("Cache-Control").removeprefix("public, max-age="))
    assert 3500 < max_age <= 3600  # no cache keeps it past its expiry
    immutable = await server.client.get(f"/image/{forever}.png")
    assert immutable.header("Cache-Control") == "public, max-age=31536000, immutable"


@pytest_twisted.ensureDeferred
async def test_bad_expiry_fields_are_422_before_anything_is_stored(server):
    alice = await person(server, "alice")
    data = image_bytes("PNG")
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    for fields, prop in (({"expiresIn": "0"}, "expiresIn"), ({"expiresIn": "1h"}, "expiresIn"),
                         ({"expiresIn": "10", "expiresAt": past}, "expiresIn"),
                         ({"expiresAt": past}, "expiresAt"),
                         ({"expiresAt": "soon"}, "expiresAt"),
                         ({"expiresAt": "2030-01-01T00:00:00"}, "expiresAt")):
        response = await alice.client.upload("/api/upload", data, fields=fields)
        assert violation(response, prop), fields
    assert (await alice.client.get("/api/images/history/1")).json()["meta"]["total"] == 0


@pytest_twisted.ensureDeferred
async def test_operator_defaults_and_maxima_per_role(server, admin):
    alice = await person(server, "alice")
    response = await admin.post_json("/api/settings", {"category": "expiry", "settings": {
        "guestMax": 600, "userDefault": 3600, "userMax": 7200}})
    assert response.code == 204, response.body
    await admin.post_json("/api/settings", {"category": "access",
                                            "settings": {"allowGuestUploads": True}})
    tree = (await admin.get("/api/settings")).json()["data"]["expiry"]
    assert tree == {"guestDefault": None, "guestMax": 600, "userDefault": 3600,
                    "userMax": 7200, "adminDefault": None, "adminMax": None}
    assert "expiry" not in (await server.client.get("/api/settings/public")).json()["data"]

    # A maximum without a default: what asks for nothing expires at the maximum.
    guest = (await upload(server.client, "/api/guest/upload"))["id"]
    assert near(await expires_at(server, guest), 600)
    response = await server.client.upload("/api/guest/upload", image_bytes("PNG"),
                                          fields={"expiresIn": "601"})
    assert "600 seconds" in violation(response, "expiresIn")
    shorter = (await upload(server.client, "/api/guest/upload", expiresIn="60"))["id"]
    assert near(await expires_at(server, shorter), 60)

    assert near(await expires_at(server, (await upload(alice.client))["id"]), 3600)
    assert near(await expires_at(server, (await upload(alice.client, expiresIn="7200"))["id"]),
                7200)
    assert (await alice.client.upload("/api/upload", image_bytes("PNG"),
                                      fields={"expiresIn": "7201"})).code == 422
    assert await expires_at(server, (await upload(admin))["id"]) is None

    for bad in (0, -5, "60", True, 10**12):
        response = await admin.post_json("/api/settings", {"category": "expiry",
                                                           "settings": {"userMax": bad}})
        assert response.code == 422, bad


@pytest_twisted.ensureDeferred
async def test_an_expired_image_is_404_everywhere_then_gone_after_gc(server, reactor):
    from twisted.internet.task import deferLater

    alice = await person(server, "alice")
    image_id = (await upload(alice.client, expiresIn="6"))["id"]
    expiry = await expires_at(server, image_id)
    album_id = (await new_album(alice.client, isPublic=True))["id"]
    await alice.client.post_json(f"/api/album/{album_id}/images", {"imageIds": [image_id]})
    code = (await alice.client.post_json("/api/shares", {"imageId": image_id})).json()["code"]
    urls = [f"/image/{image_id}.png", f"/api/image/{image_id}.png",
            f"/api/image/{image_id}_thumbnail.png", f"/image/{image_id}.webp?w=10",
            f"/i/{image_id}", f"/s/{code}", f"/s/{code}/image.png"]
    visitor = PageClient(server.base_url)
    for url in urls:  # served, and cached (variants rendered, the record remembered)
        assert (await visitor.get(url)).code == 200, url
    await server.imagehost.delivery.written()
    assert any(server.imagehost.storage.variants_dir(image_id).iterdir())

    assert datetime.now(UTC) < expiry, "the machine is too slow for this test's 6 s"
    while datetime.now(UTC) < expiry:
        await deferLater(reactor, 0.1, lambda: None)
    for url in urls:
        assert (await visitor.get(url)).code == 404, url
    assert (await alice.client.get(f"/api/image/{image_id}/detail")).code == 404
    for listing in ("/api/images/1", "/api/images/history/1", f"/api/images?uuid[]={image_id}"):
        assert image_id not in (await alice.client.get(listing)).body.decode(), listing
    assert (await alice.client.get(f"/api/album/{album_id}")).json()["images"] == []
    assert image_id.encode() not in (await visitor.get("/explore")).body

    original = server.imagehost.storage.original_path(image_id, "png")
    assert original.exists()
    report = await local_cli(server).json("gc")
    assert report["expiredImages"] == 1 and report["expiredImageIds"] == [image_id]
    assert await server.db.run(image_by_id, image_id) is None
    assert not original.exists()
    assert not server.imagehost.storage.variants_dir(image_id).exists()
    assert (await alice.client.get(f"/api/album/{album_id}")).code == 200
    assert (await local_cli(server).json("gc"))["expiredImages"] == 0


@pytest_twisted.ensureDeferred
async def test_gc_dry_run_only_reports_expired_images(server):
    alice = await person(server, "alice")
    image_id = (await upload(alice.client, expiresIn="60"))["id"]
    await expire_now(server, image_id)
    report = await local_cli(server).json("gc", "--dry-run")
    assert report["expiredImageIds"] == [image_id]
    assert await server.db.run(image_by_id, image_id) is not None
    line = (await local_cli(server).ok("gc")).stdout
    assert "Removed 1 expired images" in line


@pytest_twisted.ensureDeferred
async def test_the_daemon_sweeps_expired_images_periodically(make_server, reactor,
                                                             database_url):
    from twisted.internet.task import deferLater

    sections = {"expiry": {"sweep_interval": "0.2"}}
    if database_url:
        sections["database"] = {"url": database_url}
    server = await make_server(sections)
    alice = await person(server, "alice")
    image_id = (await upload(alice.client, expiresIn="1"))["id"]
    original = server.imagehost.storage.original_path(image_id, "png")
    assert (await server.client.get(f"/image/{image_id}.png")).code == 200
    deadline = time.monotonic() + 10
    # The record goes first, the files just after it.
    while await server.db.run(image_by_id, image_id) is not None or original.exists():
        assert time.monotonic() < deadline, "the sweep did not delete the expired image"
        await deferLater(reactor, 0.1, lambda: None)
    assert (await server.client.get(f"/image/{image_id}.png")).code == 404


@pytest_twisted.ensureDeferred
async def test_the_sharex_profile_can_set_an_expiry(server):
    alice = await person(server, "alice")
    browser = PageClient(server.base_url)
    await browser.login("alice", "a-long-password-1")
    response = await browser.submit("/account", "/account/sharex", {"imageExpiry": "86400"})
    config = json.loads(response.body)
    assert config["Arguments"] == {"expiresIn": "86400"}
    key = config["Headers"]["Authorization"].removeprefix("Bearer ")
    uploaded = await alice.client.upload("/api/external/upload", image_bytes("PNG"),
                                         token=key, fields=config["Arguments"])
    assert near(await expires_at(server, uploaded.json()["id"]), 86400)
    bad = await browser.submit("/account", "/account/sharex", {"imageExpiry": "5"})
    assert bad.code == 400
