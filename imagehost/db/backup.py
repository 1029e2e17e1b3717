"""Consistent copies of the database while daemons write to it (blocking functions).

SQLite is copied with its online backup API (one step: the copy is one snapshot, and
writers in WAL mode are never blocked for long); PostgreSQL with ``pg_dump`` (one
transaction, so one snapshot too), when it is installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from imagehost.db.images import RecordedOriginal, recorded_originals
from imagehost.db.schema import images


class DatabaseCopyFailed(Exception):
    """A copy of the database could not be made; ``message`` says why, in one line."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def printable(url: str) -> str:
    """A database URL without its password, for messages."""
    return make_url(url).render_as_string(hide_password=True)


def sqlite_path(url: str) -> Path:
    """The database file of a ``sqlite:///…`` URL."""
    return Path(make_url(url).database or "")


def snapshot_sqlite(url: str, target: Path) -> None:
    """Copy the SQLite database at ``url`` into ``target`` (replaced atomically)."""
    import sqlite3  # here: a PostgreSQL daemon does not load it (imagehost.footprint)

    temp = target.with_name(target.name + ".partial")
    temp.unlink(missing_ok=True)
    source = sqlite3.connect(sqlite_path(url), timeout=30)
    try:
        copy = sqlite3.connect(temp)
        try:
            source.backup(copy)  # pages=-1: the whole database in one step
            copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        finally:
            copy.close()
    finally:
        source.close()
    os.replace(temp, target)


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """A SQLAlchemy URL as libpq takes it (no driver, no password) and the environment
    that passes the password (never on a command line, where ``ps`` shows it)."""
    parsed = make_url(url)
    env = {**os.environ, "PGPASSWORD": parsed.password or ""}
    return parsed.set(drivername="postgresql", password=None).render_as_string(
        hide_password=False), env


def _client(name: str, purpose: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise DatabaseCopyFailed(f"{name} is not installed (it comes with the PostgreSQL "
                                 f"client package); it is needed to {purpose}.")
    return found


def dump_postgresql(url: str, target: Path) -> None:
    """``pg_dump`` the PostgreSQL database at ``url`` into ``target`` (plain SQL)."""
    pg_dump = _client("pg_dump", "back up PostgreSQL")
    libpq, env = _libpq(url)
    temp = target.with_name(target.name + ".partial")
    done = subprocess.run([pg_dump, "--no-owner", "--file", str(temp), libpq], env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        temp.unlink(missing_ok=True)
        reason = (done.stderr.strip().splitlines() or ["failed"])[-1]
        raise DatabaseCopyFailed(f"pg_dump failed: {reason}")
    os.replace(temp, target)


def postgresql_is_empty(url: str) -> bool:
    """True when the PostgreSQL database at ``url`` has no tables (a restore's target)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return not sa.inspect(conn).get_table_names()
    except sa.exc.OperationalError as e:
        raise DatabaseCopyFailed(f"cannot connect to {printable(url)}: "
                                 f"{str(e.orig).strip().splitlines()[0]}") from e
    finally:
        engine.dispose()


def load_postgresql(url: str, dump: Path) -> None:
    """Load a ``pg_dump`` file into the (empty) PostgreSQL database at ``url`` with psql,
    in one transaction: on an error nothing of it stays."""
    psql = _client("psql", "restore a PostgreSQL backup")
    libpq, env = _libpq(url)
    done = subprocess.run([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction",
                           "-f", str(dump), "-d", libpq], env=env, capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["failed"])[-1]
        raise DatabaseCopyFailed(f"psql failed to load {dump.name}: {reason}")


def originals_in(database_file: Path) -> list[RecordedOriginal]:
    """The originals recorded in a SQLite copy of the database."""
    engine = sa.create_engine(f"sqlite:///{database_file.absolute()}")
    try:
        with engine.connect() as conn:
            return recorded_originals(conn)
    finally:
        engine.dispose()


def forget_images(database_file: Path, image_ids: list[str]) -> None:
    """Delete these image records from a SQLite copy (deleted while it was taken)."""
    if not image_ids:
        return
    engine = sa.create_engine(f"sqlite:///{database_file.absolute()}")
    try:
        with engine.begin() as conn:
            conn.execute(images.delete().where(images.c.id.in_(image_ids)))
    finally:
        engine.dispose()
