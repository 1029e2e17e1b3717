"""The admin API (users: list, create, roles, disable, password reset, delete) and
self-service (own password, own account), every status, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest_twisted

from tests.conftest import ADMIN, Client, image_bytes
from tests.test_bad_input import refused, send_json
from tests.test_cli import local_cli
from tests.web_support import PageClient

PASSWORD = "user-password-1"


async def make_user(admin: Client, username: str, **extra) -> dict:
    response = await admin.post_json("/api/admin/users", {
        "username": username, "email": f"{username}@example.com", "password": PASSWORD,
        **extra})
    assert response.code == 201, response.body
    return response.json()["data"]


async def logged_in(server, username: str, password: str = PASSWORD) -> tuple[Client, dict]:
    tokens = await server.client.login(username, password)
    return server.client.with_token(tokens["access_token"]), tokens


def originals(data_dir: Path) -> set[str]:
    return {p.stem for p in (data_dir / "originals").rglob("*") if p.is_file()}


@pytest_twisted.ensureDeferred
async def test_the_user_list_pages_by_cursor_with_usage(server, admin):
    names = ["carol", "dave", "erin", "frank"]
    made = [await make_user(admin, name) for name in names]
    carol, _ = await logged_in(server, "carol")
    picture = image_bytes("PNG", (20, 10))
    assert (await carol.upload("/api/upload", picture)).code == 201

    first = await admin.get("/api/admin/users?limit=2")
    assert first.code == 200
    page = first.json()
    assert [u["username"] for u in page["data"]] == ["admin", "carol"]
    assert page["meta"]["total"] == 5 and page["meta"]["size"] == 2
    assert page["data"][1]["usage"] == {"bytes": len(picture), "images": 1,
                                        "limits": {"bytes": None, "images": None}}
    assert page["data"][1]["quota"] == {"bytes": "default", "images": "default"}
    assert page["data"][1]["isActive"] is True and page["data"][1]["id"] == made[0]["id"]
    seen = [u["username"] for u in page["data"]]
    cursor = page["meta"]["nextCursor"]
    # A user added meanwhile comes at the end, nothing is skipped or repeated.
    await make_user(admin, "grace")
    while cursor:
        page = (await admin.get(f"/api/admin/users?limit=2&cursor={cursor}")).json()
        seen += [u["username"] for u in page["data"]]
        cursor = page["meta"]["nextCursor"]
    assert seen == ["admin", *names, "grace"]

    # A cursor the server did not issue for this list, and bad limits: 400.
    await admin.upload("/api/upload", image_bytes("PNG", (21, 10)), fields={"isPublic": "true"})
    await admin.upload("/api/upload", image_bytes("PNG", (22, 10)), fields={"isPublic": "true"})
    feed = (await admin.get("/api/images/1?limit=1")).json()["meta"]
    assert feed["nextCursor"]
    for query in (f"cursor={feed['nextCursor']}", "cursor=abc.def", "limit=0", "limit=x"):
        await refused(server, await admin.get(f"/api/admin/users?{query}"), 400)
    assert (await admin.get(f"/api/admin/users/{made[0]['id']}")).json()["data"][
        "usage"]["images"] == 1
    await refused(server, await admin.get("/api/admin/users/no-such-user"), 404)
    guests = await admin.get("/api/admin/guests/usage")
    assert guests.json()["data"] == {"bytes": 0, "images": 0,
                                     "limits": {"bytes": None, "images": None}}


@pytest_twisted.ensureDeferred
async def test_only_administrators_with_a_jwt_reach_the_admin_api(server, admin):
    user = await make_user(admin, "carol")
    carol, _ = await logged_in(server, "carol")
    admin_user = await server.imagehost.accounts.user_named(ADMIN[0])
    key = (await server.imagehost.accounts.create_api_key(admin_user, "tool")).key
    calls = [("GET", "/api/admin/users", None), ("POST", "/api/admin/users", {}),
             ("GET", f"/api/admin/users/{user['id']}", None),
             ("PATCH", f"/api/admin/users/{user['id']}", {"isActive": False}),
             ("POST", f"/api/admin/users/{user['id']}/password", {"password": "x" * 9}),
             ("DELETE", f"/api/admin/users/{user['id']}", {"images": "delete"}),
             ("GET", "/api/admin/guests/usage", None)]
    for method, path, body in calls:
        for client, status in ((server.client, 401), (carol, 403),
                               (server.client.with_token(key), 401)):
            response = (await client.request(method, path) if body is None else
                        await client.post_json(path, body, method=method))
            await refused(server, response, status)
    # Nothing happened to carol.
    assert (await carol.get("/api/user")).code == 200


@pytest_twisted.ensureDeferred
async def test_create_and_change_users(server, admin):
    created = await make_user(admin, "carol", displayName="Carol C.")
    assert created["roles"] == ["ROLE_USER"] and created["displayName"] == "Carol C."
    error = await refused(server, await admin.post_json("/api/admin/users", {
        "username": "CAROL", "email": "c2@example.com", "password": PASSWORD}), 422)
    assert error["violations"] == [{"property": "username",
                                    "message": "This value is already used."}]
    for body, prop in (({"username": "x", "email": "bad", "password": "short"}, "username"),
                       ({"username": "dave", "email": "d@example.com", "password": PASSWORD,
                         "roles": ["ROLE_ROOT"]}, "roles"),
                       ({"username": "dave", "email": "d@example.com", "password": PASSWORD,
                         "displayName": 7}, "displayName")):
        error = await refused(server, await admin.post_json("/api/admin/users", body), 422)
        assert error["violations"][0]["property"] == prop
    await refused(server, await send_json(admin, "POST", "/api/admin/users", b"{nope"), 400)

    path = f"/api/admin/users/{created['id']}"
    promoted = await admin.post_json(path, {"roles": ["ROLE_USER", "ROLE_ADMIN"],
                                            "quota": {"bytes": 5000, "images": "unlimited"}},
                                     method="PATCH")
    assert promoted.code == 200, promoted.body
    data = promoted.json()["data"]
    assert data["roles"] == ["ROLE_USER", "ROLE_ADMIN"]
    assert data["quota"] == {"bytes": 5000, "images": "unlimited"}
    assert data["usage"]["limits"] == {"bytes": 5000, "images": None}
    carol, _ = await logged_in(server, "carol")
    assert (await carol.get("/api/settings")).code == 200
    for body, prop in (({"roles": "ROLE_ADMIN"}, "roles"), ({"isActive": "no"}, "isActive"),
                       ({"quota": {"bytes": -5}}, "quota.bytes"),
                       ({"quota": {"files": 1}}, "quota")):
        error = await refused(server, await admin.post_json(path, body, method="PATCH"), 422)
        assert error["violations"][0]["property"] == prop
    await refused(server, await admin.post_json("/api/admin/users/nobody", {"isActive": False},
                                                method="PATCH"), 404)
    # An administrator cannot lock themselves out.
    me = (await admin.get("/api/user")).json()["data"]["id"]
    for body in ({"isActive": False}, {"roles": ["ROLE_USER"]}):
        await refused(server, await admin.post_json(f"/api/admin/users/{me}", body,
                                                    method="PATCH"), 403)
    demoted = await admin.post_json(path, {"roles": ["ROLE_USER"]}, method="PATCH")
    assert demoted.json()["data"]["roles"] == ["ROLE_USER"]
    await refused(server, await carol.get("/api/settings"), 403)


@pytest_twisted.ensureDeferred
async def test_disabling_a_user_ends_every_login_at_once_on_every_daemon(make_server,
                                                                        database_url):
    sections = {"database": {"url": database_url}} if database_url else {}
    first, second = await make_server(sections), await make_server(sections)
    admin = await first.admin()
    user = await make_user(admin, "carol")
    carol, tokens = await logged_in(first, "carol")
    carol_user = await first.imagehost.accounts.user_named("carol")
    key = (await first.imagehost.accounts.create_api_key(carol_user, "sharex")).key
    browser = PageClient(second.base_url)
    await browser.login("carol", PASSWORD)
    assert (await browser.get("/account")).code == 200

    path = f"/api/admin/users/{user['id']}"
    disabled = await admin.post_json(path, {"isActive": False}, method="PATCH")
    assert disabled.code == 200 and disabled.json()["data"]["isActive"] is False
    on_second = Client(second.base_url)
    await refused(first, await on_second.get("/api/user", token=tokens["access_token"]), 401)
    await refused(first, await on_second.get("/api/user", token=key), 401)
    await refused(first, await on_second.post_json(
        "/api/auth/refresh", {"refresh_token": tokens["refresh_token"]}), 401)
    assert (await browser.get("/account")).code in (302, 303)
    await refused(first, await on_second.post_json(
        "/api/auth/login", {"username": "carol", "password": PASSWORD}), 401)

    # Enabled again: the API key works again; the old access token does not.
    await admin.post_json(path, {"isActive": True}, method="PATCH")
    assert (await on_second.get("/api/user", token=key)).code == 200
    await refused(first, await carol.get("/api/user"), 401)
    await logged_in(second, "carol")


@pytest_twisted.ensureDeferred
async def test_an_admin_resets_a_password(server, admin):
    user = await make_user(admin, "carol")
    carol, tokens = await logged_in(server, "carol")
    browser = PageClient(server.base_url)
    await browser.login("carol", PASSWORD)
    carol_user = await server.imagehost.accounts.user_named("carol")
    key = (await server.imagehost.accounts.create_api_key(carol_user, "k")).key
    path = f"/api/admin/users/{user['id']}/password"
    error = await refused(server, await admin.post_json(path, {"password": "short"}), 422)
    assert error["violations"][0]["property"] == "password"
    await refused(server, await admin.post_json(path, {}), 422)
    await refused(server, await admin.post_json("/api/admin/users/nobody/password",
                                                {"password": "long-enough-1"}), 404)
    assert (await browser.get("/account")).code == 200
    assert (await admin.post_json(path, {"password": "new-password-1"})).code == 204
    await refused(server, await carol.get("/api/user"), 401)
    assert (await browser.get("/account")).code in (302, 303)  # the browser session ended
    # API keys stay: separate credentials, revoked one by one (README, "Ending logins").
    assert (await server.client.get("/api/user", token=key)).code == 200
    await refused(server, await server.client.post_json(
        "/api/auth/refresh", {"refresh_token": tokens["refresh_token"]}), 401)
    await refused(server, await server.client.post_json(
        "/api/auth/login", {"username": "carol", "password": PASSWORD}), 401)
    await logged_in(server, "carol", "new-password-1")


@pytest_twisted.ensureDeferred
async def test_deleting_a_user_deletes_or_hands_over_their_images(server, admin):
    carol_data, dave_data = await make_user(admin, "carol"), await make_user(admin, "dave")
    carol, _ = await logged_in(server, "carol")
    dave, _ = await logged_in(server, "dave")
    carol_images = [(await carol.upload("/api/upload", image_bytes("PNG", (10 + n, 10)))
                     ).json()["id"] for n in range(2)]
    dave_image = (await dave.upload("/api/upload", image_bytes("PNG", (30, 10)))).json()["id"]
    dave_user = await server.imagehost.accounts.user_named("dave")
    key = (await server.imagehost.accounts.create_api_key(dave_user, "k")).key
    assert (await server.client.get(f"/image/{dave_image}.png?w=5")).code == 200

    carol_path = f"/api/admin/users/{carol_data['id']}"
    for body, prop in (({}, "images"), ({"images": "keep"}, "images"),
                       ({"images": "handOver"}, "to"),
                       ({"images": "handOver", "to": carol_data["id"]}, "to"),
                       ({"images": "handOver", "to": "nobody"}, "to")):
        error = await refused(server, await admin.post_json(carol_path, body,
                                                            method="DELETE"), 422)
        assert error["violations"][0]["property"] == prop, body
    await refused(server, await admin.request("DELETE", carol_path), 400)
    me = (await admin.get("/api/user")).json()["data"]["id"]
    await refused(server, await admin.post_json(f"/api/admin/users/{me}",
                                                {"images": "delete"}, method="DELETE"), 403)
    assert (await carol.get("/api/user")).code == 200  # nothing happened yet

    handed = await admin.post_json(carol_path, {"images": "handOver", "to": dave_data["id"]},
                                   method="DELETE")
    assert handed.code == 200 and handed.json() == {"deletedImages": 0, "handedOverImages": 2}
    await refused(server, await carol.get("/api/user"), 401)
    history = (await dave.get("/api/images/history/1")).json()
    assert sorted(i["id"] for i in history["data"]) == sorted([*carol_images, dave_image])
    await refused(server, await admin.post_json(carol_path, {"images": "delete"},
                                                method="DELETE"), 404)

    deleted = await admin.post_json(f"/api/admin/users/{dave_data['id']}",
                                    {"images": "delete"}, method="DELETE")
    assert deleted.json() == {"deletedImages": 3, "handedOverImages": 0}
    for image_id in [*carol_images, dave_image]:
        await refused(server, await server.client.get(f"/image/{image_id}.png"), 404)
        await refused(server, await server.client.get(f"/image/{image_id}.png?w=5"), 404)
    assert originals(server.data_dir) == set()
    await refused(server, await server.client.get("/api/user", token=key), 401)
    names = [u["username"] for u in (await admin.get("/api/admin/users")).json()["data"]]
    assert names == ["admin"]


@pytest_twisted.ensureDeferred
async def test_users_change_their_own_password(server, admin):
    await make_user(admin, "carol")
    carol, tokens = await logged_in(server, "carol")
    other, other_tokens = await logged_in(server, "carol")
    browser = PageClient(server.base_url)
    await browser.login("carol", PASSWORD)
    carol_user = await server.imagehost.accounts.user_named("carol")
    key = (await server.imagehost.accounts.create_api_key(carol_user, "k")).key

    for body, prop in (({"currentPassword": "wrong-one-1", "newPassword": "new-password-1"},
                        "currentPassword"),
                       ({"currentPassword": PASSWORD, "newPassword": "short"}, "newPassword"),
                       ({"newPassword": "new-password-1"}, "currentPassword")):
        error = await refused(server, await carol.post_json("/api/user/password", body), 422)
        assert error["violations"][0]["property"] == prop
    await refused(server, await server.client.post_json("/api/user/password", {}), 401)
    await refused(server, await server.client.post_json(
        "/api/user/password", {"currentPassword": PASSWORD, "newPassword": "new-password-1"},
        token=key), 401)
    await refused(server, await send_json(carol, "POST", "/api/user/password", b"[1]"), 400)

    changed = await carol.post_json("/api/user/password", {"currentPassword": PASSWORD,
                                                           "newPassword": "new-password-1"})
    assert changed.code == 200
    fresh = changed.json()
    assert (await server.client.get("/api/user", token=fresh["access_token"])).code == 200
    # Every other login ended: the old access tokens, refresh tokens and the browser.
    for token in (tokens["access_token"], other_tokens["access_token"]):
        await refused(server, await server.client.get("/api/user", token=token), 401)
    for token in (tokens["refresh_token"], other_tokens["refresh_token"]):
        await refused(server, await server.client.post_json(
            "/api/auth/refresh", {"refresh_token": token}), 401)
    assert (await browser.get("/account")).code in (302, 303)
    # API keys stay (they are the user's tools, revoked one by one).
    assert (await server.client.get("/api/user", token=key)).code == 200
    refreshed = await server.client.post_json("/api/auth/refresh",
                                              {"refresh_token": fresh["refresh_token"]})
    assert refreshed.code == 200
    await logged_in(server, "carol", "new-password-1")


@pytest_twisted.ensureDeferred
async def test_users_delete_their_own_account(server, admin):
    await make_user(admin, "carol")
    carol, tokens = await logged_in(server, "carol")
    image_id = (await carol.upload("/api/upload", image_bytes("PNG", (12, 10)))).json()["id"]
    error = await refused(server, await carol.post_json("/api/user", {"password": "wrong-1"},
                                                        method="DELETE"), 422)
    assert error["violations"] == [{"property": "password",
                                    "message": "The current password is not right."}]
    await refused(server, await carol.request("DELETE", "/api/user"), 400)
    await refused(server, await server.client.post_json("/api/user", {"password": PASSWORD},
                                                        method="DELETE"), 401)
    assert (await carol.post_json("/api/user", {"password": PASSWORD},
                                  method="DELETE")).code == 204
    await refused(server, await carol.get("/api/user"), 401)
    await refused(server, await server.client.get(f"/image/{image_id}.png"), 404)
    assert originals(server.data_dir) == set()
    await refused(server, await server.client.post_json(
        "/api/auth/login", {"username": "carol", "password": PASSWORD}), 401)
    # The only administrator cannot leave the installation without one.
    error = await refused(server, await admin.post_json("/api/user", {"password": ADMIN[1]},
                                                        method="DELETE"), 403)
    assert "only administrator" in error["message"]


@pytest_twisted.ensureDeferred
async def test_the_cli_deletes_users_saying_what_happens_to_their_images(server, admin):
    await make_user(admin, "carol")
    await make_user(admin, "dave")
    carol, _ = await logged_in(server, "carol")
    image_id = (await carol.upload("/api/upload", image_bytes("PNG", (14, 10)))).json()["id"]
    cmd = local_cli(server)
    assert "--delete-images" in await cmd.fails("user", "delete", "carol", code=2)
    assert "--delete-images" in await cmd.fails("user", "delete", "carol", "--delete-images",
                                                "--hand-images-to", "dave", code=2)
    assert (await cmd.fails("user", "delete", "carol", "--hand-images-to", "nobody")
            ) == 'No user named "nobody".'
    handed = await cmd.json("user", "delete", "carol", "--hand-images-to", "dave")
    assert handed["handedOverImages"] == 1 and handed["handedTo"] == "dave"
    dave, _ = await logged_in(server, "dave")
    assert (await dave.get(f"/api/image/{image_id}/detail")).code == 200
    deleted = (await cmd.ok("user", "delete", "dave", "--delete-images")).stdout
    assert "Deleted dave; 1 images deleted" in deleted
    assert originals(server.data_dir) == set()
