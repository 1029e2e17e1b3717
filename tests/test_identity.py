"""Identity: usernames and e-mail addresses are one name in any case or Unicode form."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest_twisted

from imagehost.db import accounts as q
from imagehost.db import create_engine, run_sync, upgrade
from tests.conftest import ADMIN
from tests.test_bad_input import refused


async def signup(server, username: str, email: str, password: str = "bob-password-1"):
    return await server.client.post_json("/api/auth/signup", {
        "username": username, "email": email, "password": password, "confirm": password})


async def enable_registration(admin) -> None:
    response = await admin.post_json("/api/settings", {
        "category": "access", "settings": {"allowRegistration": True}})
    assert response.code == 204


@pytest_twisted.ensureDeferred
async def test_usernames_and_emails_are_unique_in_any_case_and_unicode_form(server, admin):
    await enable_registration(admin)
    assert (await signup(server, "Bob", "Bob@Example.com")).code == 201
    taken = {
        ("bob", "other@example.com"): ["username"],
        ("BOB", "other@example.com"): ["username"],
        ("robert", "bob@example.com"): ["email"],
        ("robert", "BOB@EXAMPLE.COM"): ["email"],
        # fullwidth "ｂｏｂ" is "bob" after NFKC
        ("robert", "\uff42\uff4f\uff42@example.com"): ["email"],
        ("admin", ADMIN[2].upper()): ["email", "username"],
        ("Admin", "x@example.com"): ["username"],
    }
    for (username, email), fields in taken.items():
        error = await refused(server, await signup(server, username, email), 422)
        assert sorted(v["property"] for v in error["violations"]) == fields, (username, email)
        assert {v["message"] for v in error["violations"]} == {"This value is already used."}
    users = await server.imagehost.accounts.list_users()
    assert sorted(u.username for u in users) == ["Bob", "admin"]
    # The CLI finds users the same way.
    assert (await server.imagehost.accounts.user_named("BOB")).username == "Bob"


@pytest_twisted.ensureDeferred
async def test_a_trailing_newline_does_not_pass_the_name_patterns(server, admin):
    await enable_registration(admin)
    for username, email, field in (("alice\n", "alice@example.com", "username"),
                                   ("alice", "alice@example.com\n", "email"),
                                   ("alice", "alice@exa\nmple.com", "email")):
        error = await refused(server, await signup(server, username, email), 422)
        assert [v["property"] for v in error["violations"]] == [field], repr(username)
    assert (await signup(server, "alice", "alice@example.com")).code == 201


@pytest_twisted.ensureDeferred
async def test_login_accepts_either_spelling_in_any_case(server, admin):
    await enable_registration(admin)
    assert (await signup(server, "Bob", "Bob@Example.com")).code == 201
    for login in ("Bob", "bob", "BOB", "bob@example.com", "BOB@EXAMPLE.COM",
                  "\uff42\uff4f\uff42@example.com"):
        response = await server.client.post_json(
            "/api/auth/login", {"username": login, "password": "bob-password-1"})
        assert response.code == 200, login
    wrong = await server.client.post_json("/api/auth/login",
                                          {"username": "bob", "password": "nope-nope"})
    await refused(server, wrong, 401)


@pytest_twisted.ensureDeferred
async def test_the_login_limit_counts_the_account_whatever_its_spelling(make_server):
    server = await make_server({"limits": {
        "logins_per_minute_per_user": 3, "logins_per_minute_per_ip": 100}})
    spellings = [ADMIN[0], ADMIN[2], ADMIN[0].upper(), ADMIN[2].upper()]
    codes = [(await server.client.post_json(
        "/api/auth/login", {"username": login, "password": "wrong"})).code
        for login in spellings]
    assert codes == [401, 401, 401, 429]
    # Unknown names are limited by their normalised form.
    codes = [(await server.client.post_json(
        "/api/auth/login", {"username": login, "password": "wrong"})).code
        for login in ("ghost", "GHOST", "Ghost", "ghost")]
    assert codes == [401, 401, 401, 429]
    assert (await server.client.get("/health")).code == 200


def _insert_before_0006(conn, user_id: str, username: str, email: str, created: datetime) -> None:
    conn.exec_driver_sql(
        "INSERT INTO users (id, username, email, display_name, password_hash, is_admin, "
        "is_active, created_at) VALUES (%s, %s, %s, %s, 'x', false, true, %s)"
        if conn.dialect.name == "postgresql" else
        "INSERT INTO users (id, username, email, display_name, password_hash, is_admin, "
        "is_active, created_at) VALUES (?, ?, ?, ?, 'x', 0, 1, ?)",
        (user_id, username, email, username, created.replace(tzinfo=None)))


def test_migration_0006_keeps_existing_users_that_differ_only_in_case(tmp_path,
                                                                      database_url):
    url = database_url or f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    upgrade(engine, "0005")
    start = datetime(2024, 1, 15, tzinfo=UTC)
    with engine.begin() as conn:
        for n, (username, email) in enumerate((
                ("Bob", "bob@example.com"), ("bob", "BOB@example.com"),
                ("carol", "Carol@example.com"), ("BOB", "b3@example.com"))):
            _insert_before_0006(conn, f"00000000-0000-0000-0000-00000000000{n}", username, email,
                            start + timedelta(minutes=n))
        # What hangs off a user must survive the migration (no rebuild of users).
        conn.exec_driver_sql(
            "INSERT INTO api_keys (id, user_id, name, key_hash, created_at) VALUES "
            + ("(%s, %s, 'k', 'h', %s)" if conn.dialect.name == "postgresql" else
               "(?, ?, 'k', 'h', ?)"),
            ("k1", "00000000-0000-0000-0000-000000000001", start.replace(tzinfo=None)))
    upgrade(engine)

    def by_login(conn, login):
        user = q.user_by_login(conn, login)
        return user and user.username

    # Every row is still there; the oldest owns the plain form, exact spellings still work.
    assert run_sync(engine, by_login, "Bob") == "Bob"
    assert run_sync(engine, by_login, "bOb") == "Bob"
    assert run_sync(engine, by_login, "bob") == "bob"
    assert run_sync(engine, by_login, "BOB") == "BOB"
    assert run_sync(engine, by_login, "BOB@example.com") == "bob"
    assert run_sync(engine, by_login, "Bob@Example.com") == "Bob"
    assert run_sync(engine, by_login, "carol@example.com") == "carol"
    assert sorted(u.username for u in run_sync(engine, q.list_users)) == [
        "BOB", "Bob", "bob", "carol"]
    assert run_sync(engine, q.username_or_email_taken, "BoB", "CAROL@example.com") == {
        "username", "email"}
    assert [k.id for k in run_sync(engine, q.list_api_keys)] == ["k1"]
    engine.dispose()
