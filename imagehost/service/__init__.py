"""The service layer: the one place that orchestrates use cases for the web and the CLI."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from twisted.internet.defer import Deferred

from imagehost.db import Database
from imagehost.db.accounts import User
from imagehost.service.accounts import Accounts, check_new_user
from imagehost.service.backup import Backups
from imagehost.service.collector import GarbageCollector
from imagehost.service.delivery import Delivery
from imagehost.service.errors import Forbidden, ValidationFailed
from imagehost.service.images import Images
from imagehost.service.integrity import Integrity
from imagehost.service.library import Library
from imagehost.service.runtime_settings import RuntimeSettings
from imagehost.service.sessions import BrowserSessions
from imagehost.service.workers import WorkerPool
from imagehost.storage import Storage


@dataclass
class Imagehost:
    """Everything a front end (HTTP or CLI) may call."""

    db: Database
    workers: WorkerPool
    storage: Storage
    accounts: Accounts
    images: Images
    settings: RuntimeSettings
    library: Library  # -- library --
    delivery: Delivery  # -- delivery --
    garbage: GarbageCollector  # orphan files (imagehost gc)
    sessions: BrowserSessions  # logins of the web pages
    # -- scale-out -- runs brief blocking I/O off the reactor (None: inline)
    run_blocking: Callable[..., Deferred] | None = None

    @property
    def integrity(self) -> Integrity:
        """Re-hashing of the stored originals (imagehost verify)."""
        return Integrity(self.db, self.storage, self.workers,
                         self.run_blocking or _run_inline)

    def backups(self, config) -> Backups:
        """Backups of this installation (imagehost backup); ``config`` names its database
        and secret file."""
        from datetime import UTC, datetime

        return Backups(self.db, self.storage, self.workers, self.run_blocking or _run_inline,
                       database_url=config.database_url, secret_file=config.secret_file,
                       now=lambda: datetime.now(UTC))

    async def signup(self, *, email: object, username: object, password: object,
                     confirm: object) -> User:
        """Self-registration, when the runtime setting allows it."""
        settings = await self.settings.current()
        if not settings.allow_registration:
            raise Forbidden("Registration is disabled.")
        if password != confirm:
            raise ValidationFailed.one("confirm", "The two passwords do not match.")
        check_new_user(username, email, password)
        return await self.accounts.create_user(username, email, password)

    async def healthy(self) -> bool:
        """True when the database answers and storage is writable (or the bucket answers)."""
        try:
            await self.db.run(_ping)
            # -- scale-out -- the check may be a network round trip (S3)
            if self.run_blocking is None:
                return self.storage.is_healthy()
            return await self.run_blocking(self.storage.is_healthy)
        except Exception:
            return False


def _run_inline(fn: Callable[..., object], *args: object) -> Deferred:
    from twisted.internet.defer import maybeDeferred

    return maybeDeferred(fn, *args)


def _ping(conn: sa.Connection) -> None:
    conn.execute(sa.text("SELECT 1"))
