"""Query functions for browser sessions (run on a DB thread)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from imagehost.db.accounts import USER_COLUMNS, User, update_user
from imagehost.db.schema import browser_sessions, refresh_tokens, users


def insert_session(conn: sa.Connection, token_hash: str, user_id: str, created_at: datetime,
                   expires_at: datetime) -> None:
    """Record a new session; the user's expired ones go at the same time."""
    conn.execute(browser_sessions.delete().where(browser_sessions.c.user_id == user_id,
                                                 browser_sessions.c.expires_at <= created_at))
    conn.execute(browser_sessions.insert().values(
        token_hash=token_hash, user_id=user_id, created_at=created_at, expires_at=expires_at))


def session_user(conn: sa.Connection, token_hash: str, now: datetime) -> User | None:
    """The active user of an unexpired session, None otherwise."""
    query = (sa.select(*USER_COLUMNS).select_from(browser_sessions.join(users))
             .where(browser_sessions.c.token_hash == token_hash,
                    browser_sessions.c.expires_at > now, users.c.is_active == sa.true()))
    row = conn.execute(query).mappings().first()
    return None if row is None else User(**row)


def delete_session(conn: sa.Connection, token_hash: str) -> None:
    conn.execute(browser_sessions.delete().where(browser_sessions.c.token_hash == token_hash))


def delete_user_sessions(conn: sa.Connection, user_id: str) -> None:
    """End every browser session of a user (password change, disabled account)."""
    conn.execute(browser_sessions.delete().where(browser_sessions.c.user_id == user_id))


def update_user_ending_logins(conn: sa.Connection, user_id: str, now: datetime,
                              **values) -> bool:
    """Change a user (password, active flag) and end every login of theirs on every
    daemon: browser sessions, refresh tokens, and access tokens (their generation goes
    up). API keys stay; they work while the user is active. False if no such user."""
    changed = update_user(conn, user_id, token_generation=users.c.token_generation + 1,
                          **values)
    delete_user_sessions(conn, user_id)
    conn.execute(refresh_tokens.update().where(refresh_tokens.c.user_id == user_id,
                                               refresh_tokens.c.revoked_at.is_(None))
                 .values(revoked_at=now))
    return changed
