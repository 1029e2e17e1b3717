"""Browser sessions of the web pages, and their CSRF tokens.

A session is a row in the database (``browser_sessions``) named by the SHA-256 of a
random token that only the browser's cookie holds; it ends at logout, on a password
change and when the user is disabled, for every daemon at once. CSRF tokens are an
HMAC of the cookie they belong to, so nothing more needs storing and a token taken
from one browser is worthless in another.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from imagehost import auth
from imagehost.db import sessions as q
from imagehost.db.accounts import User
from imagehost.service.accounts import Accounts
from imagehost.service.pools import Pools


@dataclass(frozen=True)
class StartedSession:
    token: str  # the cookie's value; only its hash is stored
    user: User


class BrowserSessions:
    """Log in and out of the web pages; who a session cookie names."""

    def __init__(self, pools: Pools, accounts: Accounts, secret: bytes, *, ttl: int,
                 now: Callable[[], datetime]):
        self._db = pools.db
        self._accounts = accounts
        self._csrf_key = hmac.new(secret, b"imagehost csrf", hashlib.sha256).digest()
        self._ttl = timedelta(seconds=ttl)
        self._now = now

    @property
    def ttl_seconds(self) -> int:
        return int(self._ttl.total_seconds())

    async def login(self, login: str, password: str, client: str) -> StartedSession:
        """A new session for valid credentials (throttled as the API's logins are)."""
        user = await self._accounts.check_credentials(login, password, client)
        return await self.start(user)

    async def start(self, user: User) -> StartedSession:
        """A new session for ``user`` (after a login or a password change)."""
        token = secrets.token_urlsafe(32)
        now = self._now()
        await self._db.run(q.insert_session, auth.sha256_hex(token), user.id, now,
                           now + self._ttl)
        return StartedSession(token, user)

    async def user(self, token: str | None) -> User | None:
        """The active user of a live session, None for no, an ended or an expired one."""
        if not token:
            return None
        return await self._db.run(q.session_user, auth.sha256_hex(token), self._now())

    async def end(self, token: str | None) -> None:
        """Log out: the session's row goes, so no daemon accepts the cookie again."""
        if token:
            await self._db.run(q.delete_session, auth.sha256_hex(token))

    def csrf_token(self, cookie: str) -> str:
        """The CSRF token of the page (form or fetch) of the browser holding ``cookie``."""
        return hmac.new(self._csrf_key, cookie.encode(), hashlib.sha256).hexdigest()

    def csrf_valid(self, cookie: str | None, token: str | None) -> bool:
        if not cookie or not token:
            return False
        return hmac.compare_digest(self.csrf_token(cookie), token)
