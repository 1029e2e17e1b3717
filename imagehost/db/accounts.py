"""Query functions for users, API keys and refresh tokens (run on a DB thread)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime

import sqlalchemy as sa

from imagehost.db.quotas import Limits, Usage, lock_owners, usage, would_pass
from imagehost.db.schema import api_keys, images, refresh_tokens, users
from imagehost.db.types import identity_key


@dataclass(frozen=True)
class User:
    id: str
    username: str
    email: str
    display_name: str
    password_hash: str
    is_admin: bool
    is_active: bool
    created_at: datetime
    quota_bytes: int | None = None  # own limits: None the default, -1 unlimited
    quota_images: int | None = None
    token_generation: int = 0  # access tokens of an older generation are refused

    @property
    def roles(self) -> list[str]:
        return ["ROLE_USER", "ROLE_ADMIN"] if self.is_admin else ["ROLE_USER"]


@dataclass(frozen=True)
class ApiKey:
    id: str
    user_id: str
    name: str
    key_hash: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None

    def is_expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


@dataclass(frozen=True)
class RefreshToken:
    id: str
    user_id: str
    family_id: str
    token_hash: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None
    revoked_at: datetime | None


#: The columns a User is made of (``users`` also holds the lookup keys).
USER_COLUMNS = tuple(users.c[f.name] for f in fields(User))
_USERS = sa.select(*USER_COLUMNS)


def _one(conn: sa.Connection, record, query) -> object | None:
    row = conn.execute(query).mappings().first()
    return None if row is None else record(**row)


def insert_user(conn: sa.Connection, user: User) -> None:
    conn.execute(users.insert().values(**user.__dict__, username_key=identity_key(user.username),
                                       email_key=identity_key(user.email)))


def user_by_id(conn: sa.Connection, user_id: str) -> User | None:
    return _one(conn, User, _USERS.where(users.c.id == user_id))


def user_by_username(conn: sa.Connection, username: str) -> User | None:
    """The user named ``username`` in any case or Unicode form (the exact spelling first:
    duplicates from before migration 0006 keep it)."""
    query = _USERS.where(sa.or_(users.c.username == username,
                                users.c.username_key == identity_key(username)))
    return _one(conn, User, query.order_by((users.c.username == username).desc()).limit(1))


def user_by_login(conn: sa.Connection, login: str) -> User | None:
    """The user whose username or email is ``login``, in any case or Unicode form."""
    key = identity_key(login)
    matches = (users.c.username == login, users.c.username_key == key,
               users.c.email == login, users.c.email_key == key)
    query = _USERS.where(sa.or_(*matches)).order_by(*(m.desc() for m in matches)).limit(1)
    return _one(conn, User, query)


def username_or_email_taken(conn: sa.Connection, username: str, email: str) -> set[str]:
    """Which of ``username``/``email`` already belong to someone, in any case or form."""
    taken = set()
    if conn.execute(sa.select(users.c.id).where(
            users.c.username_key == identity_key(username))).first():
        taken.add("username")
    if conn.execute(sa.select(users.c.id).where(
            users.c.email_key == identity_key(email))).first():
        taken.add("email")
    return taken


def insert_user_unless_taken(conn: sa.Connection, user: User) -> set[str]:
    """Insert ``user`` unless its username or email is taken; returns the taken fields."""
    taken = username_or_email_taken(conn, user.username, user.email)
    if not taken:
        insert_user(conn, user)
    return taken


def list_users(conn: sa.Connection) -> list[User]:
    return [User(**r) for r in conn.execute(_USERS.order_by(users.c.username)).mappings()]


def user_count(conn: sa.Connection) -> int:
    return conn.execute(sa.select(sa.func.count()).select_from(users)).scalar_one()


def update_user(conn: sa.Connection, user_id: str, **values) -> bool:
    return conn.execute(users.update().where(users.c.id == user_id).values(**values)).rowcount > 0


def insert_api_key(conn: sa.Connection, key: ApiKey) -> None:
    conn.execute(api_keys.insert().values(**key.__dict__))


def api_key_owner(conn: sa.Connection, key_hash: str, now: datetime) -> tuple[ApiKey, User] | None:
    """The key with this hash and its user, stamping ``last_used_at``; None if unknown."""
    key = _one(conn, ApiKey, api_keys.select().where(api_keys.c.key_hash == key_hash))
    if key is None:
        return None
    conn.execute(api_keys.update().where(api_keys.c.id == key.id).values(last_used_at=now))
    return key, user_by_id(conn, key.user_id)


def list_api_keys(conn: sa.Connection, user_id: str | None = None) -> list[ApiKey]:
    query = api_keys.select().order_by(api_keys.c.created_at, api_keys.c.id)
    if user_id is not None:
        query = query.where(api_keys.c.user_id == user_id)
    return [ApiKey(**r) for r in conn.execute(query).mappings()]


def delete_api_key(conn: sa.Connection, key_id: str, user_id: str | None = None) -> bool:
    """Delete a key (only ``user_id``'s when given); True if one was deleted."""
    query = api_keys.delete().where(api_keys.c.id == key_id)
    if user_id is not None:
        query = query.where(api_keys.c.user_id == user_id)
    return conn.execute(query).rowcount > 0


def insert_refresh_token(conn: sa.Connection, token: RefreshToken) -> None:
    conn.execute(refresh_tokens.insert().values(**token.__dict__))


def refresh_token_by_hash(conn: sa.Connection, token_hash: str) -> RefreshToken | None:
    query = refresh_tokens.select().where(refresh_tokens.c.token_hash == token_hash)
    return _one(conn, RefreshToken, query)


def mark_refresh_token_used(conn: sa.Connection, token_id: str, now: datetime) -> bool:
    """Spend a token; False if it was already spent (a concurrent reuse)."""
    query = (
        refresh_tokens.update()
        .where(refresh_tokens.c.id == token_id, refresh_tokens.c.used_at.is_(None))
        .values(used_at=now)
    )
    return conn.execute(query).rowcount == 1


def revoke_refresh_family(conn: sa.Connection, family_id: str, now: datetime) -> None:
    query = (
        refresh_tokens.update()
        .where(refresh_tokens.c.family_id == family_id, refresh_tokens.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    conn.execute(query)


@dataclass(frozen=True)
class UserPage:
    """One page of the users, oldest first."""

    users: list[User]
    more: bool  # users follow the last one
    total: int


def users_page(conn: sa.Connection, limit: int,
               after: tuple[datetime, str] | None = None) -> UserPage:
    """Up to ``limit`` users in the order they were created, after (created_at, id)."""
    query = _USERS.order_by(users.c.created_at, users.c.id).limit(limit + 1)
    if after is not None:
        query = query.where(sa.tuple_(users.c.created_at, users.c.id) > sa.tuple_(*after))
    rows = [User(**r) for r in conn.execute(query).mappings()]
    return UserPage(rows[:limit], len(rows) > limit, user_count(conn))


@dataclass(frozen=True)
class DeletedUser:
    """What went with a deleted user: the images removed (id, mime type) or handed over."""

    removed: list[tuple[str, str]]
    handed_over: int


@dataclass(frozen=True)
class HandOverRefused:
    """A hand-over that would take the receiver past their limits: nothing was changed."""

    receiver: Usage  # what the receiver stores
    moving: Usage  # what the hand-over would add


def delete_user(conn: sa.Connection, user_id: str, hand_to: str | None,
                receiver_limits: Limits = Limits()) -> DeletedUser | HandOverRefused | None:
    """Delete a user with their API keys, tokens and sessions; their images go to
    ``hand_to`` or, when it is None, are deleted (their files are the caller's to remove).
    None if there is no such user; HandOverRefused (and nothing done) when the images
    would take ``hand_to`` past ``receiver_limits``.

    Must be the first function of its transaction: both users are locked first (see
    ``imagehost.db.quotas.lock_owner``), so an upload racing the delete either lands before
    it (and is deleted or handed over with the rest) or fails on the missing user; it
    never becomes a guest upload through ``ON DELETE SET NULL``; and the receiver's usage
    cannot grow between the quota check and the hand-over.
    """
    lock_owners(conn, [user_id] if hand_to is None else [user_id, hand_to])
    if user_by_id(conn, user_id) is None:
        return None
    if hand_to is not None and not receiver_limits.unlimited:
        moving, held = usage(conn, user_id), usage(conn, hand_to)
        if would_pass(receiver_limits, held, moving):
            return HandOverRefused(held, moving)
    owned = images.c.owner_id == user_id
    removed: list[tuple[str, str]] = []
    handed_over = 0
    if hand_to is None:
        removed = [(r.id, r.mime_type) for r in conn.execute(
            sa.select(images.c.id, images.c.mime_type).where(owned))]
        conn.execute(images.delete().where(owned))
    else:
        handed_over = conn.execute(images.update().where(owned).values(owner_id=hand_to)).rowcount
    conn.execute(users.delete().where(users.c.id == user_id))
    return DeletedUser(removed, handed_over)
