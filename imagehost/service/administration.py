"""User administration (the admin API and the CLI) and the deletion of one's own account.

Every change that takes a login away (disable, password reset, delete) ends the user's
browser sessions, refresh tokens and access tokens on every daemon at once: they are
checked against the database on each request.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from imagehost.db import accounts as q
from imagehost.db.accounts import DeletedUser, HandOverRefused, User
from imagehost.db.library import Ordering, SortKey
from imagehost.db.quotas import Limits, Usage
from imagehost.service.accounts import Accounts
from imagehost.service.errors import BadRequest, Forbidden, NotFound, ValidationFailed
from imagehost.service.library import Cursor, Library, parse_limit
from imagehost.service.pools import Pools
from imagehost.service.quotas import Quotas, hand_over_refused

ROLES = ("ROLE_USER", "ROLE_ADMIN")
#: What a user's deletion does with their images: one of these, always said explicitly.
DELETE_IMAGES, HAND_OVER_IMAGES = "delete", "handOver"
_ORDER = Ordering("created_at", descending=False)


@dataclass(frozen=True)
class ManagedUser:
    """A user as an administrator sees them: with what they store and may store."""

    user: User
    usage: Usage
    limits: Limits


@dataclass(frozen=True)
class UserListing:
    """One page of the users, oldest first."""

    users: list[ManagedUser]
    total: int
    next_cursor: str | None


class Administration:
    """What administrators do with accounts, and what a user may do to their own."""

    def __init__(self, pools: Pools, accounts: Accounts, quotas: Quotas, library: Library, *,
                 cursor_key: bytes):
        self._db = pools.db
        self._accounts = accounts
        self._quotas = quotas
        self._library = library
        self._cursor_key = cursor_key

    # -- reading ---------------------------------------------------------------------

    async def list_users(self, limit: str | None = None,
                         cursor: str | None = None) -> UserListing:
        """A page of users with their usage; ``cursor`` continues from ``next_cursor``."""
        after = None
        if cursor:
            decoded = Cursor.decode(cursor, self._cursor_key)
            if decoded.ordering != _ORDER or decoded.backwards:
                raise BadRequest('"cursor" is malformed; use meta.nextCursor.')
            after = (decoded.key.value, decoded.key.image_id)
        page = await self._db.run(q.users_page, parse_limit(limit), after)
        usage = await self._quotas.usage_of(page.users)
        listed = [ManagedUser(u, *usage[u.id]) for u in page.users]
        next_cursor = None
        if page.more:
            last = page.users[-1]
            next_cursor = Cursor(_ORDER, SortKey(last.created_at, last.id)).encode(
                self._cursor_key)
        return UserListing(listed, page.total, next_cursor)

    async def managed(self, user_id: str) -> ManagedUser:
        """One user with their usage; NotFound if there is none."""
        user = await self._accounts.user(user_id)
        usage, limits = await self._quotas.usage(user)
        return ManagedUser(user, usage, limits)

    # -- changing --------------------------------------------------------------------

    async def create_user(self, body: dict[str, Any]) -> ManagedUser:
        """A new user from the admin API's fields (``username``, ``email``, ``password``,
        optional ``roles`` and ``displayName``)."""
        display_name = body.get("displayName") or ""
        if not isinstance(display_name, str) or len(display_name) > 255:
            raise ValidationFailed.one("displayName", "This value should be a string of at "
                                                      "most 255 characters.")
        is_admin = _is_admin(body.get("roles", ["ROLE_USER"]))
        user = await self._accounts.create_user(
            body.get("username"), body.get("email"), body.get("password"),
            is_admin=is_admin, display_name=display_name)
        return await self.managed(user.id)

    async def change_user(self, acting: User | None, user_id: str, *, roles: object = None,
                          is_active: object = None, quota: object = None) -> ManagedUser:
        """Change roles, the active flag and own limits (None leaves each as it is).

        ``acting`` is the administrator (None: the operator's CLI); they may not take
        their own admin role or disable themselves.
        """
        user = await self._accounts.user(user_id)
        is_admin = None if roles is None else _is_admin(roles)
        if is_active is not None and not isinstance(is_active, bool):
            raise ValidationFailed.one("isActive", "This value should be of type bool.")
        if quota is not None and not (isinstance(quota, dict)
                                      and set(quota) <= {"bytes", "images"}):
            raise ValidationFailed.one("quota", 'This value should be an object with "bytes" '
                                                'and/or "images".')
        if acting is not None and acting.id == user.id and (
                is_admin is False or is_active is False):
            raise Forbidden("You cannot take your own admin role or disable yourself.")
        if quota:
            user = await self._quotas.set_own_limits(user, bytes=quota.get("bytes"),
                                                     images=quota.get("images"))
        if is_admin is not None and is_admin != user.is_admin:
            await self._db.run(q.update_user, user.id, is_admin=is_admin)
        if is_active is not None and is_active != user.is_active:
            await self._accounts.set_user_active(user, is_active)
        return await self.managed(user.id)

    async def reset_password(self, user_id: str, password: object) -> None:
        """A new password set by an administrator; every login of the user ends."""
        await self._accounts.reset_password(await self._accounts.user(user_id), password)

    async def delete_user(self, acting: User | None, user_id: str, *, images: object,
                          to: object = None) -> DeletedUser:
        """Delete a user; ``images`` says what happens to theirs: DELETE_IMAGES, or
        HAND_OVER_IMAGES to the user ``to``. There is no default.

        ``acting`` (None: the CLI) may not delete themselves here; see ``delete_own``.
        """
        user = await self._accounts.user(user_id)
        if acting is not None and acting.id == user.id:
            raise Forbidden("Delete your own account with DELETE /api/user.")
        receiver = await self._receiver(user, images, to)
        return await self._delete(user, receiver)

    async def delete_own(self, user: User, password: object,
                         prop: str = "password") -> DeletedUser:
        """A user deletes their own account and images, confirming with their password
        (the field ``prop`` of violations). The only active administrator cannot
        (Forbidden): make another one first."""
        await self._accounts.check_password(user, password, prop)
        if user.is_admin:
            others = [u for u in await self._accounts.list_users()
                      if u.is_admin and u.is_active and u.id != user.id]
            if not others:
                raise Forbidden("You are the only administrator; make another user an "
                                "administrator first.")
        return await self._delete(user, None)

    async def _receiver(self, user: User, images: object, to: object) -> User | None:
        if images == DELETE_IMAGES:
            return None
        if images != HAND_OVER_IMAGES:
            raise ValidationFailed.one(
                "images", f'Say what happens to the user\'s images: "{DELETE_IMAGES}", or '
                          f'"{HAND_OVER_IMAGES}" with "to" (the id of the user who gets them).')
        if not isinstance(to, str) or not to:
            raise ValidationFailed.one("to", "This value should be the id of a user.")
        if to == user.id:
            raise ValidationFailed.one("to", "The images cannot go to the user being deleted.")
        receiver = await self._db.run(q.user_by_id, to)
        if receiver is None:
            raise ValidationFailed.one("to", "No such user.")
        return receiver

    async def _delete(self, user: User, receiver: User | None) -> DeletedUser:
        """Delete ``user``, handing their images to ``receiver`` (None: deleting them);
        all or nothing: a hand-over past the receiver's quota is ValidationFailed on
        ``to`` and changes nothing."""
        if receiver is None:
            deleted = await self._db.run(q.delete_user, user.id, None)
        else:
            limits = await self._quotas.limits(receiver)
            deleted = await self._db.run(q.delete_user, user.id, receiver.id, limits)
            if isinstance(deleted, HandOverRefused):
                raise hand_over_refused(receiver.username, limits, deleted.receiver,
                                        deleted.moving)
        if deleted is None:
            raise NotFound("No such user.")
        await self._library.remove_deleted(deleted.removed)
        return deleted


def _is_admin(roles: object) -> bool:
    if (not isinstance(roles, list) or not all(isinstance(r, str) for r in roles)
            or not set(roles) <= set(ROLES) or "ROLE_USER" not in roles):
        raise ValidationFailed.one("roles", 'This value should be ["ROLE_USER"] or '
                                            '["ROLE_USER", "ROLE_ADMIN"].')
    return "ROLE_ADMIN" in roles


def users_cursor_key(secret: bytes) -> bytes:
    """The key that signs user-list cursors (not the feeds' key: a feed cursor is no
    place in the user list)."""
    return hmac.new(secret, b"imagehost user list cursor", hashlib.sha256).digest()
