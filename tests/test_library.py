"""The library API: detail, public feed, batch lookup, history, edit and delete."""

from __future__ import annotations

import base64
import functools
import json
import random
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import pytest
import pytest_twisted
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from twisted.internet.defer import Deferred, gatherResults

from imagehost.db import HEAD_REVISION, create_engine, current_revision, run_sync, upgrade
from imagehost.db.images import ImageRecord, delete_image, image_by_id, insert_image
from imagehost.db.schema import images as images_table
from imagehost.db.schema import metadata
from tests.conftest import Client, image_bytes

PASSWORD = "a-long-password-1"
ISO_MICRO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}[+-]\d\d:\d\d$")
BASE_TIME = datetime(2024, 1, 15, 10, 30, tzinfo=UTC)


@dataclass
class Person:
    id: str
    username: str
    email: str
    display_name: str
    client: Client


async def person(server, username: str, display_name: str = "") -> Person:
    user = await server.imagehost.accounts.create_user(
        username, f"{username}@example.com", PASSWORD, display_name=display_name)
    tokens = await server.client.login(username, PASSWORD)
    return Person(user.id, username, user.email, user.display_name,
                  server.client.with_token(tokens["access_token"]))


async def insert(server, owner: Person | None, *, public: bool = True, minutes: int = 0,
                 updated_minutes: int | None = None, views: int = 0, size: int = 1000,
                 description: str = "", original_name: str = "x.png") -> ImageRecord:
    """Insert an image record directly (no file); times are BASE_TIME + minutes."""
    image_id = str(uuid.uuid4())
    updated = None if updated_minutes is None else BASE_TIME + timedelta(minutes=updated_minutes)
    record = ImageRecord(
        id=image_id, owner_id=owner.id if owner else None, file_name=f"{image_id}.png",
        original_name=original_name,
        description=description, is_public=public,
        created_at=BASE_TIME + timedelta(minutes=minutes), updated_at=updated, views=views,
        size=size, mime_type="image/png", width=10, height=20, sha256="0" * 64)
    await server.db.run(insert_image, record)
    return record


async def feed(client: Client, page: int | str = 1, **params) -> dict:
    query = f"?{urlencode(params)}" if params else ""
    response = await client.get(f"/api/images/{page}{query}")
    assert response.code == 200, response.body
    return response.json()


def ids(body: dict) -> list[str]:
    return [item["id"] for item in body["data"]]


def assert_bad_request(response) -> None:
    assert response.code == 400, response.body
    error = response.json()["error"]
    assert set(error) == {"title", "message"}
    assert error["title"] == "BadRequest" and error["message"]


# -- detail ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_detail_has_every_field_of_the_seed(server):
    alice = await person(server, "alice")
    data = image_bytes("PNG", size=(30, 20))
    uploaded = await alice.client.upload("/api/upload", data, filename="cat.png",
                                         fields={"description": "a cat", "isPublic": "true"})
    image_id = uploaded.json()["id"]

    response = await alice.client.get(f"/api/image/{image_id}/detail")

    assert response.code == 200
    body = response.json()
    created = body.pop("createdAt")
    assert ISO_MICRO.match(created), created
    placeholder = body["placeholder"]
    assert set(placeholder) == {"blurhash", "dominantColor"}
    assert abs(datetime.fromisoformat(created) - datetime.now(UTC)) < timedelta(minutes=1)
    assert body == {
        "id": image_id, "fileName": f"{image_id}.png", "originalName": "cat.png",
        "description": "a cat", "isPublic": True,
        "updatedAt": None, "views": 0, "size": len(data), "mimeType": "image/png",
        "width": 30, "height": 20, "supportsResize": True, "url": f"/image/{image_id}.png",
        "focalPoint": None, "placeholder": placeholder,
    }
    assert (await server.client.get(body["url"])).body == data


@pytest_twisted.ensureDeferred
async def test_detail_is_for_the_owner_and_admins(server, admin):
    alice, bob = await person(server, "alice"), await person(server, "bob")
    image = await insert(server, alice, public=True)
    path = f"/api/image/{image.id}/detail"
    key = (await alice.client.post_json("/api/user/api-keys", {"name": "sharex"})).json()["key"]

    assert (await alice.client.get(path)).code == 200
    assert (await server.client.get(path, token=key)).code == 200
    assert (await admin.get(path)).code == 200
    forbidden = await bob.client.get(path)
    assert forbidden.code == 403 and forbidden.json()["error"]["title"] == "Forbidden"
    assert (await server.client.get(path)).code == 401
    missing = await alice.client.get(f"/api/image/{uuid.uuid4()}/detail")
    assert missing.code == 404 and missing.json()["error"]["title"] == "NotFound"


# -- edit --------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_edit_changes_fields_and_stamps_updated_at(server, admin):
    alice = await person(server, "alice")
    image = await insert(server, alice, public=False, description="old")
    path = f"/api/image/{image.id}"

    response = await alice.client.post_json(path, {"description": "new", "isPublic": True},
                                            method="PATCH")
    assert response.code == 204 and response.body == b""
    detail = (await alice.client.get(f"{path}/detail")).json()
    assert detail["description"] == "new" and detail["isPublic"] is True
    assert ISO_MICRO.match(detail["updatedAt"])
    assert datetime.fromisoformat(detail["updatedAt"]) > datetime.fromisoformat(
        detail["createdAt"])

    assert (await alice.client.post_json(path, {"isPublic": False}, method="PATCH")).code == 204
    detail = (await alice.client.get(f"{path}/detail")).json()
    assert detail["description"] == "new" and detail["isPublic"] is False

    assert (await admin.post_json(path, {"description": ""}, method="PATCH")).code == 204
    assert (await alice.client.get(f"{path}/detail")).json()["description"] == ""


@pytest.mark.parametrize(("body", "prop"), [
    ({"description": 5}, "description"),
    ({"description": "x" * 256}, "description"),
    ({"isPublic": "true"}, "isPublic"),
    ({"isPublic": 1}, "isPublic"),
])
@pytest_twisted.ensureDeferred
async def test_edit_rejects_wrong_values_with_422(server, body, prop):
    alice = await person(server, "alice")
    image = await insert(server, alice, description="kept")

    response = await alice.client.post_json(f"/api/image/{image.id}", body, method="PATCH")

    assert response.code == 422, response.body
    error = response.json()["error"]
    assert error["message"] == "Validation Error"
    assert [v["property"] for v in error["violations"]] == [prop]
    assert (await server.db.run(image_by_id, image.id)).description == "kept"


@pytest_twisted.ensureDeferred
async def test_edit_of_255_characters_is_accepted(server):
    alice = await person(server, "alice")
    image = await insert(server, alice)
    response = await alice.client.post_json(f"/api/image/{image.id}",
                                            {"description": "é" * 255}, method="PATCH")
    assert response.code == 204
    assert (await server.db.run(image_by_id, image.id)).description == "é" * 255


@pytest_twisted.ensureDeferred
async def test_edit_by_others_and_of_unknown_ids(server):
    alice, bob = await person(server, "alice"), await person(server, "bob")
    image = await insert(server, alice, description="mine")

    forbidden = await bob.client.post_json(f"/api/image/{image.id}", {"description": "x"},
                                           method="PATCH")
    missing = await bob.client.post_json(f"/api/image/{uuid.uuid4()}", {"description": "x"},
                                         method="PATCH")
    not_json = await alice.client.request("PATCH", f"/api/image/{image.id}", data=b"{nope",
                                          headers={"Content-Type": "application/json"})

    assert forbidden.code == 403
    assert missing.code == 404
    assert_bad_request(not_json)
    assert (await server.db.run(image_by_id, image.id)).description == "mine"


# -- delete ------------------------------------------------------------------


async def upload_with_variant(server, client: Client) -> tuple[str, object, object]:
    response = await client.upload("/api/upload", image_bytes("PNG"), filename="a.png")
    image_id = response.json()["id"]
    storage = server.imagehost.storage
    variants = storage.variants_dir(image_id)
    variants.mkdir(parents=True, exist_ok=True)
    (variants / "w10.png").write_bytes(b"cached variant")
    return image_id, storage.original_path(image_id, "png"), variants


@pytest_twisted.ensureDeferred
async def test_delete_removes_record_variants_and_original(server):
    alice = await person(server, "alice")
    image_id, original, variants = await upload_with_variant(server, alice.client)
    urls = [f"/image/{image_id}.png", f"/api/image/{image_id}.png",
            f"/api/image/{image_id}_thumbnail.png", f"/image/{image_id}.png?w=10",
            f"/image/{image_id}.webp"]
    assert original.exists()

    response = await alice.client.request("DELETE", f"/api/image/{image_id}")

    assert response.code == 204 and response.body == b""
    assert await server.db.run(image_by_id, image_id) is None
    assert not original.exists() and not variants.exists()
    for url in urls:
        assert (await server.client.get(url)).code == 404, url
    assert (await alice.client.get(f"/api/image/{image_id}/detail")).code == 404
    assert (await alice.client.request("DELETE", f"/api/image/{image_id}")).code == 404


@pytest_twisted.ensureDeferred
async def test_delete_can_preserve_the_original_on_disk(server, admin):
    alice = await person(server, "alice")
    image_id, original, variants = await upload_with_variant(server, alice.client)

    response = await admin.post_json(f"/api/image/{image_id}", {"preserveOnDisk": True},
                                     method="DELETE")

    assert response.code == 204
    assert original.exists() and not variants.exists()
    assert await server.db.run(image_by_id, image_id) is None
    assert (await server.client.get(f"/image/{image_id}.png")).code == 404


@pytest_twisted.ensureDeferred
async def test_delete_with_preserve_false_and_refusals(server):
    alice, bob = await person(server, "alice"), await person(server, "bob")
    image_id, original, _ = await upload_with_variant(server, alice.client)
    path = f"/api/image/{image_id}"

    assert (await bob.client.request("DELETE", path)).code == 403
    bad = await alice.client.post_json(path, {"preserveOnDisk": "yes"}, method="DELETE")
    assert bad.code == 422
    assert bad.json()["error"]["violations"][0]["property"] == "preserveOnDisk"
    assert (await server.client.request("DELETE", path)).code == 401
    assert original.exists()

    response = await alice.client.post_json(path, {"preserveOnDisk": False}, method="DELETE")
    assert response.code == 204 and not original.exists()


# -- public feed -------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_feed_item_has_every_field_and_hides_emails(server, admin):
    alice, bob = await person(server, "alice", "Alice A."), await person(server, "bob")
    mine = await insert(server, alice, minutes=0, views=42, size=1024000,
                        description="Image description", original_name="example.jpg")
    guest = await insert(server, None, minutes=-1)
    await insert(server, alice, public=False, minutes=5)

    as_alice, as_bob, as_admin = await feed(alice.client), await feed(bob.client), \
        await feed(admin)

    assert as_alice["meta"] == {"size": 10, "page": 1, "total": 2, "nextCursor": None,
                                "prevCursor": None}
    assert as_alice["data"][0] == {
        "id": mine.id,
        "owner": {"id": alice.id, "email": "alice@example.com", "displayName": "Alice A."},
        "attributes": {
            "fileName": f"{mine.id}.png", "originalName": "example.jpg",
            "description": "Image description", "isPublic": True,
            "createdAt": {"formattedDate": "Jan 15, 2024", "timestamp": 1705314600},
            "views": 42,
        },
        "metadata": {"size": 1024000, "mimeType": "image/png", "width": 10, "height": 20},
        "placeholder": None,  # records inserted directly have none
    }
    assert as_alice["data"][1]["id"] == guest.id and as_alice["data"][1]["owner"] is None
    assert as_bob["data"][0]["owner"] == {"id": alice.id, "email": None,
                                          "displayName": "Alice A."}
    assert as_admin["data"][0]["owner"]["email"] == "alice@example.com"


@pytest_twisted.ensureDeferred
async def test_feed_accepts_api_keys_and_refuses_anonymous(server):
    alice = await person(server, "alice")
    await insert(server, alice)
    key = (await alice.client.post_json("/api/user/api-keys", {"name": "k"})).json()["key"]
    assert len(ids(await feed(server.client.with_token(key)))) == 1
    assert (await server.client.get("/api/images/1")).code == 401


@pytest_twisted.ensureDeferred
async def test_feed_orderings(server, admin):
    alice = await person(server, "alice")
    rows = [await insert(server, alice, minutes=m, updated_minutes=u, views=v, size=s)
            for m, u, v, s in [(0, None, 5, 300), (1, 50, 1, 100), (2, None, 9, 200),
                               (3, None, 5, 300), (4, 10, 0, 50)]]
    keys = {
        "attributes.createdAt": lambda r: r.created_at,
        "attributes.updatedAt": lambda r: r.updated_at or r.created_at,
        "attributes.views": lambda r: r.views,
        "metadata.size": lambda r: r.size,
    }
    for order_by, key in keys.items():
        for order in ("asc", "desc"):
            expected = [r.id for r in sorted(rows, key=lambda r: (key(r), r.id),
                                             reverse=order == "desc")]
            assert ids(await feed(admin, orderBy=order_by, order=order)) == expected, \
                (order_by, order)
    default = sorted(rows, key=lambda r: (keys["attributes.updatedAt"](r), r.id), reverse=True)
    assert ids(await feed(admin)) == [r.id for r in default]


@pytest_twisted.ensureDeferred
async def test_an_edit_moves_an_image_to_the_top_of_the_default_order(server):
    alice = await person(server, "alice")
    old, newer = await insert(server, alice, minutes=0), await insert(server, alice, minutes=1)
    assert ids(await feed(alice.client)) == [newer.id, old.id]
    await alice.client.post_json(f"/api/image/{old.id}", {"description": "x"}, method="PATCH")
    assert ids(await feed(alice.client)) == [old.id, newer.id]
    assert ids(await feed(alice.client, orderBy="attributes.createdAt")) == [newer.id, old.id]


@pytest_twisted.ensureDeferred
async def test_feed_search(server):
    alice = await person(server, "alice", "Wonder Woman")
    bob = await person(server, "bob", "Builder")
    sunset = await insert(server, alice, description="A Sunset at sea",
                          original_name="IMG_1.jpg")
    percent = await insert(server, bob, description="100% cat", original_name="cat_2.png")
    await insert(server, None, description="guest sunset", original_name="g.png",
                 public=False)

    async def search(**params) -> set[str]:
        return set(ids(await feed(alice.client, **params)))

    assert await search(searchTerm="sunset") == {sunset.id}
    assert await search(searchTerm="SUNSET", searchBy="description") == {sunset.id}
    assert await search(searchTerm="100%") == {percent.id}
    assert await search(searchTerm="%") == {percent.id}
    assert await search(searchTerm="img_", searchBy="fileName") == {sunset.id}
    assert await search(searchTerm="_", searchBy="fileName") == {sunset.id, percent.id}
    # fileName is "{id}.{ext}": searching it finds the id too.
    assert await search(searchTerm=f"{percent.id[:8]}", searchBy="fileName") == {percent.id}
    assert await search(searchTerm=".png", searchBy="fileName") == {sunset.id, percent.id}
    assert await search(searchTerm="wonder", searchBy="user") == {sunset.id}
    assert await search(searchTerm="bo", searchBy="user") == {percent.id}
    assert await search(searchTerm="nobody", searchBy="user") == set()
    body = await feed(alice.client, searchTerm="bob", searchBy="user")
    assert body["meta"]["total"] == 1
    by_name = await feed(alice.client, 1, limit=1, searchTerm="_", searchBy="fileName")
    assert by_name["meta"]["total"] == 2 and by_name["meta"]["nextCursor"]
    second = await feed(alice.client, 2, limit=1, searchTerm="_", searchBy="fileName")
    assert set(ids(by_name) + ids(second)) == {sunset.id, percent.id}
    assert ids(await feed(alice.client, 2, limit=1, searchTerm="o", searchBy="user")) \
        == ids(await feed(alice.client, 1, limit=2, searchTerm="o", searchBy="user"))[1:]


@pytest_twisted.ensureDeferred
async def test_page_numbers_and_cursors_agree(server):
    alice = await person(server, "alice")
    rows = [await insert(server, alice, minutes=m) for m in range(23)]
    expected = [r.id for r in reversed(rows)]
    params = {"limit": 10, "orderBy": "attributes.createdAt"}

    pages = [await feed(alice.client, page, **params) for page in (1, 2, 3, 4)]
    assert [ids(p) for p in pages] == [expected[0:10], expected[10:20], expected[20:], []]
    assert [p["meta"]["page"] for p in pages] == [1, 2, 3, 4]
    assert all(p["meta"]["total"] == 23 and p["meta"]["size"] == 10 for p in pages)
    assert pages[0]["meta"]["prevCursor"] is None
    assert pages[2]["meta"]["nextCursor"] is None

    second = await feed(alice.client, 2, cursor=pages[0]["meta"]["nextCursor"], **params)
    third = await feed(alice.client, 3, cursor=second["meta"]["nextCursor"], **params)
    assert ids(second) == expected[10:20] and ids(third) == expected[20:]
    assert third["meta"]["nextCursor"] is None

    back = await feed(alice.client, 2, cursor=third["meta"]["prevCursor"], **params)
    assert ids(back) == expected[10:20]
    first = await feed(alice.client, 1, cursor=back["meta"]["prevCursor"], **params)
    assert ids(first) == expected[0:10]
    assert first["meta"]["prevCursor"] is None
    assert ids(await feed(alice.client, 2, cursor=first["meta"]["nextCursor"], **params)) \
        == expected[10:20]
    from_page_two = await feed(alice.client, 1, cursor=pages[1]["meta"]["prevCursor"], **params)
    assert ids(from_page_two) == expected[0:10]


async def churn(server, owner: Person, rng: random.Random, alive: set[str],
                deleted: set[str]) -> None:
    """Delete two of ``alive`` and insert three images at random sort positions."""
    for victim in rng.sample(sorted(alive), min(2, len(alive))):
        await server.db.run(delete_image, victim)
        alive.discard(victim)
        deleted.add(victim)
    for _ in range(3):
        await insert(server, owner, minutes=rng.randrange(-100, 1100),
                     views=rng.randrange(5), size=rng.randrange(20))


@pytest_twisted.ensureDeferred
async def test_cursor_walk_survives_concurrent_inserts_and_deletes(server, admin):
    """Walk the whole feed while images are inserted and deleted around the cursor."""
    alice = await person(server, "alice")
    rng = random.Random(4)
    for order_by, order in [("attributes.createdAt", "desc"), ("metadata.size", "asc"),
                            ("attributes.views", "desc")]:
        start = [await insert(server, alice, minutes=rng.randrange(1000),
                              views=rng.randrange(5), size=rng.randrange(20))
                 for _ in range(120)]
        alive = {r.id for r in start}
        deleted: set[str] = set()
        seen: list[str] = []
        cursor = None

        while True:
            params = {"limit": 7, "orderBy": order_by, "order": order}
            if cursor:
                params["cursor"] = cursor
            body, _ = await gatherResults([Deferred.fromCoroutine(feed(admin, 1, **params)),
                                           Deferred.fromCoroutine(
                                               churn(server, alice, rng, alive, deleted))])
            seen.extend(ids(body))
            cursor = body["meta"]["nextCursor"]
            if cursor is None:
                break

        assert len(seen) == len(set(seen)), "an image was listed twice"
        assert alive <= set(seen), "a surviving image was skipped"
        assert len(alive) < len(start) and deleted & set(seen) < deleted


@pytest.mark.parametrize("query", [
    "limit=0", "limit=10000", "limit=101", "limit=ten", "limit=-1", "limit=1.5",
    "orderBy=attributes.fileName", "orderBy=id", "order=sideways", "searchBy=email",
    "cursor=%%%", "cursor=bm90IGpzb24", "cursor=" + base64.urlsafe_b64encode(
        json.dumps({"o": "created_at", "d": True, "v": "yesterday", "i": "x",
                    "b": False}).encode()).decode(),
])
@pytest_twisted.ensureDeferred
async def test_bad_query_values_get_400(server, admin, query):
    assert_bad_request(await admin.get(f"/api/images/1?{query}"))


@pytest.mark.parametrize("page", ["0", "abc", "-1", "1.0", "99999999999999999999"])
@pytest_twisted.ensureDeferred
async def test_bad_page_numbers_get_400(server, admin, page):
    assert_bad_request(await admin.get(f"/api/images/{page}"))
    assert_bad_request(await admin.get(f"/api/images/history/{page}"))


@pytest_twisted.ensureDeferred
async def test_cursor_of_another_ordering_gets_400(server, admin):
    for minutes in range(3):
        await insert(server, None, minutes=minutes)
    body = await feed(admin, limit=1, orderBy="attributes.views")
    cursor = body["meta"]["nextCursor"]
    assert cursor
    assert (await admin.get(f"/api/images/2?limit=1&orderBy=attributes.views&cursor={cursor}")
            ).code == 200
    assert_bad_request(await admin.get(f"/api/images/2?limit=1&cursor={cursor}"))
    assert_bad_request(await admin.get(
        f"/api/images/2?limit=1&orderBy=attributes.views&order=asc&cursor={cursor}"))


# -- batch lookup ------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_batch_lookup_returns_visible_images_in_request_order(server, admin):
    alice, bob = await person(server, "alice"), await person(server, "bob")
    own_private = await insert(server, alice, public=False, minutes=1)
    others_public = await insert(server, bob, public=True, minutes=2,
                                 description="Image description")
    others_private = await insert(server, bob, public=False, minutes=3)
    guest = await insert(server, None, public=True, minutes=4)
    wanted = [guest.id, str(uuid.uuid4()), others_private.id, others_public.id, "not-a-uuid",
              own_private.id]
    query = "&".join(f"uuid[]={i}" for i in wanted)

    for path in ("/api/images", "/api/images/by-id"):
        response = await alice.client.get(f"{path}?{query}")
        assert response.code == 200
        body = response.json()
        assert isinstance(body, list)
        assert [item["id"] for item in body] == [guest.id, others_public.id, own_private.id]
        assert body[0]["owner"] is None
        assert body[1] == {
            "id": others_public.id,
            "owner": {"id": bob.id, "email": None, "displayName": "bob"},
            "attributes": {
                "fileName": f"{others_public.id}.png", "originalName": "x.png",
                "description": "Image description", "isPublic": True,
                "createdAt": {"formattedDate": "Jan 15, 2024", "timestamp": 1705314720},
                "views": 0,
            },
            "metadata": {"size": 1000, "mimeType": "image/png", "width": 10, "height": 20},
            "placeholder": None,
        }
        assert body[2]["owner"]["email"] == "alice@example.com"

    as_admin = (await admin.get(f"/api/images?{query}")).json()
    assert [item["id"] for item in as_admin] == [guest.id, others_private.id,
                                                 others_public.id, own_private.id]
    assert as_admin[1]["owner"]["email"] == "bob@example.com"
    assert (await alice.client.get("/api/images")).json() == []
    assert (await server.client.get(f"/api/images?{query}")).code == 401
    too_many = "&".join(f"uuid[]={uuid.uuid4()}" for _ in range(101))
    assert_bad_request(await alice.client.get(f"/api/images?{too_many}"))


# -- history -----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_history_lists_own_images_newest_first(server, admin):
    alice, bob = await person(server, "alice", "Alice A."), await person(server, "bob")
    mine = [await insert(server, alice, public=m % 2 == 0, minutes=m) for m in range(13)]
    await insert(server, bob, minutes=100)
    await insert(server, None, minutes=101)

    response = await alice.client.get("/api/images/history/1")
    assert response.code == 200
    first = response.json()
    assert first["meta"] == {"size": 10, "page": 1, "total": 13}
    assert ids(first) == [r.id for r in reversed(mine)][:10]
    assert first["data"][0] == {
        "id": mine[12].id,
        "attributes": {
            "fileName": f"{mine[12].id}.png", "originalName": "x.png", "description": "",
            "isPublic": True,
            "createdAt": {"formattedDate": "2024-01-15 10:42:00", "timestamp": 1705315320},
            "views": 0,
        },
        "metadata": {"size": 1000, "mimeType": "image/png", "width": 10, "height": 20},
        "placeholder": None,
        "owner": {"id": alice.id, "email": "alice@example.com", "username": "alice",
                  "displayName": "Alice A."},
    }
    second = (await alice.client.get("/api/images/history/2")).json()
    assert ids(second) == [r.id for r in reversed(mine)][10:]
    assert second["meta"] == {"size": 10, "page": 2, "total": 13}
    small = (await alice.client.get("/api/images/history/3?limit=5")).json()
    assert ids(small) == [r.id for r in reversed(mine)][10:]
    assert (await admin.get("/api/images/history/1")).json()["meta"]["total"] == 0
    assert_bad_request(await alice.client.get("/api/images/history/1?limit=0"))
    assert (await server.client.get("/api/images/history/1")).code == 401


# -- schema ------------------------------------------------------------------


def test_migrations_produce_exactly_the_schema(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    upgrade(engine)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []


def test_head_revision_is_alembics_head(tmp_path):
    from alembic.config import Config as AlembicConfig
    from alembic.script import ScriptDirectory

    import imagehost.db

    migrations = Path(imagehost.db.__file__).parent / "migrations"
    config = AlembicConfig()
    config.set_main_option("script_location", str(migrations))
    assert ScriptDirectory.from_config(config).get_current_head() == HEAD_REVISION
    engine = create_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    assert current_revision(engine) is None
    upgrade(engine)
    assert current_revision(engine) == HEAD_REVISION


def test_a_database_at_the_head_is_opened_without_loading_alembic(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    upgrade(create_engine(url), "0001")
    program = (
        "import sys\n"
        "from imagehost.db import create_engine, upgrade\n"
        f"upgrade(create_engine({url!r}))\n"
        "print('alembic' in sys.modules)\n")
    run = functools.partial(subprocess.run, [sys.executable, "-c", program], check=True,
                            capture_output=True, text=True)
    assert run().stdout.strip() == "True"  # from 0001 it had to migrate
    assert run().stdout.strip() == "False"  # at the head: nothing to do, nothing loaded
    assert current_revision(create_engine(url)) == HEAD_REVISION


def test_migration_0002_fills_sort_updated_at(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade(engine, "0001")
    created, updated = BASE_TIME, BASE_TIME + timedelta(days=1)
    with engine.begin() as conn:
        for image_id, updated_at in (("never", None), ("edited", updated)):
            conn.exec_driver_sql(
                "INSERT INTO images (id, file_name, description, is_public, created_at, "
                "updated_at, views, size, mime_type, width, height, sha256) VALUES "
                "(?, 'f', '', 1, ?, ?, 0, 1, 'image/png', 1, 1, '')",
                (image_id, "2024-01-15 10:30:00.000000",
                 None if updated_at is None else "2024-01-16 10:30:00.000000"))
    upgrade(engine)

    def sort_values(conn):
        query = images_table.select().order_by(images_table.c.id)
        return {r.id: r.sort_updated_at for r in conn.execute(query)}

    assert run_sync(engine, sort_values) == {"edited": updated, "never": created}
