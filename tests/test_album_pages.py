"""The album pages over HTTP without JavaScript: list, create, upload into, arrange,
add from /images, share; sessions, CSRF and visibility as on every page."""

from __future__ import annotations

import io
import re

import pytest_twisted
from PIL import Image

from imagehost.web.pages import CSP
from tests.conftest import image_bytes
from tests.test_albums import order
from tests.test_library import PASSWORD, person
from tests.web_support import PageClient, csrf_of

_ALBUM = re.compile(r"^/a/([0-9a-f-]{36})$")


async def logged_in(server, username: str):
    who = await person(server, username)
    browser = PageClient(server.base_url)
    await browser.login(username, PASSWORD)
    return who, browser


async def create(browser: PageClient, title: str = "Trip", public: bool = False) -> str:
    fields = {"title": title, **({"isPublic": "true"} if public else {})}
    response = await browser.submit("/albums", "/albums", fields)
    assert response.code == 303, response.body
    return _ALBUM.match(response.header("Location")).group(1)


async def upload_into(browser: PageClient, album_id: str, public: bool = False) -> str:
    fields = {"albumId": album_id, **({"isPublic": "true"} if public else {})}
    response = await browser.upload(image_bytes("PNG", (30, 20)), filename="p.png",
                                    fields=fields)
    assert response.code == 303, response.body
    return response.header("Location").removeprefix("/i/")


def tile_ids(body: bytes) -> list[str]:
    return re.findall(r'<li class="tile" data-id="([0-9a-f-]{36})"', body.decode())


@pytest_twisted.ensureDeferred
async def test_albums_need_a_login_and_a_csrf_token(server):
    visitor = PageClient(server.base_url)
    response = await visitor.get("/albums")
    assert response.code == 303 and response.header("Location").startswith("/login")
    _, browser = await logged_in(server, "alice")
    page = await browser.get("/albums")
    assert page.code == 200 and page.header("Content-Security-Policy") == CSP
    forged = await browser.post("/albums", {"title": "x"})
    assert forged.code == 403
    blank = await browser.submit("/albums", "/albums", {"title": " "})
    assert blank.code == 422 and b"blank" in blank.body
    album_id = await create(browser, "Summer <script>")
    listed = await browser.get("/albums")
    assert f"/a/{album_id}".encode() in listed.body
    assert b"Summer &lt;script&gt;" in listed.body


@pytest_twisted.ensureDeferred
async def test_upload_into_an_album_then_arrange_it_without_javascript(server):
    alice, browser = await logged_in(server, "alice")
    album_id = await create(browser)
    upload_page = await browser.get(f"/?album={album_id}")
    assert f'<option value="{album_id}" selected>'.encode() in upload_page.body
    first, second, third = [await upload_into(browser, album_id) for _ in range(3)]
    page = await browser.get(f"/a/{album_id}")
    assert tile_ids(page.body) == [first, second, third]

    async def act(action: str, image_id: str) -> None:
        response = await browser.submit(f"/a/{album_id}", f"/a/{album_id}/images",
                                        {"image": image_id, "action": action})
        assert response.code == 303, response.body

    await act("up", third)
    await act("down", first)
    assert await order(alice.client, album_id) == [third, first, second]
    await act("cover", third)
    assert (await alice.client.get(f"/api/album/{album_id}")).json()["coverImageId"] == third
    await act("remove", second)
    assert await order(alice.client, album_id) == [third, first]
    assert (await alice.client.get(f"/api/image/{second}/detail")).code == 200

    # The drag-and-drop script's request: the new order, the token in a header.
    token = csrf_of(await browser.get(f"/a/{album_id}"))
    response = await browser.post(f"/a/{album_id}/order", [("id", first), ("id", third)],
                                  headers={"X-CSRF-Token": token})
    assert response.code == 200 and response.json() == {"imageIds": [first, third]}
    assert (await browser.post(f"/a/{album_id}/order", [("id", first)])).code == 403

    saved = await browser.submit(f"/a/{album_id}", f"/a/{album_id}/edit",
                                 {"title": "Renamed", "description": "d",
                                  "visibility": "public"})
    assert saved.code == 303
    assert b"Renamed" in (await browser.get(f"/a/{album_id}")).body
    deleted = await browser.submit(f"/a/{album_id}", f"/a/{album_id}/delete", {})
    assert deleted.code == 303 and deleted.header("Location") == "/albums"
    assert (await browser.get(f"/a/{album_id}")).code == 404
    assert (await alice.client.get(f"/api/image/{first}/detail")).code == 200


@pytest_twisted.ensureDeferred
async def test_add_the_selection_of_my_images_to_an_album(server):
    alice, browser = await logged_in(server, "alice")
    ids = []
    for _ in range(2):
        response = await browser.upload(image_bytes("PNG"), filename="x.png")
        ids.append(response.header("Location").removeprefix("/i/"))
    album_id = await create(browser)
    mine = await browser.get("/images")
    assert b'id="add-to-album"' in mine.body
    response = await browser.post("/images/bulk", [("csrf", csrf_of(mine)),
                                                   ("action", "album"), ("albumId", album_id),
                                                   *[("id", i) for i in ids]])
    assert response.code == 303 and response.header("Location") == f"/a/{album_id}"
    assert set(await order(alice.client, album_id)) == set(ids)


@pytest_twisted.ensureDeferred
async def test_who_sees_an_album_page(server):
    _, browser = await logged_in(server, "alice")
    public_album = await create(browser, "Open", public=True)
    private_album = await create(browser, "Closed")
    shown = await upload_into(browser, public_album, public=True)
    hidden = await upload_into(browser, public_album)
    visitor = PageClient(server.base_url)

    page = await visitor.get(f"/a/{public_album}")
    assert page.code == 200 and tile_ids(page.body) == [shown]
    assert b"tile-actions" not in page.body and b"share-form" not in page.body
    assert tile_ids((await browser.get(f"/a/{public_album}")).body) == [shown, hidden]
    assert (await visitor.get(f"/a/{private_album}")).code == 404
    _, bob = await logged_in(server, "bob")
    assert (await bob.get(f"/a/{private_album}")).code == 404
    response = await bob.submit(f"/a/{public_album}", f"/a/{public_album}/images",
                                {"image": shown, "action": "remove"})
    assert response.code == 403


@pytest_twisted.ensureDeferred
async def test_share_an_album_from_its_page_and_revoke_it(server):
    _, browser = await logged_in(server, "alice")
    album_id = await create(browser)
    await upload_into(browser, album_id)
    response = await browser.submit(f"/a/{album_id}", f"/a/{album_id}/share",
                                    {"password": "pass phrase", "expiresIn": "86400"})
    assert response.code == 201, response.body
    link = re.search(rb'id="share-link" value="[^"]*(/s/[A-Za-z0-9_-]+)"', response.body)
    code = link.group(1).decode().removeprefix("/s/")
    assert b"password" in response.body and b"expires" in response.body

    visitor = PageClient(server.base_url)
    locked = await visitor.get(f"/s/{code}")
    assert b'id="unlock-form"' in locked.body
    unlocked = await visitor.post(f"/s/{code}/unlock", {"csrf": csrf_of(locked),
                                                         "password": "pass phrase"})
    assert unlocked.code == 303
    assert len(re.findall(rb"_thumbnail\.png", (await visitor.get(f"/s/{code}")).body)) == 1

    bad = await browser.submit(f"/a/{album_id}", f"/a/{album_id}/share", {"expiresIn": "7"})
    assert bad.code == 400
    revoked = await browser.submit(f"/a/{album_id}", f"/shares/{code}/revoke",
                                   {"back": f"/a/{album_id}"})
    assert revoked.code == 303 and revoked.header("Location") == f"/a/{album_id}"
    assert (await visitor.get(f"/s/{code}")).code == 404


@pytest_twisted.ensureDeferred
async def test_share_an_image_from_its_page_at_a_fixed_width(server):
    _, browser = await logged_in(server, "alice")
    response = await browser.upload(image_bytes("PNG", (900, 600)), filename="w.png")
    image_id = response.header("Location").removeprefix("/i/")
    page = await browser.get(f"/i/{image_id}")
    assert b'id="share-form"' in page.body
    created = await browser.submit(f"/i/{image_id}", f"/i/{image_id}/share", {"width": "640"})
    assert created.code == 201, created.body
    code = re.search(rb'id="share-link" value="[^"]*/s/([A-Za-z0-9_-]+)"',
                     created.body).group(1).decode()
    visitor = PageClient(server.base_url)
    served = await visitor.get(f"/s/{code}/image.png")
    assert Image.open(io.BytesIO(served.body)).size == (640, 427)
    assert b'id="share-form"' not in (await visitor.get(f"/i/{image_id}")).body
    _, bob = await logged_in(server, "bob")
    assert (await bob.submit(f"/i/{image_id}", f"/i/{image_id}/share", {})).code == 404
    assert (await browser.submit(f"/i/{image_id}", f"/i/{image_id}/share",
                                 {"width": "77"})).code == 400
    revoked = await browser.submit(f"/i/{image_id}", f"/shares/{code}/revoke",
                                   {"back": f"/i/{image_id}"})
    assert revoked.header("Location") == f"/i/{image_id}"
    assert (await visitor.get(f"/s/{code}")).code == 404
