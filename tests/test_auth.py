"""Accounts over HTTP: login, refresh rotation, logout, signup, the current user,
API keys and settings."""

import json
from datetime import UTC, datetime, timedelta

import jwt
import pytest_twisted

from tests.conftest import ADMIN, image_bytes


async def make_user(server, username="alice", password="alice-password", admin=False):
    await server.imagehost.accounts.create_user(username, f"{username}@example.com", password,
                                                is_admin=admin)
    tokens = await server.client.login(username, password)
    return server.client.with_token(tokens["access_token"])


def secret_of(server) -> bytes:
    return (server.data_dir / "secret.key").read_bytes().strip()


@pytest_twisted.ensureDeferred
async def test_login_by_username_or_email_and_current_user(server):
    for login in (ADMIN[0], ADMIN[2]):
        response = await server.client.post_json(
            "/api/auth/login", {"username": login, "password": ADMIN[1]})
        assert response.code == 200
        assert set(response.json()) == {"access_token", "refresh_token"}
    me = await server.client.get("/api/user", token=response.json()["access_token"])
    assert me.code == 200
    data = me.json()["data"]
    assert set(data) == {"id", "email", "username", "displayName", "roles", "createdAt"}
    assert (data["username"], data["email"]) == (ADMIN[0], ADMIN[2])
    assert data["roles"] == ["ROLE_USER", "ROLE_ADMIN"]
    assert datetime.fromisoformat(data["createdAt"]).tzinfo is not None


@pytest_twisted.ensureDeferred
async def test_bad_credentials_and_disabled_users_get_401(server):
    for body in ({"username": ADMIN[0], "password": "wrong"},
                 {"username": "nobody", "password": ADMIN[1]}):
        response = await server.client.post_json("/api/auth/login", body)
        assert response.code == 401
        assert response.json()["error"]["title"] == "Unauthorized"
    await make_user(server, "bob", "bob-password")
    await server.imagehost.accounts.set_active("bob", False)
    response = await server.client.post_json("/api/auth/login",
                                             {"username": "bob", "password": "bob-password"})
    assert response.code == 401


@pytest_twisted.ensureDeferred
async def test_malformed_login_bodies_get_400(server):
    for raw in (b"not json", b"[1, 2]", b'{"username": 5}'):
        response = await server.client.request(
            "POST", "/api/auth/login", data=raw, headers={"Content-Type": "application/json"})
        assert response.code == 400, raw
        assert "message" in response.json()["error"]


@pytest_twisted.ensureDeferred
async def test_refresh_rotates_and_reuse_revokes_the_family(server):
    first = await server.client.login()
    rotated = await server.client.post_json("/api/auth/refresh",
                                            {"refresh_token": first["refresh_token"]})
    assert rotated.code == 200
    second = rotated.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert (await server.client.get("/api/user", token=second["access_token"])).code == 200

    reused = await server.client.post_json("/api/auth/refresh",
                                           {"refresh_token": first["refresh_token"]})
    assert reused.code == 401
    # Reuse means theft: the newer token of the same family is revoked too.
    after = await server.client.post_json("/api/auth/refresh",
                                          {"refresh_token": second["refresh_token"]})
    assert after.code == 401


@pytest_twisted.ensureDeferred
async def test_logout_ends_the_session(server):
    tokens = await server.client.login()
    response = await server.client.post_json("/api/auth/logout",
                                             {"refresh_token": tokens["refresh_token"]})
    assert response.code == 204
    refreshed = await server.client.post_json("/api/auth/refresh",
                                              {"refresh_token": tokens["refresh_token"]})
    assert refreshed.code == 401
    missing = await server.client.post_json("/api/auth/refresh", {})
    assert missing.code == 400


@pytest_twisted.ensureDeferred
async def test_expired_forged_and_unsigned_tokens_are_refused(server):
    tokens = await server.client.login()
    user_id = (await server.client.get("/api/user", token=tokens["access_token"])).json()[
        "data"]["id"]
    past = datetime.now(UTC) - timedelta(hours=2)
    expired = jwt.encode({"sub": user_id, "iat": past, "exp": past + timedelta(hours=1),
                          "typ": "access"}, secret_of(server), algorithm="HS256")
    forged = jwt.encode({"sub": user_id, "iat": datetime.now(UTC),
                         "exp": datetime.now(UTC) + timedelta(hours=1), "typ": "access"},
                        b"not-the-secret-but-long-enough-for-hs256", algorithm="HS256")
    unsigned = jwt.encode({"sub": user_id, "exp": datetime.now(UTC) + timedelta(hours=1),
                           "typ": "access"}, None, algorithm="none")
    for token in (expired, forged, unsigned, "garbage"):
        response = await server.client.get("/api/user", token=token)
        assert response.code == 401, token
    assert (await server.client.get("/api/user")).code == 401


@pytest_twisted.ensureDeferred
async def test_signup_follows_the_registration_setting(server, admin):
    body = {"email": "new@example.com", "username": "newbie", "password": "long-enough",
            "confirm": "long-enough"}
    assert (await server.client.post_json("/api/auth/signup", body)).code == 403
    response = await admin.post_json("/api/settings", {"category": "access",
                                                       "settings": {"allowRegistration": True}})
    assert response.code == 204
    created = await server.client.post_json("/api/auth/signup", body)
    assert created.code == 201
    assert set(created.json()) == {"id"}
    await server.client.login("newbie", "long-enough")

    taken = await server.client.post_json("/api/auth/signup", body)
    assert taken.code == 422
    assert {v["property"] for v in taken.json()["error"]["violations"]} == {"email", "username"}
    bad = await server.client.post_json("/api/auth/signup", {
        "email": "nope", "username": "x", "password": "short", "confirm": "short"})
    assert bad.code == 422
    assert {v["property"] for v in bad.json()["error"]["violations"]} == {
        "email", "username", "password"}
    mismatch = await server.client.post_json("/api/auth/signup", dict(body, confirm="other"))
    assert mismatch.code == 422
    assert mismatch.json()["error"]["violations"][0]["property"] == "confirm"


@pytest_twisted.ensureDeferred
async def test_api_key_lifecycle(server, admin):
    created = await admin.post_json("/api/user/api-keys", {"name": "sharex"})
    assert created.code == 201
    new = created.json()
    assert set(new) == {"key", "keyId", "name", "expiresAt"}
    assert new["key"].startswith("sk_") and len(new["key"]) == 3 + 64
    assert new["expiresAt"] is None

    upload = await server.client.upload("/api/external/upload", image_bytes(), token=new["key"])
    assert upload.code == 201
    assert (await server.client.get("/api/user", token=new["key"])).code == 200

    listed = (await admin.get("/api/user/api-keys")).json()["data"]
    assert [k["id"] for k in listed] == [new["keyId"]]
    assert set(listed[0]) == {"id", "name", "createdAt", "expiresAt", "lastUsedAt", "isExpired"}
    assert listed[0]["lastUsedAt"] is not None and listed[0]["isExpired"] is False
    assert new["key"] not in str(listed)

    # API keys may not manage API keys.
    assert (await server.client.get("/api/user/api-keys", token=new["key"])).code == 401

    assert (await admin.request("DELETE", f"/api/user/api-keys/{new['keyId']}")).code == 204
    revoked = await server.client.upload("/api/external/upload", image_bytes(),
                                         token=new["key"])
    assert revoked.code == 401
    assert (await admin.request("DELETE", f"/api/user/api-keys/{new['keyId']}")).code == 404


@pytest_twisted.ensureDeferred
async def test_a_malformed_api_key_is_refused_like_an_unknown_one(server):
    unknown = "sk_" + "0" * 64
    refusal = await server.client.get("/api/user", token=unknown)
    assert refusal.code == 401
    assert refusal.json() == {"error": {"title": "Unauthorized",
                                        "message": "Invalid, revoked or expired API key."}}
    for key in ("sk_", "sk_" + "0" * 63, "sk_" + "0" * 65, "sk_" + "A" * 64, "sk_" + "g" * 64,
                "sk_" + "0" * 63 + "\xe9", "sk_" + "0" * 63 + "%", "sk_" + "0" * 4000):
        for path in ("/api/user", "/api/images/history/1"):
            response = await server.client.get(path, token=key)
            assert (response.code, response.json()) == (401, refusal.json()), (path, key)
        upload = await server.client.upload("/api/external/upload", image_bytes(), token=key)
        assert (upload.code, upload.json()) == (401, refusal.json()), key
        # Where API keys are not accepted, it is refused as an API key.
        keys = await server.client.get("/api/user/api-keys", token=key)
        assert keys.code == 401
        assert keys.json()["error"]["message"] == "API keys are not accepted here."
    assert (await server.client.get("/health")).code == 200


@pytest_twisted.ensureDeferred
async def test_api_key_expiry_and_ownership(server, admin):
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    created = (await admin.post_json("/api/user/api-keys",
                                     {"name": "brief", "expiresAt": soon})).json()
    assert datetime.fromisoformat(created["expiresAt"]) == datetime.fromisoformat(soon)
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    await deferLater(reactor, 1.2, lambda: None)
    assert (await server.client.get("/api/user", token=created["key"])).code == 401
    listed = (await admin.get("/api/user/api-keys")).json()["data"]
    assert listed[0]["isExpired"] is True

    alice = await make_user(server)
    response = await alice.request("DELETE", f"/api/user/api-keys/{created['keyId']}")
    assert response.code == 404

    for body in ({"name": ""}, {"name": "x", "expiresAt": "tomorrow"},
                 {"name": "x", "expiresAt": "2001-01-01T00:00:00+00:00"}):
        assert (await admin.post_json("/api/user/api-keys", body)).code == 422, body


@pytest_twisted.ensureDeferred
async def test_settings_public_admin_and_validation(server, admin):
    public = await server.client.get("/api/settings/public")
    assert public.code == 200
    assert public.json() == {"data": {
        "access": {"allowGuestUploads": False, "allowRegistration": False},
        "image": {"maxSize": 15000000,
                  "allowedMimeTypes": ["image/jpeg", "image/png", "image/webp", "image/gif",
                                       "image/heic"]}}}
    assert (await admin.get("/api/settings")).json()["data"]["image"]["maxSize"] == 15000000
    assert (await server.client.get("/api/settings")).code == 401
    alice = await make_user(server)
    assert (await alice.get("/api/settings")).code == 403
    assert (await alice.post_json("/api/settings", {"category": "access", "settings": {
        "allowGuestUploads": True}})).code == 403

    for body in ({"category": "nope", "settings": {"x": 1}},
                 {"category": "access", "settings": {"allowGuestUploads": "yes"}},
                 {"category": "access", "settings": {"unknown": True}},
                 {"category": "image", "settings": {"maxSize": 0}},
                 {"category": "image", "settings": {"allowedMimeTypes": ["application/pdf"]}}):
        response = await admin.post_json("/api/settings", body)
        assert response.code == 422, body
        assert response.json()["error"]["violations"]
    unknown = await admin.post_json("/api/settings", {"category": "access", "settings": {
        "colour": 1, "maxSize": 10}})
    assert unknown.json()["error"]["violations"] == [
        {"property": "access.colour", "message": '"colour" is not a setting of "access"; '
         "its settings are allowGuestUploads, allowRegistration."},
        {"property": "access.maxSize", "message": '"maxSize" is not a setting of "access" '
         "(there is image.maxSize); its settings are allowGuestUploads, allowRegistration."}]

    ok = await admin.post_json("/api/settings", {"category": "image", "settings": {
        "maxSize": 1000, "allowedMimeTypes": ["image/png", "image/avif"]}})
    assert ok.code == 204
    image = (await server.client.get("/api/settings/public")).json()["data"]["image"]
    assert image == {"maxSize": 1000, "allowedMimeTypes": ["image/png", "image/avif"]}


@pytest_twisted.ensureDeferred
async def test_wrong_method_is_405_with_envelope(server):
    response = await server.client.get("/api/auth/login")
    assert response.code == 405
    assert response.json()["error"]["title"] == "MethodNotAllowed"


@pytest_twisted.ensureDeferred
async def test_login_attempts_are_throttled_per_username_and_per_address(make_server):

    server = await make_server({"limits": {
        "logins_per_minute_per_user": 3, "logins_per_minute_per_ip": 6}})
    wrong = {"username": ADMIN[0], "password": "wrong"}
    codes = [(await server.client.post_json("/api/auth/login", wrong)).code
             for _ in range(4)]
    assert codes == [401, 401, 401, 429]
    limited = await server.client.post_json("/api/auth/login", dict(wrong, password=ADMIN[1]))
    assert limited.code == 429
    assert int(limited.header("Retry-After")) >= 1
    assert limited.json()["error"]["title"] == "RateLimited"
    # Another username from the same address: allowed until the address budget is spent.
    other = {"username": "someone", "password": "x"}
    assert (await server.client.post_json("/api/auth/login", other)).code == 401
    assert (await server.client.post_json("/api/auth/login", other)).code == 429


@pytest_twisted.ensureDeferred
async def test_guest_uploads_are_throttled_per_address(make_server):

    server = await make_server({
        "limits": {"guest_uploads_per_minute_per_ip": 2},
        "access": {"allow_guest_uploads": "true"}})
    codes = [(await server.client.upload("/api/guest/upload", image_bytes())).code
             for _ in range(3)]
    assert codes == [201, 201, 429]
    admin = await server.admin()
    assert (await admin.upload("/api/upload", image_bytes())).code == 201


def login_from(server, forwarded_for: str | None, username: str = "nobody"):
    headers = {"Content-Type": "application/json"}
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    body = json.dumps({"username": username, "password": "wrong"}).encode()
    return server.client.request("POST", "/api/auth/login", data=body, headers=headers)


@pytest_twisted.ensureDeferred
async def test_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(make_server):
    server = await make_server({"limits": {
        "logins_per_minute_per_ip": 2, "logins_per_minute_per_user": 0}})
    codes = [(await login_from(server, f"10.0.0.{n}")).code for n in range(3)]
    assert codes == [401, 401, 429]  # a client cannot pick a fresh address per try


@pytest_twisted.ensureDeferred
async def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit(
        make_server, tmp_path):
    access_log = tmp_path / "access.log"
    server = await make_server({
        "server": {"trusted_proxies": "127.0.0.0/8, ::1", "access_log": str(access_log)},
        "limits": {"logins_per_minute_per_ip": 2, "logins_per_minute_per_user": 0}})
    assert [(await login_from(server, "203.0.113.7")).code for _ in range(3)] == [
        401, 401, 429]
    assert (await login_from(server, "198.51.100.1")).code == 401  # another client
    # What a client writes itself sits left of what the proxy appended: it is not believed.
    assert (await login_from(server, "198.51.100.9, 203.0.113.7")).code == 429
    # Several trusted hops: the client is the first untrusted address from the right.
    assert (await login_from(server, "192.0.2.5, 127.0.0.2")).code == 401
    assert (await login_from(server, "not-an-address")).code == 401  # the proxy itself
    await server.service.stopService()
    clients = [line.split()[1] for line in access_log.read_text().splitlines()]
    assert clients == ["203.0.113.7"] * 3 + ["198.51.100.1", "203.0.113.7", "192.0.2.5",
                                              "127.0.0.1"]
