"""Quotas: per-user and guest limits on stored bytes and images, on both databases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest_twisted
from twisted.internet.defer import Deferred, gatherResults

from tests.conftest import image_bytes
from tests.test_bad_input import refused
from tests.test_cli import local_cli

ALICE = ("alice", "alice-password-1", "alice@example.com")


def same_size_pngs(count: int) -> list[bytes]:
    """Distinct PNGs of one exact size (stored uncompressed, so the colour cannot change it)."""
    images = [image_bytes("PNG", (40, 30), color=(n, 255 - n, 7), compress_level=0)
              for n in range(count)]
    assert len({len(i) for i in images}) == 1 and len(set(images)) == count
    return images


def originals_on_disk(data_dir: Path) -> list[Path]:
    return [p for p in (data_dir / "originals").rglob("*") if p.is_file()]


async def set_quota(admin, **values) -> None:
    response = await admin.post_json("/api/settings", {"category": "quota", "settings": values})
    assert response.code == 204, response.body


async def alice(server):
    """A user alice and a client logged in as her."""
    await server.imagehost.accounts.create_user(ALICE[0], ALICE[2], ALICE[1])
    tokens = await server.client.login(ALICE[0], ALICE[1])
    return server.client.with_token(tokens["access_token"])


async def usage(client) -> dict:
    response = await client.get("/api/user/usage")
    assert response.code == 200, response.body
    return response.json()["data"]


@pytest_twisted.ensureDeferred
async def test_an_upload_over_the_byte_quota_is_422_naming_the_limit_and_the_usage(server,
                                                                                  admin):
    user = await alice(server)
    first, second, third = same_size_pngs(3)
    size = len(first)
    assert await usage(user) == {"bytes": 0, "images": 0,
                                 "limits": {"bytes": None, "images": None}}
    await set_quota(admin, userBytes=2 * size + size // 2)
    for data in (first, second):
        assert (await user.upload("/api/upload", data)).code == 201
    error = await refused(server, await user.upload("/api/upload", third), 422)
    limit = 2 * size + size // 2
    message = (f"The storage quota would be exceeded: {2 * size} of {limit} bytes in use "
               f"({2 * size / 1000:.1f} kB of {limit / 1000:.1f} kB), "
               f"and this image is {size} bytes.")
    assert error["message"] == message
    assert error["violations"] == [{"property": "image", "message": message}]
    assert await usage(user) == {"bytes": 2 * size, "images": 2,
                                 "limits": {"bytes": 2 * size + size // 2, "images": None}}
    assert len(originals_on_disk(server.data_dir)) == 2
    # The limit is per user: the admin's uploads are not counted against alice.
    assert (await admin.upload("/api/upload", third)).code == 201
    # Raising the limit lets the upload through at once.
    await set_quota(admin, userBytes=None)
    assert (await user.upload("/api/upload", third)).code == 201


@pytest_twisted.ensureDeferred
async def test_the_image_quota_own_limits_and_the_cli(server, admin):
    user = await alice(server)
    images = same_size_pngs(4)
    await set_quota(admin, userImages=1)
    assert (await user.upload("/api/upload", images[0])).code == 201
    error = await refused(server, await user.upload("/api/upload", images[1]), 422)
    assert error["message"] == "The image quota is used up: 1 of 1 images."
    # An API key's uploads count the same (ShareX's endpoint).
    key = await server.imagehost.accounts.create_api_key(
        await server.imagehost.accounts.user_named("alice"), "sharex")
    await refused(server, await user.upload("/api/external/upload", images[1],
                                            token=key.key), 422)

    cmd = local_cli(server)
    shown = await cmd.json("user", "quota", "alice")
    assert shown == {"username": "alice", "bytes": len(images[0]), "images": 1,
                     "limits": {"bytes": None, "images": 1},
                     "quota": {"bytes": "default", "images": "default"}}
    # An own limit beats the default, in both directions.
    await cmd.ok("user", "quota", "alice", "--images", "unlimited", "--bytes", "1MB")
    assert (await usage(user))["limits"] == {"bytes": 1000000, "images": None}
    assert (await user.upload("/api/upload", images[1])).code == 201
    await cmd.ok("user", "quota", "alice", "--images", "2")
    await refused(server, await user.upload("/api/upload", images[2]), 422)
    table = (await cmd.ok("user", "quota", "alice", "--images", "default")).stdout
    assert "Quota of alice" in table and "(the default)" in table
    assert (await usage(user))["limits"] == {"bytes": 1000000, "images": 1}
    assert (await cmd.fails("user", "quota", "alice", "--images", "lots", code=2))
    assert (await cmd.fails("user", "quota", "nobody")) == 'No user named "nobody".'


@pytest_twisted.ensureDeferred
async def test_the_guest_total_counts_every_guest_upload_together(server, admin):
    response = await admin.post_json("/api/settings", {
        "category": "access", "settings": {"allowGuestUploads": True}})
    assert response.code == 204
    await set_quota(admin, guestImages=2)
    images = same_size_pngs(3)
    for data in images[:2]:
        assert (await server.client.upload("/api/guest/upload", data)).code == 201
    error = await refused(server, await server.client.upload("/api/guest/upload", images[2]),
                          422)
    assert error["message"] == "The guests' image quota is used up: 2 of 2 images."
    # Users are not guests.
    assert (await admin.upload("/api/upload", images[2])).code == 201


@pytest_twisted.ensureDeferred
async def test_quota_settings_are_validated_and_need_an_admin(server, admin):
    for value in (-1, "10MB", True, 1.5, 2**63):
        response = await admin.post_json("/api/settings", {
            "category": "quota", "settings": {"userBytes": value}})
        error = await refused(server, response, 422)
        assert error["violations"][0]["property"] == "quota.userBytes"
    user = await alice(server)
    response = await user.post_json("/api/settings", {
        "category": "quota", "settings": {"userBytes": 1}})
    await refused(server, response, 403)
    settings = (await admin.get("/api/settings")).json()["data"]
    assert settings["quota"] == {"userBytes": None, "userImages": None, "guestBytes": None,
                                 "guestImages": None}
    assert "quota" not in (await server.client.get("/api/settings/public")).json()["data"]
    await refused(server, await server.client.get("/api/user/usage"), 401)


@pytest_twisted.ensureDeferred
async def test_uploads_racing_for_the_last_free_bytes_never_pass_the_limit(make_server,
                                                                          database_url):
    # Two daemons on one installation (as --workers or a scale-out runs them), so the
    # uploads race in separate database connections, not only in one DB thread.
    sections = {"database": {"url": database_url}} if database_url else {}
    first = await make_server(sections)
    second = await make_server(sections)
    admin = await first.admin()
    await first.imagehost.accounts.create_user(ALICE[0], ALICE[2], ALICE[1])
    clients = []
    for server in (first, second):
        tokens = await server.client.login(ALICE[0], ALICE[1])
        clients.append(server.client.with_token(tokens["access_token"]))
    images = same_size_pngs(12)
    size = len(images[0])
    await set_quota(admin, userBytes=3 * size + size // 2)

    responses = await gatherResults([
        Deferred.fromCoroutine(clients[n % 2].upload("/api/upload", data))
        for n, data in enumerate(images)])
    codes = sorted(r.code for r in responses)
    assert codes == [201] * 3 + [422] * 9, [(r.code, r.body[:200]) for r in responses]
    for r in responses:
        if r.code == 422:
            assert r.json()["error"]["message"].startswith(
                "The storage quota would be exceeded: "), r.body
    assert await usage(clients[0]) == {"bytes": 3 * size, "images": 3,
                                       "limits": {"bytes": 3 * size + size // 2,
                                                  "images": None}}
    assert len(originals_on_disk(first.data_dir)) == 3


@pytest_twisted.ensureDeferred
async def test_an_import_stops_at_the_quota_with_its_message(server, admin, tmp_path):
    await server.imagehost.accounts.create_user(ALICE[0], ALICE[2], ALICE[1])
    await set_quota(admin, userImages=2)
    folder = tmp_path / "pictures"
    folder.mkdir()
    for n, data in enumerate(same_size_pngs(5)):
        (folder / f"{n}.png").write_bytes(data)
    cmd = local_cli(server)
    result = await cmd("--json", "import", folder, "--user", "alice", "--jobs", "1")
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert result.stderr.strip() == ("Error: Import stopped after importing 2 files: "
                                     "The image quota is used up: 2 of 2 images.")
    summary = json.loads(result.stdout)
    assert summary["imported"] == 2 and summary["rejected"] == []
    assert summary["stoppedBy"] == "The image quota is used up: 2 of 2 images."
    assert len(originals_on_disk(server.data_dir)) == 2


@pytest_twisted.ensureDeferred
async def test_the_upload_page_shows_the_quota_message(server, admin):
    from tests.web_support import PageClient

    await server.imagehost.accounts.create_user(ALICE[0], ALICE[2], ALICE[1])
    await set_quota(admin, userImages=1)
    browser = PageClient(server.base_url)
    await browser.login(ALICE[0], ALICE[1])
    first, second = same_size_pngs(2)
    assert (await browser.upload(first)).code == 303
    refused_page = await browser.upload(second)
    assert refused_page.code == 422
    assert b"The image quota is used up: 1 of 1 images." in refused_page.body
    scripted = await browser.upload(second, json=True)
    assert scripted.code == 422
    assert scripted.json()["error"]["message"] == "The image quota is used up: 1 of 1 images."


@pytest_twisted.ensureDeferred
async def test_a_hand_over_past_the_receivers_quota_is_refused_and_moves_nothing(server,
                                                                                 admin):
    accounts = server.imagehost.accounts
    receiver = await alice(server)
    carol = await accounts.create_user("carol", "carol@example.com", "carol-password-1")
    tokens = await server.client.login("carol", "carol-password-1")
    giver = server.client.with_token(tokens["access_token"])
    images = same_size_pngs(3)
    carols = [(await giver.upload("/api/upload", data)).json()["id"] for data in images[:2]]
    assert (await receiver.upload("/api/upload", images[2])).code == 201
    alice_id = (await accounts.user_named("alice")).id
    cmd = local_cli(server)
    await cmd.ok("user", "quota", "alice", "--images", "2")
    hand_over = {"images": "handOver", "to": alice_id}

    error = await refused(server, await admin.post_json(
        f"/api/admin/users/{carol.id}", hand_over, method="DELETE"), 422)
    assert error["violations"] == [{"property": "to", "message": (
        f"The images cannot go to alice: 2 images of {2 * len(images[0])} bytes would pass "
        "their quota: 1 of 2 images in use. Nothing was changed.")}]
    await cmd.ok("user", "quota", "alice", "--images", "unlimited",
                 "--bytes", str(2 * len(images[0])))
    line = await cmd.fails("user", "delete", "carol", "--hand-images-to", "alice")
    assert line.startswith("to: The images cannot go to alice: 2 images of ")
    assert f": {len(images[0])} of {2 * len(images[0])} bytes (" in line and "\n" not in line
    # Nothing moved: carol is still there, logged in, with both her images.
    history = (await giver.get("/api/images/history/1")).json()
    assert sorted(i["id"] for i in history["data"]) == sorted(carols)
    assert (await usage(receiver))["images"] == 1

    await cmd.ok("user", "quota", "alice", "--bytes", "default")
    handed = await admin.post_json(f"/api/admin/users/{carol.id}", hand_over, method="DELETE")
    assert handed.code == 200 and handed.json()["handedOverImages"] == 2
    assert (await usage(receiver))["images"] == 3
