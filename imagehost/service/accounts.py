"""Accounts use cases: users, login with rotating refresh tokens, API keys."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from imagehost import auth
from imagehost.db import accounts as q
from imagehost.db import sessions as session_queries
from imagehost.db.accounts import ApiKey, RefreshToken, User
from imagehost.db.types import identity_key
from imagehost.service.errors import Forbidden, NotFound, Unauthorized, ValidationFailed, Violation
from imagehost.service.pools import Pools
from imagehost.service.throttle import RateLimit

# Matched with fullmatch: "$" would also match before a trailing newline ("alice\n").
USERNAME_RE = re.compile(r"[A-Za-z0-9_.-]{3,64}")
EMAIL_RE = re.compile(r"[^@\s]{1,64}@[^@\s]+\.[^@\s]+")
PASSWORD_MIN = 8
_BAD_API_KEY = "Invalid, revoked or expired API key."


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user, authenticated by JWT or by API key."""

    user: User
    api_key_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.user.is_admin


@dataclass(frozen=True)
class NewApiKey:
    key: str  # shown once, never stored
    record: ApiKey


class Accounts:
    """Users, sessions and API keys."""

    def __init__(self, pools: Pools, secret: bytes, *,
                 algorithm: str, access_ttl: int, refresh_ttl: int,
                 now: Callable[[], datetime], login_limits: tuple[RateLimit, RateLimit]):
        self._login_limit_by_client, self._login_limit_by_user = login_limits
        self._db = pools.db
        self._cpu = pools.cpu
        self._secret = secret
        self._algorithm = algorithm
        self._access_ttl = timedelta(seconds=access_ttl)
        self._refresh_ttl = timedelta(seconds=refresh_ttl)
        self._now = now

    # -- users -------------------------------------------------------------

    async def create_user(self, username: str, email: str, password: str, *,
                          is_admin: bool = False, display_name: str = "") -> User:
        """Validate and create a user; ValidationFailed on bad or taken fields."""
        check_new_user(username, email, password)
        password_hash = await self._cpu.submit(auth.hash_password, password)
        user = User(id=str(uuid.uuid4()), username=username, email=email,
                    display_name=display_name or username, password_hash=password_hash,
                    is_admin=is_admin, is_active=True, created_at=self._now())
        taken = await self._db.run(q.insert_user_unless_taken, user)
        if taken:
            raise ValidationFailed(*(Violation(f, "This value is already used.")
                                     for f in sorted(taken)))
        return user

    async def user(self, user_id: str) -> User:
        user = await self._db.run(q.user_by_id, user_id)
        if user is None:
            raise NotFound("No such user.")
        return user

    async def user_named(self, username: str) -> User:
        user = await self._db.run(q.user_by_username, username)
        if user is None:
            raise NotFound(f'No user named "{username}".')
        return user

    async def list_users(self) -> list[User]:
        return await self._db.run(q.list_users)

    async def set_password(self, username: str, password: str) -> None:
        """Set a user's password (CLI, admin): every login of theirs ends."""
        await self.reset_password(await self.user_named(username), password)

    async def reset_password(self, user: User, password: object,
                             prop: str = "password") -> None:
        """Give ``user`` a new password; their browser sessions, refresh tokens and access
        tokens end on every daemon (API keys stay)."""
        if not isinstance(password, str) or len(password) < PASSWORD_MIN:
            raise ValidationFailed.one(prop, _password_message())
        password_hash = await self._cpu.submit(auth.hash_password, password)
        if not await self._db.run(session_queries.update_user_ending_logins, user.id,
                                  self._now(), password_hash=password_hash):
            raise NotFound("No such user.")

    async def change_password(self, user: User, current: object, new: object, *,
                              props: tuple[str, str] = ("current", "password")) -> None:
        """A user's own password change: the current one must be right. Ends every
        login of the user (the caller starts a new one). ``props`` name the two fields
        in violations."""
        await self.check_password(user, current, props[0])
        await self.reset_password(user, new, props[1])

    async def check_password(self, user: User, password: object, prop: str) -> None:
        """ValidationFailed on ``prop`` unless ``password`` is ``user``'s (a confirmation)."""
        if not isinstance(password, str) or not await self._cpu.submit(
                auth.verify_password, password, user.password_hash):
            raise ValidationFailed.one(prop, "The current password is not right.")

    async def set_active(self, username: str, active: bool) -> None:
        """Enable or disable a user by name."""
        await self.set_user_active(await self.user_named(username), active)

    async def set_user_active(self, user: User, active: bool) -> None:
        """Enable or disable a user; disabling ends every login of theirs at once, and
        their API keys stop working while they are disabled."""
        if active:
            await self._db.run(q.update_user, user.id, is_active=True)
        else:
            await self._db.run(session_queries.update_user_ending_logins, user.id,
                               self._now(), is_active=False)

    async def tokens_for(self, user_id: str) -> TokenPair:
        """A new login (token pair) for an active user, e.g. after their password change."""
        user = await self.user(user_id)
        if not user.is_active:
            raise Unauthorized("Invalid credentials.")
        return await self._issue(user, family_id=str(uuid.uuid4()))

    # -- sessions ----------------------------------------------------------

    async def login(self, login: str, password: str, client: str = "local") -> TokenPair:
        """Tokens for valid credentials of an active user; Unauthorized otherwise.

        ``login`` is the username or the e-mail address, in any case or Unicode form.
        Attempts are rate limited per client address and per account, whichever
        spelling names it (RateLimited).
        """
        user = await self.check_credentials(login, password, client)
        return await self._issue(user, family_id=str(uuid.uuid4()))

    async def check_credentials(self, login: str, password: str, client: str = "local") -> User:
        """The active user these credentials name; Unauthorized otherwise.

        Rate limited per client address and per username (RateLimited), for the API's
        logins and the web pages' alike.
        """
        await self._login_limit_by_client.hit(client)
        user = await self._db.run(q.user_by_login, login)
        await self._login_limit_by_user.hit(user.id if user else identity_key(login))
        stored = user.password_hash if user else auth.DUMMY_PASSWORD_HASH
        valid = await self._cpu.submit(auth.verify_password, password, stored)
        if not (valid and user and user.is_active):
            raise Unauthorized("Invalid credentials.")
        return user

    async def refresh(self, refresh_token: str) -> TokenPair:
        """Rotate a refresh token. A spent token revokes its whole family."""
        now = self._now()
        token = await self._db.run(q.refresh_token_by_hash, auth.sha256_hex(refresh_token))
        if token is None or token.revoked_at is not None or token.expires_at <= now:
            raise Unauthorized("Invalid refresh token.")
        spent = token.used_at is None and await self._db.run(
            q.mark_refresh_token_used, token.id, now)
        if not spent:
            await self._db.run(q.revoke_refresh_family, token.family_id, now)
            raise Unauthorized("Refresh token already used; please log in again.")
        user = await self._db.run(q.user_by_id, token.user_id)
        if user is None or not user.is_active:
            raise Unauthorized("Invalid refresh token.")
        return await self._issue(user, family_id=token.family_id)

    async def logout(self, refresh_token: str) -> None:
        """Revoke the session (token family) of this refresh token, if it is one."""
        token = await self._db.run(q.refresh_token_by_hash, auth.sha256_hex(refresh_token))
        if token is not None:
            await self._db.run(q.revoke_refresh_family, token.family_id, self._now())

    async def _issue(self, user: User, family_id: str) -> TokenPair:
        now = self._now()
        refresh = auth.new_refresh_token()
        await self._db.run(q.insert_refresh_token, RefreshToken(
            id=str(uuid.uuid4()), user_id=user.id, family_id=family_id,
            token_hash=auth.sha256_hex(refresh), created_at=now,
            expires_at=now + self._refresh_ttl, used_at=None, revoked_at=None))
        access = auth.issue_access_token(self._secret, self._algorithm, user.id, now,
                                         self._access_ttl, user.token_generation)
        return TokenPair(access, refresh)

    async def authenticate(self, authorization: str | None, *, jwt: bool = True,
                           api_key: bool = True) -> Principal:
        """The caller named by an ``Authorization: Bearer`` header; Unauthorized if none."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("Authentication required.")
        if token.startswith(auth.API_KEY_PREFIX):  # never a JWT, which starts "eyJ"
            if not api_key:
                raise Unauthorized("API keys are not accepted here.")
            return await self._by_api_key(token)
        if not jwt:
            raise Unauthorized("An API key is required.")
        try:
            user_id, generation = auth.decode_access_token(self._secret, self._algorithm, token)
        except auth.InvalidToken as e:
            raise Unauthorized("Invalid or expired access token.") from e
        user = await self._db.run(q.user_by_id, user_id)
        if user is None or not user.is_active or generation != user.token_generation:
            raise Unauthorized("Invalid or expired access token.")
        return Principal(user)

    async def _by_api_key(self, key: str) -> Principal:
        if not auth.looks_like_api_key(key):  # misspelt or cut short: unknown, as any other
            raise Unauthorized(_BAD_API_KEY)
        now = self._now()
        found = await self._db.run(q.api_key_owner, auth.sha256_hex(key), now)
        if found is None or found[0].is_expired(now) or not found[1].is_active:
            raise Unauthorized(_BAD_API_KEY)
        return Principal(found[1], api_key_id=found[0].id)

    # -- API keys ----------------------------------------------------------

    async def create_api_key(self, user: User, name: str,
                             expires_at: datetime | None = None) -> NewApiKey:
        if not isinstance(name, str) or not 0 < len(name.strip()) <= 255:
            raise ValidationFailed.one("name", "This value should not be blank.")
        if expires_at is not None and expires_at <= self._now():
            raise ValidationFailed.one("expiresAt", "This value should be in the future.")
        key = auth.new_api_key()
        record = ApiKey(id=str(uuid.uuid4()), user_id=user.id, name=name.strip(),
                        key_hash=auth.sha256_hex(key), created_at=self._now(),
                        expires_at=expires_at, last_used_at=None)
        await self._db.run(q.insert_api_key, record)
        return NewApiKey(key, record)

    async def list_api_keys(self, user: User | None = None) -> list[ApiKey]:
        return await self._db.run(q.list_api_keys, None if user is None else user.id)

    async def revoke_api_key(self, key_id: str, user: User | None = None) -> None:
        """Delete a key; only ``user``'s own keys when a user is given (NotFound otherwise)."""
        deleted = await self._db.run(q.delete_api_key, key_id, None if user is None else user.id)
        if not deleted:
            raise NotFound("No such API key.")

    def now(self) -> datetime:
        return self._now()


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise Forbidden("Administrator rights are required.")


def check_new_user(username: object, email: object, password: object) -> None:
    violations = []
    if not isinstance(username, str) or not USERNAME_RE.fullmatch(username):
        violations.append(Violation(
            "username", "This value should be 3 to 64 letters, digits, '.', '_' or '-'."))
    if (not isinstance(email, str) or not EMAIL_RE.fullmatch(email)
            or len(identity_key(email)) > 255 or len(email) > 255):
        violations.append(Violation("email", "This value is not a valid email address."))
    if not isinstance(password, str) or len(password) < PASSWORD_MIN:
        violations.append(Violation("password", _password_message()))
    if violations:
        raise ValidationFailed(*violations)


def _password_message() -> str:
    return f"This value is too short. It should have {PASSWORD_MIN} characters or more."

