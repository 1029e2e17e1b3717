"""Backups (``imagehost backup``) and restores (``imagehost restore``).

A backup folder holds a copy of the database (``imagehost.db``, or ``database.sql`` from
``pg_dump``), ``secret.key``, the originals in the data directory's layout (with S3
storage they stay in the bucket: rely on its versioning) and ``manifest.json``, the
sha256 of every original. The database is copied first and the originals it records
after it, so every record in the copy has its file: files are stored before their
record exists, and an image deleted while the backup runs is dropped from the copy.
A second backup into the same folder copies only originals it does not have yet.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from imagehost.db import backup as db_backup
from imagehost.db import images as image_queries
from imagehost.db.backup import is_sqlite, sqlite_path
from imagehost.db.images import RecordedOriginal
from imagehost.service.errors import BackupFailed
from imagehost.service.pools import Pools, in_lanes
from imagehost.storage import Storage, atomic_write

MANIFEST = "manifest.json"
SQLITE_COPY, POSTGRESQL_DUMP, SECRET = "imagehost.db", "database.sql", "secret.key"
#: The key of image URL signatures ([delivery] signing_secret_file), beside the JWT secret.
URL_SIGNING_SECRET = "url-signing.key"
FORMAT = 1

__all__ = ["BackupFailed", "BackupReport", "Backups", "RestoreReport", "check_restore",
           "is_sqlite",
           "read_manifest", "restore", "sqlite_path"]


@dataclass
class BackupReport:
    """What one backup wrote."""

    dest: Path
    database: str  # the file holding the database copy
    originals: int = 0  # recorded originals in the copy
    copied: int = 0
    copied_bytes: int = 0
    unchanged: int = 0  # already in the folder from an earlier backup
    in_bucket: int = 0  # S3: not copied
    dropped: list[str] = field(default_factory=list)  # deleted while the backup ran
    missing: list[str] = field(default_factory=list)  # recorded but not stored
    corrupt: list[str] = field(default_factory=list)  # bytes differ from the record


class Backups:
    """Takes backups of a running installation."""

    def __init__(self, pools: Pools, storage: Storage, *, database_url: str, secret_file: Path,
                 now: Callable[[], datetime], url_signing_secret_file: Path | None = None):
        self._db = pools.db
        self._cpu = pools.cpu
        self._io = pools.io
        self._storage = storage
        self._url = database_url
        self._secret = secret_file
        self._url_secret = url_signing_secret_file
        self._now = now

    async def backup(self, dest: Path,
                     on_copied: Callable[[RecordedOriginal], None] | None = None,
                     on_listed: Callable[[list[RecordedOriginal]], None] | None = None,
                     ) -> BackupReport:
        """Back up into ``dest`` (created if needed; an earlier backup there is updated)."""
        earlier = await self._io.run(_start_folder, dest)
        started = self._now()
        report, originals = await self._copy_database(dest)
        if on_listed is not None:
            on_listed(originals)
        await self._io.run(_copy_secret, self._secret, dest / SECRET)
        url_secret = await self._io.run(_copy_url_secret, self._url_secret, dest)
        entries = await in_lanes(self._cpu.threads, [
            partial(self._back_up_original, o, dest, earlier, report, on_copied)
            for o in originals])
        if report.dropped and report.database == SQLITE_COPY:
            await self._io.run(db_backup.forget_images, dest / SQLITE_COPY, report.dropped)
        report.originals = len(originals) - len(report.dropped)
        manifest = {"format": FORMAT, "createdAt": started.isoformat(),
                    "database": report.database, "secret": SECRET,
                    "urlSigningSecret": url_secret,
                    "originalsInBucket": report.in_bucket > 0,
                    "deletedDuringBackup": report.dropped,
                    "originals": {o.image_id: entry
                                  for o, entry in zip(originals, entries, strict=True)
                                  if entry is not None}}
        await self._io.run(_write_manifest, dest, manifest)
        return report

    async def _copy_database(self, dest: Path) -> tuple[BackupReport, list[RecordedOriginal]]:
        try:
            if db_backup.is_sqlite(self._url):
                await self._io.run(db_backup.snapshot_sqlite, self._url, dest / SQLITE_COPY)
                originals = await self._io.run(db_backup.originals_in, dest / SQLITE_COPY)
                return BackupReport(dest, SQLITE_COPY), originals
            await self._io.run(db_backup.dump_postgresql, self._url, dest / POSTGRESQL_DUMP)
        except db_backup.DatabaseCopyFailed as e:
            raise BackupFailed(e.message) from e
        # Listed after the dump: a superset of its records (less those deleted since).
        return (BackupReport(dest, POSTGRESQL_DUMP),
                await self._db.run(image_queries.recorded_originals))

    async def _back_up_original(self, original: RecordedOriginal, dest: Path,
                                earlier: dict[str, Any], report: BackupReport,
                                on_copied) -> dict[str, Any] | None:
        entry = manifest_entry(original)
        try:
            if self._storage.local_original(original.image_id, original.ext) is None:
                report.in_bucket += 1
                return {**entry, "path": None}
            if await self._io.run(_unchanged, dest, entry, earlier.get(original.image_id)):
                report.unchanged += 1
                return entry
            return await self._copy(original, dest, entry, report)
        finally:
            if on_copied is not None:
                on_copied(original)

    async def _copy(self, original: RecordedOriginal, dest: Path, entry: dict[str, Any],
                    report: BackupReport) -> dict[str, Any] | None:
        try:
            data = await self._io.run(self._storage.read_original, original.image_id,
                                      original.ext)
        except FileNotFoundError:
            if await self._db.run(image_queries.image_exists, original.image_id):
                report.missing.append(original.image_id)
            else:
                report.dropped.append(original.image_id)
            return None
        if await self._cpu.submit(_sha256, data) != original.sha256:
            report.corrupt.append(original.image_id)
            return None
        await self._io.run(atomic_write, dest / entry["path"], data)
        report.copied += 1
        report.copied_bytes += len(data)
        return entry


def manifest_entry(original: RecordedOriginal) -> dict[str, Any]:
    """An original in the manifest: its path in the backup, size and recorded sha256."""
    shard = f"originals/{original.image_id[0:2]}/{original.image_id[2:4]}"
    return {"path": f"{shard}/{original.image_id}.{original.ext}", "size": original.size,
            "sha256": original.sha256}


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of a backup folder; BackupFailed when there is none (blocking)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError as e:
        raise BackupFailed(f"{folder} is not an imagehost backup (no {MANIFEST}).") from e
    except ValueError as e:
        raise BackupFailed(f"{folder / MANIFEST} is not valid JSON: {e}") from e
    if manifest.get("format") != FORMAT:
        raise BackupFailed(f"{folder / MANIFEST} has an unknown format "
                           f"{manifest.get('format')!r} (expected {FORMAT}).")
    return manifest


def _start_folder(dest: Path) -> dict[str, Any]:
    """Create ``dest``; the originals an earlier backup there holds (blocking)."""
    dest.mkdir(parents=True, exist_ok=True)
    if not (dest / MANIFEST).exists():
        if any(dest.iterdir()):
            raise BackupFailed(f"{dest} is neither empty nor an imagehost backup.")
        return {}
    return read_manifest(dest)["originals"]


def _unchanged(dest: Path, entry: dict[str, Any], earlier: dict[str, Any] | None) -> bool:
    """True when an earlier backup copied this very original (same hash, file there)."""
    if earlier is None or earlier.get("sha256") != entry["sha256"]:
        return False
    try:
        return (dest / entry["path"]).stat().st_size == entry["size"]
    except FileNotFoundError:
        return False


def _copy_url_secret(source: Path | None, dest: Path) -> str | None:
    """Copy the URL signing key if the installation has one; its name in the backup."""
    if source is None or not source.exists():
        return None
    _copy_secret(source, dest / URL_SIGNING_SECRET)
    return URL_SIGNING_SECRET


def _copy_secret(source: Path, target: Path) -> None:
    data = source.read_bytes()
    fd = os.open(target.with_name(target.name + ".partial"),
                 os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(target.with_name(target.name + ".partial"), target)


def _write_manifest(dest: Path, manifest: dict[str, Any]) -> None:
    atomic_write(dest / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- restore ----------------------------------------------------------------------------


@dataclass
class RestoreReport:
    """What a restore wrote."""

    data_dir: Path
    originals: int = 0
    restored_bytes: int = 0
    in_bucket: int = 0


def check_restore(source: Path, data_dir: Path, database_url: str,
                  secret_file: Path) -> dict[str, Any]:
    """The manifest of ``source`` if it can be restored into ``data_dir`` and the database
    at ``database_url`` (a new SQLite file, or an empty PostgreSQL database for a backup
    of one), else BackupFailed saying why (blocking)."""
    manifest = read_manifest(source)
    if data_dir.exists() and any(data_dir.iterdir()):
        raise BackupFailed(f"{data_dir} is not empty: restore into a new data directory.")
    _check_database(source, manifest, database_url)
    if secret_file.exists():
        raise BackupFailed(f"{secret_file} exists already: restore needs a new installation.")
    return manifest


def _check_database(source: Path, manifest: dict[str, Any], database_url: str) -> None:
    shown = db_backup.printable(database_url)
    if manifest["database"] == SQLITE_COPY:
        if not is_sqlite(database_url):
            raise BackupFailed(f"{source} holds a SQLite database, but the configuration "
                               f"names {shown}: restore it without [database] url.")
        if sqlite_path(database_url).exists():
            raise BackupFailed(f"{sqlite_path(database_url)} exists already: restore needs "
                               "a new installation.")
        return
    if is_sqlite(database_url):
        raise BackupFailed(f"{source} holds a PostgreSQL dump: name the empty PostgreSQL "
                           "database to load it into with --database-url (or [database] "
                           "url).")
    try:
        empty = db_backup.postgresql_is_empty(database_url)
    except db_backup.DatabaseCopyFailed as e:
        raise BackupFailed(e.message) from e
    if not empty:
        raise BackupFailed(f"the database {shown} is not empty: restore into a new one.")


def restore(source: Path, data_dir: Path, database_url: str, secret_file: Path,
            on_restored: Callable[[dict[str, Any]], None] | None = None,
            url_signing_secret_file: Path | None = None) -> RestoreReport:
    """Rebuild a data directory and its database from a backup folder, every original
    checked against the manifest (blocking). ``data_dir`` must be empty or not exist yet;
    if an original does not match, what was written is removed again, and the database
    is written only after every original was."""
    manifest = check_restore(source, data_dir, database_url, secret_file)
    data_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []  # secrets written outside data_dir, removed on a failure
    try:
        report = _restore_originals(source, data_dir, manifest, on_restored)
        secret_file.parent.mkdir(parents=True, exist_ok=True)
        _copy_secret(source / manifest["secret"], secret_file)
        written.append(secret_file)
        if manifest.get("urlSigningSecret") and url_signing_secret_file is not None:
            url_signing_secret_file.parent.mkdir(parents=True, exist_ok=True)
            _copy_secret(source / manifest["urlSigningSecret"], url_signing_secret_file)
            written.append(url_signing_secret_file)
        _restore_database(source, manifest, database_url)
    except BaseException:
        _empty(data_dir)
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return report


def _restore_database(source: Path, manifest: dict[str, Any], database_url: str) -> None:
    if manifest["database"] == SQLITE_COPY:
        database_file = sqlite_path(database_url)
        database_file.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / SQLITE_COPY, database_file)
        return
    try:
        db_backup.load_postgresql(database_url, source / POSTGRESQL_DUMP)
    except db_backup.DatabaseCopyFailed as e:
        raise BackupFailed(e.message) from e


def _empty(folder: Path) -> None:
    for child in folder.iterdir():
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()


def _restore_originals(source: Path, data_dir: Path, manifest: dict[str, Any],
                       on_restored) -> RestoreReport:
    report = RestoreReport(data_dir)
    for image_id, entry in manifest["originals"].items():
        if entry["path"] is None:
            report.in_bucket += 1
        else:
            report.restored_bytes += _restore_original(source, data_dir, image_id, entry)
            report.originals += 1
        if on_restored is not None:
            on_restored(entry)
    return report


def _restore_original(source: Path, data_dir: Path, image_id: str,
                      entry: dict[str, Any]) -> int:
    try:
        data = (source / entry["path"]).read_bytes()
    except FileNotFoundError as e:
        raise BackupFailed(f"the backup lacks the original of {image_id} "
                           f"({entry['path']}); nothing was restored.") from e
    if _sha256(data) != entry["sha256"]:
        raise BackupFailed(f"the original of {image_id} in the backup ({entry['path']}) does "
                           "not match its sha256 in the manifest; nothing was restored.")
    atomic_write(data_dir / entry["path"], data)
    return len(data)
