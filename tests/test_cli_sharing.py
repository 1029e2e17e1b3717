"""``imagehost remote album …`` and ``imagehost remote share …`` against a live daemon."""

from __future__ import annotations

import pytest_twisted

from tests import cli_support  # noqa: F401  (registers imagehost_cli)
from tests.conftest import image_bytes
from tests.test_cli import local_cli, remote_cli
from tests.web_support import PageClient


@pytest_twisted.ensureDeferred
async def test_remote_albums_and_shares(server, tmp_path):
    key = (await local_cli(server).json("apikey", "create", "admin"))["key"]
    remote = remote_cli(server, "--api-key", key)
    album = await remote.json("album", "create", "Cats", "--description", "meow")
    album_id = album["id"]
    assert (album["title"], album["isPublic"]) == ("Cats", False)

    files = []
    for n in range(3):
        path = tmp_path / f"cat{n}.png"
        path.write_bytes(image_bytes("PNG", size=(20 + n, 20)))
        files.append(path)
    uploaded = await remote.json("upload", *files, "--album", album_id, "--jobs", "1",
                                 "--expires-in", "86400")
    ids = [u["id"] for u in uploaded]
    detail = await remote.json("detail", ids[0])
    assert detail["expiresAt"] is not None

    shown = await remote.json("album", "show", album_id)
    assert [i["id"] for i in shown["images"]] == ids
    assert (await remote.json("album", "order", album_id, ids[2], ids[0], ids[1])) == {
        "imageIds": [ids[2], ids[0], ids[1]]}
    assert (await remote.json("album", "remove", album_id, ids[0]))["imageIds"] == [
        ids[2], ids[1]]
    assert (await remote.json("album", "add", album_id, ids[0]))["imageIds"] == [
        ids[2], ids[1], ids[0]]
    await remote.ok("album", "edit", album_id, "--title", "Kittens", "--public",
                    "--cover", ids[1])
    listed = await remote.json("album", "list")
    assert [(a["title"], a["isPublic"], a["coverImageId"]) for a in listed["data"]] == [
        ("Kittens", True, ids[1])]
    assert "Kittens" in (await remote.ok("album", "list")).stdout

    share = await remote.json("share", "create", "--image", ids[0], "--width", "10",
                              "--format", "webp", "--expires", "2d")
    assert share["url"] == f"{server.base_url}/s/{share['code']}"
    assert share["variant"] == {"width": 10, "height": None, "crop": False, "format": "webp"}
    visitor = PageClient(server.base_url)
    assert (await visitor.get(f"/s/{share['code']}/image.webp")).code == 200
    locked = await remote.json("share", "create", "--album", album_id, "--password",
                               input="secret\nsecret\n")
    assert locked["hasPassword"] is True
    codes = [s["code"] for s in await remote.json("share", "list")]
    assert codes == [locked["code"], share["code"]]
    assert share["code"] in (await remote.ok("share", "list")).stdout

    await remote.ok("share", "revoke", share["code"])
    assert (await visitor.get(f"/s/{share['code']}")).code == 404
    assert (await remote.fails("share", "revoke", share["code"])) == (
        "No such share. (HTTP 404)")
    assert "exactly one" in await remote.fails("share", "create", code=2)
    refused = await remote("upload", files[0], "--album", "no-such-album")
    assert refused.exit_code == 1 and "not one of your albums" in refused.stderr
    await remote.ok("album", "delete", album_id)
    assert (await remote.fails("album", "show", album_id)) == "No such album. (HTTP 404)"
    assert (await remote.json("detail", ids[0]))["id"] == ids[0]


@pytest_twisted.ensureDeferred
async def test_remote_share_list_and_album_show_follow_every_page(server, admin):
    """The API pages shares and an album's images (100 at most); the CLI shows them all."""
    key = (await local_cli(server).json("apikey", "create", "admin"))["key"]
    remote = remote_cli(server, "--api-key", key)
    uploaded = await admin.upload("/api/upload", image_bytes("PNG", size=(20, 20)))
    image_id = uploaded.json()["id"]
    codes = [(await admin.post_json("/api/shares", {"imageId": image_id})).json()["code"]
             for _ in range(101)]
    assert [s["code"] for s in await remote.json("share", "list")] == codes[::-1]
    album_id = (await admin.post_json("/api/albums", {"title": "One"})).json()["id"]
    await admin.post_json(f"/api/album/{album_id}/images", {"imageIds": [image_id]})
    shown = await remote.json("album", "show", album_id)
    assert [i["id"] for i in shown["images"]] == [image_id] and "meta" not in shown
