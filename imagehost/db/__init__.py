"""Database access: SQLAlchemy Core run in a dedicated thread pool, results as Deferreds.

alchimia used to do this job but does not import with SQLAlchemy >= 1.4; this is the
small wrapper buildbot uses instead: ``db.run(thd, *args)`` calls ``thd(conn, *args)``
inside a transaction on a DB thread and fires with its (plain, non-lazy) result.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")

_LOCK_RETRIES = 5

#: SQLSTATEs after which PostgreSQL has rolled the whole transaction back and says that
#: running it again may succeed: serialization_failure and deadlock_detected.
_RETRY_SQLSTATES = frozenset({"40001", "40P01"})


def create_engine(url: str, pool_size: int = 5) -> sa.Engine:
    """An Engine for ``url``; SQLite gets WAL, a busy timeout and foreign keys."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return sa.create_engine(url, pool_size=pool_size, max_overflow=0, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def db_threads(engine: sa.Engine, pool_size: int) -> int:
    """SQLite allows one writer, so it gets one thread; other engines one per connection."""
    return 1 if engine.dialect.name == "sqlite" else pool_size


#: The newest migration in ``migrations/versions`` (a test keeps it in step with Alembic).
HEAD_REVISION = "0009"


def current_revision(engine: sa.Engine) -> str | None:
    """The migration the database is at, None when it has none, read without Alembic."""
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    """Apply Alembic migrations up to ``revision`` (blocking).

    A database already at the head is left alone without importing Alembic, which would
    stay resident in every daemon for nothing (11 MB, bench/README.md).
    """
    if revision == "head" and current_revision(engine) == HEAD_REVISION:
        return
    from alembic import command
    from alembic.config import Config as AlembicConfig

    here = Path(__file__).parent
    cfg = AlembicConfig(str(here / "alembic.ini"))
    cfg.set_main_option("script_location", str(here / "migrations"))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def upgrade_in_child(url: str) -> None:
    """``upgrade`` the database at ``url`` in a child Python process (blocking), so that a
    long-running daemon does not keep Alembic and Mako loaded after migrating (about 12 MB
    of RSS, bench/README.md). ``MigrationFailed`` with the child's last line if it failed.

    Callers check ``current_revision`` first: this costs a process start.
    """
    # The URL goes on stdin: a password in it must not show in the process list.
    done = subprocess.run([sys.executable, "-m", "imagehost.db"], input=url.encode(),
                          capture_output=True, check=False)
    if done.returncode != 0:
        # The child's one line is on stdout; a crash leaves its traceback on stderr.
        lines = (done.stdout.decode(errors="replace").strip().splitlines()
                 or done.stderr.decode(errors="replace").strip().splitlines()
                 or [f"exit status {done.returncode}"])
        raise MigrationFailed(f"cannot migrate the database {printable_url(url)}: {lines[-1]}")


class MigrationFailed(Exception):
    """``upgrade_in_child`` could not migrate the database; the message says why."""


def printable_url(url: str) -> str:
    """A database URL without its password, for messages."""
    return sa.engine.make_url(url).render_as_string(hide_password=True)


def run_sync(engine: sa.Engine, thd: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``thd(conn, *args, **kwargs)`` in one transaction; run it again (a few times,
    with backoff) when SQLite is locked or PostgreSQL rolled it back for a deadlock or a
    serialization failure. Query functions touch nothing but the database, so the whole
    transaction can run again."""
    for attempt in range(_LOCK_RETRIES):
        try:
            with engine.begin() as conn:
                return thd(conn, *args, **kwargs)
        except sa.exc.DBAPIError as e:
            if not _worth_retrying(e) or attempt == _LOCK_RETRIES - 1:
                raise
            time.sleep(0.05 * 2**attempt)
    raise AssertionError("unreachable")


def _worth_retrying(error: sa.exc.DBAPIError) -> bool:
    """Whether the failed transaction may succeed if run again from the start."""
    if getattr(error.orig, "sqlstate", None) in _RETRY_SQLSTATES:
        return True
    # SQLite's "database is locked" only: PostgreSQL's messages say "blocked by" too.
    # (Its class, not ``import sqlite3``: a PostgreSQL daemon need not load the module.)
    sqlite = type(error.orig).__module__ == "sqlite3"
    return sqlite and isinstance(error, sa.exc.OperationalError) and "locked" in str(error.orig)


def ping(conn: sa.Connection) -> None:
    """A round trip that proves the database answers."""
    conn.execute(sa.text("SELECT 1"))


class Database:
    """Runs query functions in the DB thread pool and returns Deferreds."""

    def __init__(self, engine: sa.Engine, reactor, threadpool: ThreadPool):
        self.engine = engine
        self._reactor = reactor
        self._pool = threadpool
        self.threads = threadpool.max

    def start(self) -> None:
        self._pool.start()

    def stop(self) -> None:
        self._pool.stop()
        self.engine.dispose()

    def run(self, thd: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        """Call ``thd(conn, *args, **kwargs)`` on a DB thread inside a transaction."""
        return deferToThreadPool(self._reactor, self._pool, run_sync, self.engine, thd,
                                 *args, **kwargs)
