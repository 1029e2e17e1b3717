"""Albums over the real listener, on SQLite and PostgreSQL: every endpoint and status."""

from __future__ import annotations

import pytest_twisted

from imagehost.service.administration import DELETE_IMAGES, HAND_OVER_IMAGES
from tests.conftest import image_bytes
from tests.test_library import person


async def upload(client, public: bool = True, **fields) -> str:
    data = image_bytes("PNG", size=(20, 10), color=(len(fields) * 40, 10, 10))
    response = await client.upload("/api/upload", data, filename="a.png",
                                   fields={"isPublic": "true" if public else "false", **fields})
    assert response.code == 201, response.body
    return response.json()["id"]


async def new_album(client, title: str = "Trip", **extra) -> dict:
    response = await client.post_json("/api/albums", {"title": title, **extra})
    assert response.code == 201, response.body
    return response.json()


async def order(client, album_id: str) -> list[str]:
    response = await client.get(f"/api/album/{album_id}")
    assert response.code == 200, response.body
    return [item["id"] for item in response.json()["images"]]


def violation(response, prop: str) -> str:
    assert response.code == 422, response.body
    [found] = [v for v in response.json()["error"]["violations"] if v["property"] == prop]
    return found["message"]


@pytest_twisted.ensureDeferred
async def test_create_show_rename_and_delete_an_album(server):
    alice = await person(server, "alice")
    created = await new_album(alice.client, "  Summer  ", description="at the sea")

    assert created["title"] == "Summer" and created["description"] == "at the sea"
    assert created["isPublic"] is False and created["imageCount"] == 0
    assert created["updatedAt"] is None
    album_id = created["id"]

    shown = (await alice.client.get(f"/api/album/{album_id}")).json()
    assert shown["images"] == [] and shown["title"] == "Summer"

    patch = await alice.client.post_json(f"/api/album/{album_id}",
                                         {"title": "Winter", "isPublic": True}, method="PATCH")
    assert patch.code == 204
    shown = (await alice.client.get(f"/api/album/{album_id}")).json()
    assert shown["title"] == "Winter" and shown["isPublic"] is True and shown["updatedAt"]

    assert (await alice.client.request("DELETE", f"/api/album/{album_id}")).code == 204
    assert (await alice.client.get(f"/api/album/{album_id}")).code == 404
    assert (await alice.client.request("DELETE", f"/api/album/{album_id}")).code == 404


@pytest_twisted.ensureDeferred
async def test_bad_album_fields_are_422_and_no_credentials_401(server):
    alice = await person(server, "alice")
    assert "blank" in violation(await alice.client.post_json("/api/albums", {}), "title")
    assert "blank" in violation(await alice.client.post_json("/api/albums", {"title": " "}),
                                "title")
    response = await alice.client.post_json("/api/albums", {"title": "x" * 256, "isPublic": 1})
    assert "too long" in violation(response, "title")
    assert "bool" in violation(response, "isPublic")
    assert (await alice.client.post_json("/api/albums", [1])).code == 400
    assert (await server.client.post_json("/api/albums", {"title": "x"})).code == 401
    assert (await server.client.get("/api/albums")).code == 401
    album = await new_album(alice.client)
    response = await alice.client.post_json(f"/api/album/{album['id']}",
                                            {"description": 5}, method="PATCH")
    assert "string" in violation(response, "description")


@pytest_twisted.ensureDeferred
async def test_own_albums_are_listed_newest_first_by_signed_cursor(server):
    alice, bob = await person(server, "alice"), await person(server, "bob")
    made = [(await new_album(alice.client, f"A{n}"))["id"] for n in range(5)]
    await new_album(bob.client, "not alice's")

    seen, cursor = [], None
    while True:
        query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        response = await alice.client.get(f"/api/albums{query}")
        assert response.code == 200, response.body
        body = response.json()
        assert body["meta"]["total"] == 5 and body["meta"]["size"] == 2
        seen += [a["id"] for a in body["data"]]
        cursor = body["meta"]["nextCursor"]
        if cursor is None:
            break
    assert seen == made[::-1]

    first = (await alice.client.get("/api/albums?limit=2")).json()["meta"]["nextCursor"]
    body, _, mac = first.partition(".")
    forged = body[:-2] + ("AA" if body[-2:] != "AA" else "BB") + "." + mac
    assert (await alice.client.get(f"/api/albums?cursor={forged}")).code == 400
    # Alice's cursor does not page through Bob's albums.
    assert (await bob.client.get(f"/api/albums?cursor={first}")).code == 400
    assert (await alice.client.get("/api/albums?limit=0")).code == 400


@pytest_twisted.ensureDeferred
async def test_set_add_and_remove_images_keep_the_order(server):
    alice = await person(server, "alice")
    one, two, three, four = [await upload(alice.client) for _ in range(4)]
    album_id = (await new_album(alice.client))["id"]
    path = f"/api/album/{album_id}/images"

    response = await alice.client.post_json(path, {"imageIds": [three, one]})
    assert response.code == 200 and response.json() == {"data": {"imageIds": [three, one]}}
    response = await alice.client.post_json(path, {"imageIds": [one, two, two]})
    assert response.json()["data"]["imageIds"] == [three, one, two]

    response = await alice.client.post_json(path, {"imageIds": [two, three, one]}, method="PUT")
    assert response.json()["data"]["imageIds"] == [two, three, one]
    assert await order(alice.client, album_id) == [two, three, one]

    response = await alice.client.post_json(path, {"imageIds": [three]}, method="DELETE")
    assert response.json()["data"]["imageIds"] == [two, one]
    await alice.client.post_json(path, {"imageIds": [four]})
    # Editing the album and its images leaves the order alone.
    await alice.client.post_json(f"/api/album/{album_id}", {"title": "New"}, method="PATCH")
    await alice.client.post_json(f"/api/image/{one}", {"description": "x"}, method="PATCH")
    assert await order(alice.client, album_id) == [two, one, four]
    # Deleting an image takes it out of its albums; the rest keep their order.
    assert (await alice.client.request("DELETE", f"/api/image/{one}")).code == 204
    assert await order(alice.client, album_id) == [two, four]
    # Deleting the album leaves the images.
    assert (await alice.client.request("DELETE", f"/api/album/{album_id}")).code == 204
    assert (await alice.client.get(f"/api/image/{two}/detail")).code == 200

    again = (await new_album(alice.client))["id"]
    response = await alice.client.post_json(f"/api/album/{again}/images",
                                            {"imageIds": [two, two]}, method="PUT")
    assert "once" in violation(response, "imageIds")
    response = await alice.client.post_json(f"/api/album/{again}/images", {"imageIds": "x"})
    assert "list" in violation(response, "imageIds")


@pytest_twisted.ensureDeferred
async def test_an_image_can_be_in_several_albums(server):
    alice = await person(server, "alice")
    image = await upload(alice.client)
    first, second = (await new_album(alice.client))["id"], (await new_album(alice.client))["id"]
    for album_id in (first, second):
        await alice.client.post_json(f"/api/album/{album_id}/images", {"imageIds": [image]})
    assert await order(alice.client, first) == [image] == await order(alice.client, second)


@pytest_twisted.ensureDeferred
async def test_only_own_images_go_into_own_albums(server, admin):
    alice, bob = await person(server, "alice"), await person(server, "bob")
    bobs_image = await upload(bob.client)
    alices_album = (await new_album(alice.client, isPublic=True))["id"]
    private_album = (await new_album(alice.client))["id"]

    response = await alice.client.post_json(f"/api/album/{alices_album}/images",
                                            {"imageIds": [bobs_image]})
    assert bobs_image in violation(response, "imageIds")
    response = await alice.client.post_json(f"/api/album/{alices_album}/images",
                                            {"imageIds": ["no-such-image"]})
    assert response.code == 422

    for method in ("PUT", "POST", "DELETE"):
        response = await bob.client.post_json(f"/api/album/{alices_album}/images",
                                              {"imageIds": [bobs_image]}, method=method)
        assert response.code == 403, method
        response = await bob.client.post_json(f"/api/album/{private_album}/images",
                                              {"imageIds": [bobs_image]}, method=method)
        assert response.code == 404, method
    patched = await bob.client.post_json(f"/api/album/{alices_album}", {"title": "mine"},
                                         method="PATCH")
    assert patched.code == 403
    assert (await bob.client.request("DELETE", f"/api/album/{private_album}")).code == 404
    # Administrators may manage (and delete) anyone's album.
    assert (await admin.get(f"/api/album/{private_album}")).code == 200
    assert (await admin.request("DELETE", f"/api/album/{private_album}")).code == 204


@pytest_twisted.ensureDeferred
async def test_a_public_album_shows_others_only_its_public_images(server):
    alice, bob = await person(server, "alice"), await person(server, "bob")
    public, private = await upload(alice.client), await upload(alice.client, public=False)
    album_id = (await new_album(alice.client, isPublic=True))["id"]
    await alice.client.post_json(f"/api/album/{album_id}/images",
                                 {"imageIds": [private, public]})

    assert await order(alice.client, album_id) == [private, public]
    assert await order(bob.client, album_id) == [public]
    shown = (await bob.client.get(f"/api/album/{album_id}")).json()
    assert shown["coverImageId"] == public and shown["imageCount"] == 1

    await alice.client.post_json(f"/api/album/{album_id}", {"isPublic": False}, method="PATCH")
    assert (await bob.client.get(f"/api/album/{album_id}")).code == 404


@pytest_twisted.ensureDeferred
async def test_the_cover_is_one_of_the_albums_images(server):
    alice = await person(server, "alice")
    one, two, stranger = [await upload(alice.client) for _ in range(3)]
    album_id = (await new_album(alice.client))["id"]
    await alice.client.post_json(f"/api/album/{album_id}/images", {"imageIds": [one, two]})
    path = f"/api/album/{album_id}"

    assert (await alice.client.get(path)).json()["coverImageId"] == one
    assert (await alice.client.post_json(path, {"coverImageId": two}, method="PATCH")).code == 204
    assert (await alice.client.get(path)).json()["coverImageId"] == two
    response = await alice.client.post_json(path, {"coverImageId": stranger}, method="PATCH")
    assert "cover" in violation(response, "coverImageId")
    # Taking the cover out of the album makes the first image the cover again.
    await alice.client.post_json(f"{path}/images", {"imageIds": [two]}, method="DELETE")
    assert (await alice.client.get(path)).json()["coverImageId"] == one


@pytest_twisted.ensureDeferred
async def test_an_upload_can_go_into_an_album(server):
    alice, bob = await person(server, "alice"), await person(server, "bob")
    album_id = (await new_album(alice.client))["id"]
    first = await upload(alice.client, albumId=album_id)
    key = (await alice.client.post_json("/api/user/api-keys", {"name": "sharex"})).json()["key"]
    response = await alice.client.upload("/api/external/upload", image_bytes("PNG"),
                                         token=key, fields={"albumId": album_id})
    assert response.code == 201, response.body
    assert await order(alice.client, album_id) == [first, response.json()["id"]]

    response = await bob.client.upload("/api/upload", image_bytes("PNG"),
                                       fields={"albumId": album_id})
    assert "albums" in violation(response, "albumId")
    history = (await bob.client.get("/api/images/history/1")).json()
    assert history["meta"]["total"] == 0  # refused before anything was stored


@pytest_twisted.ensureDeferred
async def test_deleting_a_user_removes_their_albums_and_shares(server, admin):
    from tests.web_support import PageClient

    alice, bob = await person(server, "alice"), await person(server, "bob")
    admin_id = (await admin.get("/api/user")).json()["data"]["id"]
    for who, hand_over in ((alice, False), (bob, True)):
        image = await upload(who.client)
        album_id = (await new_album(who.client, isPublic=True))["id"]
        await who.client.post_json(f"/api/album/{album_id}/images", {"imageIds": [image]})
        codes = [(await who.client.post_json("/api/shares", body)).json()["code"]
                 for body in ({"imageId": image}, {"albumId": album_id})]
        body = {"images": HAND_OVER_IMAGES, "to": admin_id} if hand_over else {
            "images": DELETE_IMAGES}
        deleted = await admin.post_json(f"/api/admin/users/{who.id}", body, method="DELETE")
        assert deleted.code == 200, deleted.body
        assert (await admin.get(f"/api/album/{album_id}")).code == 404
        for code in codes:
            assert (await PageClient(server.base_url).get(f"/s/{code}")).code == 404
        assert (await admin.get("/api/shares")).json()["data"] == []


async def page_through(client, path: str, items: str, limit: int = 10,
                       between=None) -> tuple[list[str], list[dict]]:
    """Follow ``meta.nextCursor`` from ``path``'s first page: the ids of every page's
    ``items`` in order, and the pages. ``between()`` runs after the first page."""
    ids, pages, cursor = [], [], None
    while True:
        query = f"?limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        response = await client.get(path + query)
        assert response.code == 200, response.body
        pages.append(response.json())
        ids += [item.get("id") or item["code"] for item in pages[-1][items]]
        cursor = pages[-1]["meta"]["nextCursor"]
        if len(pages) == 1 and between is not None:
            await between()
        if cursor is None:
            return ids, pages


async def assert_cursor_refused(client, path: str, cursor: str) -> None:
    """``cursor`` on ``path`` is a 400 with the error envelope."""
    response = await client.get(f"{path}?cursor={cursor}")
    assert response.code == 400, (path, response.body)
    error = response.json()["error"]
    assert error["title"] == "BadRequest", error
    assert error["message"].startswith('"cursor" is malformed; use meta.nextCursor'), error


def forged(cursor: str) -> str:
    """``cursor`` with its payload changed and its signature kept."""
    body, _, mac = cursor.partition(".")
    return body[:-2] + ("AA" if body[-2:] != "AA" else "BB") + "." + mac


@pytest_twisted.ensureDeferred
async def test_an_albums_images_are_paged_in_order_by_signed_cursor(server):
    alice, bob = await person(server, "alice"), await person(server, "bob")
    images = [await upload(alice.client, description=str(n)) for n in range(26)]
    album_id = (await new_album(alice.client, "Many", isPublic=True))["id"]
    other_id = (await new_album(alice.client, "Other", isPublic=True))["id"]
    for target in (album_id, other_id):
        response = await alice.client.post_json(f"/api/album/{target}/images",
                                                {"imageIds": images[:25]})
        assert response.code == 200, response.body
    path = f"/api/album/{album_id}"

    async def append_one() -> None:  # lands after the 25: no image is repeated or skipped
        await alice.client.post_json(f"{path}/images", {"imageIds": [images[25]]})

    ids, pages = await page_through(alice.client, path, "images", between=append_one)
    assert ids == images and [len(p["images"]) for p in pages] == [10, 10, 6]
    assert [p["meta"]["total"] for p in pages] == [25, 26, 26]
    assert {(p["imageCount"], p["coverImageId"]) for p in pages[1:]} == {(26, images[0])}
    assert pages[0]["meta"]["size"] == 10 and pages[-1]["meta"]["nextCursor"] is None
    # The default page is 10 images, as in the feed; more than 100 is a 400.
    default = (await alice.client.get(path)).json()
    assert [i["id"] for i in default["images"]] == images[:10]
    assert (await alice.client.get(f"{path}?limit=101")).code == 400
    # Someone else sees the public album's pages the same way.
    assert (await page_through(bob.client, path, "images", limit=7))[0] == images

    cursor = pages[0]["meta"]["nextCursor"]
    await assert_cursor_refused(alice.client, path, forged(cursor))
    await assert_cursor_refused(alice.client, f"/api/album/{other_id}", cursor)
    album_cursor = (await alice.client.get("/api/albums?limit=1")).json()["meta"]["nextCursor"]
    await assert_cursor_refused(alice.client, path, album_cursor)
