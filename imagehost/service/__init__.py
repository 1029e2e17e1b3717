"""The service layer: the one place that orchestrates use cases for the web and the CLI."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from imagehost.db import ping
from imagehost.db.accounts import User
from imagehost.service.accounts import Accounts, check_new_user
from imagehost.service.administration import Administration
from imagehost.service.albums import Albums
from imagehost.service.delivery import Delivery
from imagehost.service.errors import Forbidden, ValidationFailed
from imagehost.service.expiry import ExpiredImages
from imagehost.service.images import Images
from imagehost.service.library import Library
from imagehost.service.pools import Pools
from imagehost.service.quotas import Quotas
from imagehost.service.runtime_settings import RuntimeSettings
from imagehost.service.sessions import BrowserSessions
from imagehost.service.shares import Shares
from imagehost.storage import Storage

if TYPE_CHECKING:  # imported where used: the CLI's backup, verify and gc, never a daemon
    from imagehost.service.backup import Backups
    from imagehost.service.collector import GarbageCollector
    from imagehost.service.integrity import Integrity


@dataclass
class Imagehost:
    """Everything a front end (HTTP or CLI) may call: the services, ``start``/``stop``
    and ``healthy``. ``pools`` and ``storage`` are for the service layer and tests."""

    pools: Pools
    storage: Storage
    accounts: Accounts
    images: Images
    settings: RuntimeSettings
    library: Library
    delivery: Delivery
    sessions: BrowserSessions  # logins of the web pages
    albums: Albums
    shares: Shares  # share links (/s/{code})
    expired: ExpiredImages  # deletes expired images (imagehost gc, the daemon's sweep)
    quotas: Quotas  # usage and limits of users and guests
    administration: Administration  # user administration, deleting one's own account

    def start(self) -> None:
        """Start the thread pools."""
        self.pools.start()

    def stop(self) -> None:
        """Stop the thread pools (after ``delivery.stop`` in a daemon)."""
        self.pools.stop()

    @property
    def garbage(self) -> GarbageCollector:
        """Orphan files (imagehost gc)."""
        from imagehost.service.collector import GarbageCollector

        return GarbageCollector(self.pools, self.storage)

    @property
    def integrity(self) -> Integrity:
        """Re-hashing of the stored originals (imagehost verify)."""
        from imagehost.service.integrity import Integrity

        return Integrity(self.pools, self.storage)

    def backups(self, config) -> Backups:
        """Backups of this installation (imagehost backup); ``config`` names its database
        and secret file."""
        from datetime import UTC, datetime

        from imagehost.service.backup import Backups

        return Backups(self.pools, self.storage, database_url=config.database_url,
                       secret_file=config.secret_file, now=lambda: datetime.now(UTC),
                       url_signing_secret_file=config.url_signing_secret_file)

    @property
    def cpu_jobs(self) -> int:
        """Jobs running or waiting in the CPU pool."""
        return self.pools.cpu.pending

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
            await self.pools.db.run(ping)
            return await self.pools.io.run(self.storage.is_healthy)
        except Exception:
            return False
