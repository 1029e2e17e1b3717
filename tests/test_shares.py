"""Share links over the real listener, on SQLite and PostgreSQL: the API, the pages at
``/s/{code}`` and the images served under them."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta

import pytest_twisted
import sqlalchemy as sa
from PIL import Image

from imagehost.db.schema import shares as shares_table
from imagehost.service.shares import new_code
from tests.test_albums import (
    assert_cursor_refused,
    forged,
    new_album,
    page_through,
    upload,
    violation,
)
from tests.test_library import person
from tests.web_support import PageClient, csrf_of

CODE = re.compile(r"^[A-Za-z0-9_-]{16,}$")


async def share(client, **body) -> dict:
    response = await client.post_json("/api/shares", body)
    assert response.code == 201, response.body
    return response.json()


async def expire(server, code: str) -> None:
    """Move a share's expiry into the past (as time passing would)."""
    past = datetime.now(UTC) - timedelta(seconds=1)

    def thd(conn):
        conn.execute(sa.update(shares_table).where(shares_table.c.code == code)
                     .values(expires_at=past))

    await server.db.run(thd)


def og_image(body: bytes) -> str | None:
    found = re.search(rb'<meta property="og:image" content="([^"]+)"', body)
    return found.group(1).decode() if found else None


def image_size(body: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(body)).size


@pytest_twisted.ensureDeferred
async def test_an_image_share_opens_a_private_image_and_nothing_else_does(server):
    alice, bob = await person(server, "alice"), await person(server, "bob")
    image_id = await upload(alice.client, public=False)
    created = await share(alice.client, imageId=image_id)

    code = created["code"]
    assert CODE.match(code) and created["url"] == f"/s/{code}"
    assert created["imageId"] == image_id and created["albumId"] is None
    assert created["hasPassword"] is False and created["views"] == 0

    visitor = PageClient(server.base_url)
    page = await visitor.get(f"/s/{code}")
    assert page.code == 200, page.body
    assert image_id.encode() not in page.body  # the page does not reveal the image id
    assert f"/s/{code}/image.png".encode() in page.body
    assert og_image(page.body) == f"{server.base_url}/s/{code}/image.jpg?w=1200"
    served = await visitor.get(f"/s/{code}/image.png")
    assert served.code == 200 and image_size(served.body) == (20, 10)
    assert served.header("Cache-Control") == "private, no-cache"
    assert (await visitor.get(f"/s/{code}/image.jpg?w=1200")).code == 200

    # Nothing else shows the private image to anyone but its owner.
    assert (await visitor.get(f"/i/{image_id}")).code == 404
    assert (await bob.client.get(f"/api/image/{image_id}/detail")).code == 403
    feed = (await bob.client.get("/api/images/1")).json()
    assert image_id not in [item["id"] for item in feed["data"]]
    assert (await bob.client.get(f"/api/images?uuid[]={image_id}")).json() == []
    assert (await visitor.get(f"/s/{code[:-1]}")).code == 404

    listed = (await alice.client.get("/api/shares")).json()["data"]
    assert [(s["code"], s["views"]) for s in listed] == [(code, 1)]
    assert (await bob.client.get("/api/shares")).json()["data"] == []


@pytest_twisted.ensureDeferred
async def test_revoking_ends_the_share_at_once(server, admin):
    alice, bob = await person(server, "alice"), await person(server, "bob")
    code = (await share(alice.client, imageId=await upload(alice.client)))["code"]
    visitor = PageClient(server.base_url)
    assert (await visitor.get(f"/s/{code}/image.png")).code == 200

    assert (await bob.client.request("DELETE", f"/api/share/{code}")).code == 404
    assert (await alice.client.request("DELETE", f"/api/share/{code}")).code == 204
    assert (await visitor.get(f"/s/{code}")).code == 404
    assert (await visitor.get(f"/s/{code}/image.png")).code == 404
    assert (await alice.client.request("DELETE", f"/api/share/{code}")).code == 404
    assert (await server.client.request("DELETE", f"/api/share/{code}")).code == 401

    other = (await share(alice.client, imageId=await upload(alice.client)))["code"]
    assert (await admin.request("DELETE", f"/api/share/{other}")).code == 204


@pytest_twisted.ensureDeferred
async def test_an_expired_share_is_410_with_a_page_saying_so(server):
    alice = await person(server, "alice")
    image_id = await upload(alice.client)
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    created = await share(alice.client, imageId=image_id, expiresAt=soon)
    assert created["expiresAt"].startswith(soon[:19])
    code = created["code"]
    visitor = PageClient(server.base_url)
    assert (await visitor.get(f"/s/{code}")).code == 200

    await expire(server, code)
    page = await visitor.get(f"/s/{code}")
    assert page.code == 410 and b"expired" in page.body
    assert og_image(page.body) is None
    assert (await visitor.get(f"/s/{code}/image.png")).code == 410

    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    response = await alice.client.post_json("/api/shares", {"imageId": image_id,
                                                            "expiresAt": past})
    assert "future" in violation(response, "expiresAt")
    response = await alice.client.post_json("/api/shares", {"imageId": image_id,
                                                            "expiresAt": "tomorrow"})
    assert "ISO 8601" in violation(response, "expiresAt")


@pytest_twisted.ensureDeferred
async def test_bad_share_requests(server):
    alice, bob = await person(server, "alice"), await person(server, "bob")
    image_id, album_id = await upload(alice.client), (await new_album(alice.client))["id"]
    private = await upload(alice.client, public=False)

    response = await alice.client.post_json("/api/shares", {})
    assert "exactly one" in violation(response, "imageId")
    response = await alice.client.post_json("/api/shares", {"imageId": image_id,
                                                            "albumId": album_id})
    assert response.code == 422
    response = await alice.client.post_json("/api/shares", {"albumId": album_id,
                                                            "variant": {"width": 10}})
    assert "image share" in violation(response, "variant")
    for variant in ({"width": 0}, {"width": "10"}, {"format": "bmp"}, {"crop": "yes"},
                    {"depth": 3}, [], {"width": 10**6}):
        response = await alice.client.post_json("/api/shares", {"imageId": image_id,
                                                                "variant": variant})
        assert response.code == 422, (variant, response.body)
    response = await alice.client.post_json("/api/shares", {"imageId": image_id,
                                                            "password": ""})
    assert response.code == 422
    assert (await bob.client.post_json("/api/shares", {"imageId": image_id})).code == 403
    assert (await bob.client.post_json("/api/shares", {"imageId": private})).code == 404
    assert (await bob.client.post_json("/api/shares", {"albumId": album_id})).code == 404
    assert (await bob.client.post_json("/api/shares", {"imageId": 5})).code == 404
    assert (await server.client.post_json("/api/shares", {"imageId": image_id})).code == 401
    assert (await server.client.get("/api/shares")).code == 401


@pytest_twisted.ensureDeferred
async def test_a_fixed_variant_is_what_the_link_shows(server):
    alice = await person(server, "alice")
    image_id = await upload(alice.client)
    variant = {"width": 8, "height": 8, "crop": True, "format": "webp"}
    created = await share(alice.client, imageId=image_id, variant=variant)
    assert created["variant"] == variant
    code = created["code"]
    visitor = PageClient(server.base_url)

    page = await visitor.get(f"/s/{code}")
    assert f"/s/{code}/image.webp".encode() in page.body
    served = await visitor.get(f"/s/{code}/image.webp?w=20&h=4")
    assert served.code == 200 and served.header("Content-Type") == "image/webp"
    assert image_size(served.body) == (8, 8)
    assert (await visitor.get(f"/s/{code}/image.png")).code == 404
    assert (await visitor.get(f"/s/{code}/image_thumbnail.webp")).code == 404


@pytest_twisted.ensureDeferred
async def test_an_album_share_shows_its_images_under_the_shares_urls(server):
    alice = await person(server, "alice")
    images = [await upload(alice.client, public=False) for _ in range(3)]
    album_id = (await new_album(alice.client, "Holiday <b>"))["id"]
    await alice.client.post_json(f"/api/album/{album_id}/images", {"imageIds": images})
    code = (await share(alice.client, albumId=album_id))["code"]
    visitor = PageClient(server.base_url)

    page = await visitor.get(f"/s/{code}")
    assert page.code == 200 and b"Holiday &lt;b&gt;" in page.body
    assert not any(i.encode() in page.body for i in images)
    thumbs = re.findall(rf'src="(/s/{code}/[A-Za-z0-9_-]{{16}}_thumbnail\.png)"',
                        page.body.decode())
    assert len(thumbs) == 3
    for path in thumbs:
        assert (await visitor.get(path)).code == 200
    assert og_image(page.body) is not None

    # A key means nothing under another share's code.
    other = (await share(alice.client, albumId=album_id))["code"]
    assert (await visitor.get(thumbs[0].replace(code, other))).code == 404
    # Deleting the album ends its shares.
    await alice.client.request("DELETE", f"/api/album/{album_id}")
    assert (await visitor.get(f"/s/{code}")).code == 404


@pytest_twisted.ensureDeferred
async def test_a_password_share_unlocks_with_the_right_password_only(server):
    alice = await person(server, "alice")
    image_id = await upload(alice.client, public=False)
    created = await share(alice.client, imageId=image_id, password="open sesame")
    assert created["hasPassword"] is True and "password" not in created
    code = created["code"]
    visitor = PageClient(server.base_url)

    locked = await visitor.get(f"/s/{code}")
    assert locked.code == 200 and b'id="unlock-form"' in locked.body
    assert og_image(locked.body) is None and b"og:" not in locked.body
    assert b"/image." not in locked.body
    assert (await visitor.get(f"/s/{code}/image.png")).code == 403

    wrong = await visitor.post(f"/s/{code}/unlock", {"csrf": csrf_of(locked),
                                                      "password": "guess"})
    assert wrong.code == 401 and b"not right" in wrong.body
    assert og_image(wrong.body) is None
    forged = await visitor.post(f"/s/{code}/unlock", {"password": "open sesame"})
    assert forged.code == 403  # no CSRF token

    right = await visitor.post(f"/s/{code}/unlock", {"csrf": csrf_of(locked),
                                                      "password": "open sesame"})
    assert right.code == 303 and right.header("Location") == f"/s/{code}"
    cookie = next(c for c in visitor.set_cookies if c.startswith(f"imagehost_share_{code}="))
    assert f"Path=/s/{code}" in cookie and "HttpOnly" in cookie
    page = await visitor.get(f"/s/{code}")
    assert og_image(page.body) is not None
    assert (await visitor.get(f"/s/{code}/image.png")).code == 200

    # The cookie unlocks that share only.
    other = (await share(alice.client, imageId=image_id, password="open sesame"))["code"]
    stranger = PageClient(server.base_url)
    stranger.cookies[f"imagehost_share_{other}"] = visitor.cookies[f"imagehost_share_{code}"]
    assert (await stranger.get(f"/s/{other}/image.png")).code == 403


@pytest_twisted.ensureDeferred
async def test_guessing_a_share_password_is_throttled(make_server, database_url):
    sections = {"limits": {"share_unlocks_per_minute_per_share": "3"}}
    if database_url:
        sections["database"] = {"url": database_url}
    server = await make_server(sections)
    alice = await person(server, "alice")
    code = (await share(alice.client, imageId=await upload(alice.client),
                        password="right"))["code"]
    guesses = []
    for n in range(3):
        visitor = PageClient(server.base_url)  # a fresh browser each time does not help
        token = await visitor.csrf(f"/s/{code}")
        guesses.append(await visitor.post(f"/s/{code}/unlock",
                                          {"csrf": token, "password": f"guess {n}"}))
    assert [g.code for g in guesses] == [401, 401, 401]
    visitor = PageClient(server.base_url)
    token = await visitor.csrf(f"/s/{code}")
    blocked = await visitor.post(f"/s/{code}/unlock", {"csrf": token, "password": "right"})
    assert blocked.code == 429 and blocked.header("Retry-After")
    assert og_image(blocked.body) is None


@pytest_twisted.ensureDeferred
async def test_shares_of_a_deleted_image_end(server):
    alice = await person(server, "alice")
    image_id = await upload(alice.client)
    code = (await share(alice.client, imageId=image_id))["code"]
    await alice.client.request("DELETE", f"/api/image/{image_id}")
    assert (await PageClient(server.base_url).get(f"/s/{code}")).code == 404
    assert (await alice.client.get("/api/shares")).json()["data"] == []


def test_a_share_code_never_starts_with_a_dash_which_command_lines_read_as_an_option():
    drawn = iter(["-9bcdefghijklmno", "-Abcdefghijklmno", "Zbcdefghijklmno-"])
    assert new_code(lambda n: next(drawn)) == "Zbcdefghijklmno-"
    codes = {new_code() for _ in range(200)}
    assert len(codes) == 200
    assert all(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{15}", code) for code in codes)


@pytest_twisted.ensureDeferred
async def test_own_shares_are_paged_newest_first_by_signed_cursor(server):
    alice, bob = await person(server, "alice"), await person(server, "bob")
    image_id = await upload(alice.client)
    made = [(await share(alice.client, imageId=image_id))["code"] for _ in range(25)]
    await share(bob.client, imageId=await upload(bob.client))
    added = []

    async def share_again() -> None:  # newer than the first page: not in the later ones
        added.append((await share(alice.client, imageId=image_id))["code"])

    codes, pages = await page_through(alice.client, "/api/shares", "data",
                                      between=share_again)
    assert codes == made[::-1] and [len(p["data"]) for p in pages] == [10, 10, 5]
    assert [p["meta"]["total"] for p in pages] == [25, 26, 26]
    assert (await page_through(alice.client, "/api/shares", "data"))[0] == added + codes
    assert [s["code"] for s in (await alice.client.get("/api/shares")).json()["data"]] == (
        added + codes)[:10]
    assert (await alice.client.get("/api/shares?limit=0")).code == 400

    cursor = pages[0]["meta"]["nextCursor"]
    await assert_cursor_refused(alice.client, "/api/shares", forged(cursor))
    await assert_cursor_refused(bob.client, "/api/shares", cursor)  # Alice's, not Bob's
    album_cursor = (await alice.client.get("/api/albums?limit=1")).json()["meta"]["nextCursor"]
    await assert_cursor_refused(alice.client, "/api/shares", album_cursor)
