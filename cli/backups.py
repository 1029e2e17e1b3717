"""``imagehost backup`` and ``imagehost restore``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.threads import deferToThread

from imagehost.service.backup import (
    BackupReport,
    RestoreReport,
    check_restore,
    restore,
)
from imagehost_cli.errors import CommandFailed
from imagehost_cli.local import installation
from imagehost_cli.options import GlobalOptions
from imagehost_cli.output import FileProgress, Output, human_size


class _Progress:
    """The progress bar of a backup, sized once the database copy says what to copy."""

    def __init__(self, out: Output):
        self._out = out
        self._bar: FileProgress | None = None
        self._advance = None

    def listed(self, originals) -> None:
        self._bar = FileProgress(self._out, "Backing up", len(originals),
                                 sum(o.size for o in originals), terminal_only=True)
        self._advance = self._bar.__enter__()

    def copied(self, original) -> None:
        if self._advance is not None:
            self._advance(original.size)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)


async def backup(reactor, options: GlobalOptions, dest: Path) -> None:
    """Back up the installation into ``dest`` while its daemons keep serving."""
    out = options.output()
    progress = _Progress(out)
    async with installation(reactor, options) as host:
        try:
            report = await host.backups(options.config()).backup(
                dest, on_copied=progress.copied, on_listed=progress.listed)
        finally:
            progress.close()
    out.show(backup_json(report), lambda: _say_backup(out, report))
    if report.missing or report.corrupt:
        raise CommandFailed(
            f"{len(report.missing)} originals missing and {len(report.corrupt)} corrupt "
            "were not backed up (run imagehost verify); the rest is in the backup.")


def backup_json(report: BackupReport) -> dict[str, Any]:
    """The ``--json`` summary of a backup."""
    return {"dest": str(report.dest.absolute()), "database": report.database,
            "originals": report.originals, "copied": report.copied,
            "copiedBytes": report.copied_bytes, "unchanged": report.unchanged,
            "inBucket": report.in_bucket, "deletedDuringBackup": report.dropped,
            "missing": report.missing, "corrupt": report.corrupt}


def _say_backup(out: Output, report: BackupReport) -> None:
    out.say(f"Backed up the database ({report.database}) and {report.originals} originals "
            f"into {report.dest}: {report.copied} copied ({human_size(report.copied_bytes)}), "
            f"{report.unchanged} unchanged since the last backup"
            + (f", {report.in_bucket} left in the bucket (rely on its versioning)"
               if report.in_bucket else ""))
    for kind, ids in (("Missing", report.missing), ("Corrupt", report.corrupt)):
        if ids:
            out.table([f"{kind} original (not backed up)"], [(i,) for i in ids],
                      ids=(f"{kind} original (not backed up)",))


async def run_restore(reactor, options: GlobalOptions, source: Path, data_dir: Path,
                      database_url: str | None = None) -> None:
    """Rebuild an installation in the empty ``data_dir`` from the backup in ``source``
    (and, for a PostgreSQL backup, in the empty database ``database_url`` or the
    configured one)."""
    from imagehost.assembly import prepare_installation

    out = options.output()
    config = options.config({("server", "data_dir"): str(data_dir),
                             ("database", "url"): database_url})
    manifest = await deferToThread(check_restore, source, data_dir, config.database_url,
                                   config.secret_file)
    _check_storage(config, manifest)
    entries = manifest["originals"].values()
    with FileProgress(out, "Restoring", len(entries), sum(e["size"] for e in entries),
                      terminal_only=True) as advance:
        report = await deferToThread(restore, source, data_dir, config.database_url,
                                     config.secret_file,
                                     lambda entry: reactor.callFromThread(advance, entry["size"]),
                                     config.url_signing_secret_file)
    await deferToThread(prepare_installation, config)
    out.show(restore_json(report), lambda: out.say(
        f"Restored {report.originals} originals ({human_size(report.restored_bytes)}), each "
        f"matching its sha256 in the manifest, and the database into {report.data_dir}"
        + (f"; {report.in_bucket} originals are in the bucket" if report.in_bucket else "")))


def _check_storage(config, manifest: dict[str, Any]) -> None:
    """Refuse to restore a backup of S3 originals into local storage."""
    in_bucket = config.get("storage", "backend") == "s3"
    if manifest["originalsInBucket"] and not in_bucket:
        raise CommandFailed("the backup's originals are in an S3 bucket: restore with the "
                            "configuration that names it ([storage] backend = s3).")


def restore_json(report: RestoreReport) -> dict[str, Any]:
    """The ``--json`` summary of a restore."""
    return {"dataDir": str(report.data_dir.absolute()), "originals": report.originals,
            "restoredBytes": report.restored_bytes, "inBucket": report.in_bucket}
