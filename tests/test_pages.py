"""The web pages over HTTP (no browser): sessions, CSRF, security headers, privacy of
private images, and the flows that work without JavaScript."""

from __future__ import annotations

import json
import re

import pytest_twisted

from imagehost.service.accounts import Principal
from imagehost.web.pages import CSP
from tests.conftest import ADMIN, image_bytes
from tests.web_support import PageClient, csrf_of

PAGES = ["/", "/login", "/explore", "/no-such-page", "/i/00000000-0000-0000-0000-000000000000"]
LOGGED_IN_PAGES = ["/", "/images", "/explore", "/account", "/admin"]


def _client(server) -> PageClient:
    return PageClient(server.base_url)


async def _uploaded(browser: PageClient, **fields) -> str:
    response = await browser.upload(image_bytes(size=(800, 600)), fields=fields)
    assert response.code == 303, response.body
    location = response.header("location")
    assert location.startswith("/i/")
    return location[3:]


def _assert_page_headers(response) -> None:
    assert response.header("content-security-policy") == CSP
    assert "unsafe-inline" not in CSP and "frame-ancestors 'none'" in CSP
    assert response.header("x-frame-options") == "DENY"
    assert response.header("x-content-type-options") == "nosniff"


@pytest_twisted.ensureDeferred
async def test_every_page_carries_the_csp(server):
    browser = _client(server)
    for path in PAGES:
        response = await browser.get(path)
        assert response.header("content-type").startswith("text/html"), path
        _assert_page_headers(response)
    await browser.login()
    for path in LOGGED_IN_PAGES:
        response = await browser.get(path)
        assert response.code == 200, (path, response.body[:300])
        _assert_page_headers(response)


@pytest_twisted.ensureDeferred
async def test_unknown_pages_get_a_friendly_404_and_the_api_keeps_json(server):
    browser = _client(server)
    page = await browser.get("/no-such-page")
    assert page.code == 404
    assert b"Page not found" in page.body and b"<header" in page.body
    api = await browser.get("/api/no-such-endpoint")
    assert api.code == 404
    assert api.json()["error"]["title"]


@pytest_twisted.ensureDeferred
async def test_session_cookie_flags(server):
    browser = _client(server)
    await browser.login()
    session = [c for c in browser.set_cookies if c.startswith("imagehost_session=")]
    assert session, browser.set_cookies
    flags = session[-1].lower()
    assert "httponly" in flags and "samesite=lax" in flags and "path=/" in flags
    assert "secure" not in flags  # plain HTTP from a client that is not a trusted proxy


@pytest_twisted.ensureDeferred
async def test_session_cookie_is_secure_behind_a_trusted_proxy_saying_https(make_server):
    server = await make_server({"server": {"trusted_proxies": "127.0.0.1"}})
    browser = PageClient(server.base_url)
    token = await browser.csrf("/login")
    response = await browser.post("/login", {"csrf": token, "username": "admin",
                                             "password": "admin-password-1"},
                                  headers={"X-Forwarded-Proto": "https"})
    assert response.code == 303
    assert "; secure" in browser.set_cookies[-1].lower()


@pytest_twisted.ensureDeferred
async def test_a_forwarded_proto_from_an_untrusted_peer_is_not_believed(server):
    browser = _client(server)
    token = await browser.csrf("/login")
    await browser.post("/login", {"csrf": token, "username": "admin",
                                  "password": "admin-password-1"},
                       headers={"X-Forwarded-Proto": "https"})
    assert "secure" not in browser.set_cookies[-1].lower()


@pytest_twisted.ensureDeferred
async def test_cross_site_posts_without_the_token_are_refused(server):
    browser = _client(server)
    await browser.login()
    image_id = await _uploaded(browser, description="before")
    # A form on another site can make the browser send its cookies, never the token.
    for action, fields in [(f"/i/{image_id}/edit", {"description": "forged"}),
                           (f"/i/{image_id}/delete", {"confirm": "yes"}),
                           ("/logout", {}),
                           ("/images/bulk", {"id": image_id, "action": "public"})]:
        refused = await browser.post(action, fields, headers={"Origin": "https://evil.example"})
        assert refused.code == 403, action
        assert b"another site" in refused.body
        wrong = await browser.post(action, {**fields, "csrf": "0" * 64})
        assert wrong.code == 403, action
    page = await browser.get(f"/i/{image_id}")
    assert page.code == 200 and b"before" in page.body
    # Another browser's token is no good with this browser's cookie.
    other = _client(server)
    foreign = await other.csrf("/login")
    refused = await browser.post(f"/i/{image_id}/edit", {"csrf": foreign, "description": "x"})
    assert refused.code == 403


@pytest_twisted.ensureDeferred
async def test_a_cross_site_upload_without_the_token_is_refused(server):
    import io

    import treq

    browser = _client(server)
    await browser.login()
    files = {"image": ("x.jpg", "application/octet-stream", io.BytesIO(image_bytes()))}
    cookie = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
    response = await treq.post(server.base_url + "/upload", files=files,
                               headers={"Cookie": cookie}, allow_redirects=False)
    assert response.code == 403
    history = await (await server.admin()).get("/api/images/history/1")
    assert history.json()["data"] == []


@pytest_twisted.ensureDeferred
async def test_a_login_form_from_another_site_is_refused(server):
    browser = _client(server)
    response = await browser.post("/login", {"username": "admin",
                                             "password": "admin-password-1"})
    assert response.code == 403
    assert not any(c.startswith("imagehost_session=") for c in browser.set_cookies)


@pytest_twisted.ensureDeferred
async def test_login_and_logout_end_the_session_on_the_server(server):
    browser = _client(server)
    await browser.login()
    stolen = dict(browser.cookies)
    assert (await browser.get("/images")).code == 200
    logout = await browser.submit("/images", "/logout", {})
    assert logout.code == 303
    assert "imagehost_session" not in browser.cookies
    # The old cookie, replayed, names no session any more.
    replay = PageClient(server.base_url, cookies=stolen)
    response = await replay.get("/images")
    assert response.code == 303
    assert response.header("location").startswith("/login")


@pytest_twisted.ensureDeferred
async def test_bad_credentials_and_an_open_redirect_are_refused(server):
    browser = _client(server)
    bad = await browser.submit("/login", "/login", {"username": "admin", "password": "nope"})
    assert bad.code == 401
    assert b"not right" in bad.body
    token = await browser.csrf("/login")
    good = await browser.post("/login", {"csrf": token, "username": "admin",
                                         "password": "admin-password-1",
                                         "next": "//evil.example/x"})
    assert good.header("location") == "/"


@pytest_twisted.ensureDeferred
async def test_disabling_a_user_or_changing_the_password_ends_their_sessions(server):
    admin = await server.admin()
    for name in ("carol", "dave"):
        created = await server.imagehost.accounts.create_user(
            name, f"{name}@example.com", "carol-password")
        assert created.username == name
    carol = _client(server)
    await carol.login("carol", "carol-password")
    assert (await carol.get("/images")).code == 200
    await server.imagehost.accounts.set_active("carol", False)
    assert (await carol.get("/images")).code == 303
    dave = _client(server)
    await dave.login("dave", "carol-password")
    await server.imagehost.accounts.set_password("dave", "another-password")
    assert (await dave.get("/images")).code == 303
    assert admin.token


@pytest_twisted.ensureDeferred
async def test_page_logins_spend_the_same_throttle_as_the_api(make_server):
    server = await make_server({"limits": {"logins_per_minute_per_user": "2"}})
    browser = PageClient(server.base_url)
    for _ in range(2):
        bad = await server.client.post_json("/api/auth/login",
                                            {"username": "admin", "password": "wrong"})
        assert bad.code == 401
    limited = await browser.submit("/login", "/login",
                                   {"username": "admin", "password": "admin-password-1"})
    assert limited.code == 429
    assert limited.header("retry-after")


@pytest_twisted.ensureDeferred
async def test_signup_only_when_registration_is_on(server):
    browser = _client(server)
    assert (await browser.get("/signup")).code == 404
    assert b'href="/signup"' not in (await browser.get("/login")).body
    admin = await server.admin()
    await admin.post_json("/api/settings", {"category": "access",
                                            "settings": {"allowRegistration": True}})
    assert b'href="/signup"' in (await browser.get("/login")).body
    bad = await browser.submit("/signup", "/signup", {"username": "x", "email": "no",
                                                      "password": "short", "confirm": "short"})
    assert bad.code == 422
    assert b"not a valid email" in bad.body
    good = await browser.submit("/signup", "/signup", {
        "username": "erin", "email": "erin@example.com", "password": "erin-password",
        "confirm": "erin-password"})
    assert good.code == 303
    assert (await browser.get("/images")).code == 200


@pytest_twisted.ensureDeferred
async def test_upload_browse_edit_and_delete_without_javascript(server):
    browser = _client(server)
    await browser.login()
    image_id = await _uploaded(browser, description="A red square")
    grid = await browser.get("/images")
    assert f'href="/i/{image_id}"'.encode() in grid.body
    assert b'loading="lazy"' in grid.body and b'width="300" height="300"' in grid.body
    page = await browser.get(f"/i/{image_id}")
    assert b"A red square" in page.body and b"800 \xc3\x97 600" in page.body
    assert f"![A red square]({server.base_url}/image/{image_id}.jpg)".encode() in page.body
    assert b"srcset=" in page.body
    resized = await browser.get(f"/i/{image_id}?size=640&format=webp")
    assert f"/image/{image_id}.webp?w=640".encode() in resized.body
    edit = await browser.submit(f"/i/{image_id}", f"/i/{image_id}/edit",
                                {"description": "Renamed", "visibility": "public"})
    assert edit.code == 303
    detail = await (await server.admin()).get(f"/api/image/{image_id}/detail")
    assert detail.json()["description"] == "Renamed" and detail.json()["isPublic"] is True
    confirm = await browser.get(f"/i/{image_id}/delete")
    assert confirm.code == 200 and b"cannot be undone" in confirm.body
    deleted = await browser.post(f"/i/{image_id}/delete",
                                 {"csrf": csrf_of(confirm), "confirm": "yes"})
    assert deleted.code == 303
    assert (await browser.get(f"/i/{image_id}")).code == 404
    assert (await browser.get(f"/image/{image_id}.jpg")).code == 404


@pytest_twisted.ensureDeferred
async def test_upload_errors_show_the_servers_own_message(server):
    browser = _client(server)
    await browser.login()
    page = await browser.upload(b"<svg xmlns='http://www.w3.org/2000/svg'/>", filename="x.svg")
    assert page.code == 422
    assert b"The mime type of the file is invalid" in page.body
    as_json = await browser.upload(image_bytes()[:200], json=True)
    assert as_json.code == 422
    assert as_json.json()["error"]["violations"][0]["message"] == "The image file is corrupted."
    ok = await browser.upload(image_bytes(), json=True, fields={"description": "x"})
    assert ok.code == 201
    body = ok.json()
    assert body["page"] == f"/i/{body['id']}"
    assert body["markdown"] == f"![x]({server.base_url}/image/{body['id']}.jpg)"


@pytest_twisted.ensureDeferred
async def test_a_form_over_the_body_limit_gets_a_page_and_scripts_and_the_api_json(
        make_server):
    server = await make_server({"server": {"max_body_size": 100000}})
    browser = _client(server)
    await browser.login()
    big = image_bytes(size=(800, 600)) + b"\0" * 100000
    page = await browser.upload(big)  # the form without JavaScript
    assert page.code == 413
    _assert_page_headers(page)
    assert b"<h1>Too large</h1>" in page.body
    assert b"The file is larger than this server accepts (0.10 MB)." in page.body
    assert b'href="/"' in page.body
    as_json = await browser.upload(big, json=True)  # the page's script
    assert as_json.code == 413
    assert as_json.json()["error"]["title"] == "PayloadTooLarge"
    api = await server.client.upload("/api/upload", big,
                                     headers={"Accept": "text/html,*/*;q=0.8"})
    assert api.code == 413 and api.json()["error"]["title"] == "PayloadTooLarge"
    assert (await browser.get("/")).code == 200


@pytest_twisted.ensureDeferred
async def test_a_private_image_page_and_its_meta_reach_no_one_else(server):
    owner = _client(server)
    await owner.login()
    image_id = await _uploaded(owner, description="secret plans")
    own = await owner.get(f"/i/{image_id}")
    assert b"secret plans" in own.body and b'property="og:image"' in own.body
    await server.imagehost.accounts.create_user("mallory", "m@example.com", "mallory-pass")
    mallory = _client(server)
    await mallory.login("mallory", "mallory-pass")
    for visitor in (_client(server), mallory):
        for path in (f"/i/{image_id}", f"/i/{image_id}?size=640",
                     f"/oembed?url=/i/{image_id}", f"/i/{image_id}/delete"):
            response = await visitor.get(path)
            assert response.code in (303, 403, 404), path
            assert b"secret plans" not in response.body and b"og:" not in response.body
        listing = await visitor.get("/explore")
        assert image_id.encode() not in listing.body
    assert (await mallory.get(f"/i/{image_id}/delete")).code == 404
    for action in (f"/i/{image_id}/edit", f"/i/{image_id}/delete"):
        refused = await mallory.submit("/explore", action, {"description": "mine now",
                                                            "confirm": "yes"})
        assert refused.code == 404, action
    bulk = await mallory.submit("/explore", "/images/bulk", {"id": image_id, "action": "public"})
    assert bulk.code == 404
    assert b"secret plans" in (await owner.get(f"/i/{image_id}")).body


@pytest_twisted.ensureDeferred
async def test_public_image_meta_unfurls_with_a_bounded_og_image(server):
    browser = _client(server)
    await browser.login()
    response = await browser.upload(image_bytes(size=(2400, 1200)),
                                    fields={"isPublic": "true", "description": "Wide"})
    image_id = response.header("location")[3:]
    anonymous = _client(server)
    page = (await anonymous.get(f"/i/{image_id}")).body.decode()
    meta = dict(re.findall(r'<meta (?:property|name)="([^"]+)" content="([^"]*)"', page))
    assert meta["og:image"] == f"{server.base_url}/image/{image_id}.jpg?w=1200"
    assert (meta["og:image:width"], meta["og:image:height"]) == ("1200", "600")
    assert meta["twitter:card"] == "summary_large_image" and meta["og:title"] == "Wide"
    oembed_url = re.search(r'type="application/json\+oembed" href="([^"]+)"', page).group(1)
    oembed = await anonymous.get(oembed_url.replace("&amp;", "&").replace(server.base_url, ""))
    assert json.loads(oembed.body)["width"] == 1200
    og = await anonymous.get(meta["og:image"].replace(server.base_url, ""))
    assert og.code == 200 and og.header("content-type") == "image/jpeg"


@pytest_twisted.ensureDeferred
async def test_images_search_load_more_and_bulk_actions(server):
    browser = _client(server)
    await browser.login()
    ids = [await _uploaded(browser, description=f"cat {n}") for n in range(3)]
    ids.append(await _uploaded(browser, description="dog"))
    found = await browser.get("/images?q=cat")
    assert all(i.encode() in found.body for i in ids[:3]) and ids[3].encode() not in found.body
    bulk = await browser.submit("/images", "/images/bulk",
                                [("action", "public"), ("id", ids[0]), ("id", ids[1])])
    assert bulk.code == 303
    explore = await _client(server).get("/explore")
    assert ids[0].encode() in explore.body and ids[2].encode() not in explore.body
    ask = await browser.submit("/images", "/images/bulk",
                               [("action", "delete"), ("id", ids[0]), ("id", ids[1])])
    assert ask.code == 200 and b"Delete 2 images?" in ask.body
    done = await browser.post("/images/bulk", [("csrf", csrf_of(ask)), ("action", "delete"),
                                               ("confirm", "yes"), ("id", ids[0]),
                                               ("id", ids[1])])
    assert done.code == 303
    left = await browser.get("/images")
    assert ids[0].encode() not in left.body and ids[2].encode() in left.body


@pytest_twisted.ensureDeferred
async def test_load_more_follows_the_cursor(make_server):
    from imagehost.web import pages

    server = await make_server()
    browser = PageClient(server.base_url)
    await browser.login()
    ids = [await _uploaded(browser) for _ in range(3)]
    original = pages.PAGE_SIZE
    pages.PAGE_SIZE = 2
    try:
        first = await browser.get("/images")
        more = re.search(r'href="([^"]+)" data-load-more', first.body.decode()).group(1)
        partial = await browser.get(more.replace("&amp;", "&") + "&partial=1")
    finally:
        pages.PAGE_SIZE = original
    assert ids[2].encode() in first.body and ids[0].encode() not in first.body
    assert ids[0].encode() in partial.body and b"<header" not in partial.body
    assert partial.header("x-next-page") == ""


@pytest_twisted.ensureDeferred
async def test_api_keys_are_shown_once_listed_revoked_and_sharex_downloads(server):
    browser = _client(server)
    await browser.login()
    created = await browser.submit("/account", "/account/keys", {"name": "laptop"})
    assert created.code == 201
    key = re.search(rb'id="new-key">(sk_[0-9a-f]{64})<', created.body).group(1).decode()
    assert created.header("cache-control") == "no-store"
    uploaded = await server.client.upload("/api/external/upload", image_bytes(), token=key)
    assert uploaded.code == 201
    listed = await browser.get("/account")
    assert b"laptop" in listed.body and key.encode() not in listed.body
    last_used = re.search(rb'<td>laptop</td>.*?"Expires">Never</td>\s*'
                          rb'<td data-label="Last used">([^<]+)<', listed.body, re.S).group(1)
    assert last_used != b"Never"  # the upload above used it
    key_id = re.search(rb'action="/account/keys/([0-9a-f-]+)/revoke"', listed.body).group(1)
    revoked = await browser.submit("/account", f"/account/keys/{key_id.decode()}/revoke", {})
    assert revoked.code == 303
    again = await server.client.upload("/api/external/upload", image_bytes(), token=key)
    assert again.code == 401
    sxcu = await browser.submit("/account", "/account/sharex", {})
    assert sxcu.code == 200
    assert "attachment" in sxcu.header("content-disposition")
    config = sxcu.json()
    assert config["RequestURL"] == f"{server.base_url}/api/external/upload"
    sharex_key = config["Headers"]["Authorization"].removeprefix("Bearer ")
    works = await server.client.upload("/api/external/upload", image_bytes(), token=sharex_key)
    assert works.code == 201


@pytest_twisted.ensureDeferred
async def test_changing_the_password_keeps_this_browser_and_ends_the_others(server):
    here, elsewhere = _client(server), _client(server)
    await here.login()
    await elsewhere.login()
    wrong = await here.submit("/account", "/account/password", {
        "current": "nope", "password": "new-password-1", "confirm": "new-password-1"})
    assert wrong.code == 422 and b"current password is not right" in wrong.body
    changed = await here.submit("/account", "/account/password", {
        "current": "admin-password-1", "password": "new-password-1",
        "confirm": "new-password-1"})
    assert changed.code == 303
    assert (await here.get("/account")).code == 200
    assert (await elsewhere.get("/account")).code == 303
    await PageClient(server.base_url).login("admin", "new-password-1")


@pytest_twisted.ensureDeferred
async def test_users_delete_their_own_account_from_the_account_page(server):
    await server.imagehost.accounts.create_user("carol", "carol@example.com", "carol-password")
    browser = _client(server)
    await browser.login("carol", "carol-password")
    image_id = await _uploaded(browser)
    page = await browser.get("/account")
    assert b'action="/account/delete"' in page.body
    for forged in ({"deletePassword": "carol-password"},
                   {"deletePassword": "carol-password", "csrf": "0" * 64}):
        assert (await browser.post("/account/delete", forged)).code == 403
    wrong = await browser.submit("/account", "/account/delete", {"deletePassword": "nope"})
    assert wrong.code == 422 and b"current password is not right" in wrong.body
    assert (await server.client.get(f"/image/{image_id}.jpg")).code == 200
    deleted = await browser.submit("/account", "/account/delete",
                                   {"deletePassword": "carol-password"})
    assert (deleted.code, deleted.header("location")) == (303, "/")
    assert (await browser.get("/account")).code == 303
    assert (await server.client.get(f"/image/{image_id}.jpg")).code == 404
    refused = await server.client.post_json("/api/auth/login", {
        "username": "carol", "password": "carol-password"})
    assert refused.code == 401
    # The only administrator is told to make another one first.
    admin = _client(server)
    await admin.login()
    only = await admin.submit("/account", "/account/delete", {"deletePassword": ADMIN[1]})
    assert only.code == 403 and b"only administrator" in only.body


@pytest_twisted.ensureDeferred
async def test_admins_delete_users_saying_what_happens_to_their_images(server):
    accounts = server.imagehost.accounts
    for name in ("carol", "dave"):
        await accounts.create_user(name, f"{name}@example.com", f"{name}-password")
    carol = _client(server)
    await carol.login("carol", "carol-password")
    kept, gone = await _uploaded(carol), await _uploaded(carol)
    browser = _client(server)
    await browser.login()
    page = (await browser.get("/admin")).body
    assert b'action="/admin/users/carol/delete"' in page
    assert b'action="/admin/users/admin/delete"' not in page  # not oneself
    unsaid = await browser.submit("/admin", "/admin/users/carol/delete", {"images": ""})
    assert unsaid.code == 422 and b"Say what happens to the user" in unsaid.body
    forged = await browser.post("/admin/users/carol/delete", {"images": "delete"})
    assert forged.code == 403
    me = await accounts.user_named("admin")
    own = await browser.submit("/admin", "/admin/users/admin/delete", {"images": "delete"})
    assert own.code == 403
    dave = await accounts.user_named("dave")
    handed = await browser.submit("/admin", "/admin/users/carol/delete",
                                  {"images": f"handOver:{dave.id}"})
    assert (handed.code, handed.header("location")) == (303, "/admin?done=deleted")
    assert (await carol.get("/images")).code == 303
    for image_id in (kept, gone):
        assert (await server.imagehost.library.detail(
            Principal(dave), image_id)).owner_id == dave.id
    deleted = await browser.submit("/admin", "/admin/users/dave/delete", {"images": "delete"})
    assert deleted.code == 303
    assert (await server.client.get(f"/image/{kept}.jpg")).code == 404
    assert [u.username for u in await accounts.list_users()] == [me.username]


@pytest_twisted.ensureDeferred
async def test_admin_settings_and_users(server):
    browser = _client(server)
    await browser.login()
    visitor = _client(server)
    assert b'id="upload-form"' not in (await visitor.get("/")).body
    saved = await browser.submit("/admin", "/admin/settings", [
        ("allowGuestUploads", "true"), ("maxSize", "2.5"),
        ("allowedMimeTypes", "image/png"), ("allowedMimeTypes", "image/jpeg")])
    assert saved.code == 303
    public = (await server.client.get("/api/settings/public")).json()["data"]
    assert public["access"] == {"allowGuestUploads": True, "allowRegistration": False}
    assert public["image"] == {"maxSize": 2_500_000,
                               "allowedMimeTypes": ["image/png", "image/jpeg"]}
    assert b'id="upload-form"' in (await visitor.get("/")).body
    guest = await visitor.upload(image_bytes())
    assert guest.code == 303
    bad = await browser.submit("/admin", "/admin/settings", [("maxSize", "inf")])
    assert bad.code == 422 and b"between 1 and" in bad.body
    made = await browser.submit("/admin", "/admin/users", {
        "username": "frank", "email": "frank@example.com", "password": "frank-password"})
    frank = await server.imagehost.accounts.user_named("frank")
    await server.imagehost.quotas.set_own_limits(frank, bytes=2_500_000, images=10)
    assert b"0 of 10 images, 0 of 2.5 MB" in (await browser.get("/admin")).body
    assert made.code == 303
    frank = _client(server)
    await frank.login("frank", "frank-password")
    assert (await frank.get("/admin")).code == 403
    disabled = await browser.submit("/admin", "/admin/users/frank/active", {"active": "false"})
    assert disabled.code == 303
    assert (await frank.get("/images")).code == 303
    own = await browser.submit("/admin", "/admin/users/admin/active", {"active": "false"})
    assert own.code == 403


@pytest_twisted.ensureDeferred
async def test_every_page_weighs_under_50_kb_before_images(server):
    """HTML, CSS and JavaScript of each page (what a first visit downloads before images)."""
    browser = _client(server)
    await browser.login()
    image_id = await _uploaded(browser, description="weight")
    for n in range(49):
        await _uploaded(browser, description=f"more {n}")
    weights = {}
    visitor = _client(server)
    for client, path in [(visitor, "/login"), (visitor, "/no-such-page"),
                         *((browser, p) for p in ("/", "/images", "/explore", f"/i/{image_id}",
                                                  "/account", "/admin"))]:
        page = await client.get(path)
        assets = re.findall(r'(?:href|src)="(/static/[^"]+)"', page.body.decode())
        assert assets, path
        sizes = [len((await browser.get(a.replace("&amp;", "&"))).body) for a in assets]
        weights[path] = len(page.body) + sum(sizes)
    print("page weights (bytes):", weights)
    assert max(weights.values()) < 50_000, weights
    assert weights["/images"] > 10_000  # the grid of 50 is in it


@pytest_twisted.ensureDeferred
async def test_page_requests_are_counted_by_their_route_in_the_metrics(server):
    browser = _client(server)
    await browser.get("/i/00000000-0000-0000-0000-000000000000")
    await browser.get("/login")
    text = (await server.client.get("/metrics")).body.decode()
    assert 'route="/i/<string:image_id>",status="404"' in text
    assert 'method="GET",route="/login",status="200"' in text


@pytest_twisted.ensureDeferred
async def test_someone_elses_public_image_can_be_seen_not_changed(server):
    owner = _client(server)
    await owner.login()
    image_id = await _uploaded(owner, description="mine", isPublic="true")
    await server.imagehost.accounts.create_user("trudy", "t@example.com", "trudy-pass")
    trudy = _client(server)
    await trudy.login("trudy", "trudy-pass")
    page = await trudy.get(f"/i/{image_id}")
    assert page.code == 200 and b'id="edit-form"' not in page.body
    refused = await trudy.submit(f"/i/{image_id}", f"/i/{image_id}/edit", {"description": "x"})
    assert refused.code == 403
    assert b"mine" in (await owner.get(f"/i/{image_id}")).body
