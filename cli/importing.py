"""``imagehost import``: bulk import with a progress bar and a summary table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.threads import deferToThread

from imagehost.service.importer import (
    SKIPPED,
    Importer,
    ImportSummary,
    file_size,
    find_files,
    skipped_folders,
)
from imagehost_cli.errors import EXIT_REJECTED, CommandFailed
from imagehost_cli.local import installation
from imagehost_cli.options import GlobalOptions
from imagehost_cli.output import FileProgress, Output


async def run_import(reactor, options: GlobalOptions, paths: list[Path], username: str,
                     public: bool, recursive: bool, jobs: int, dry_run: bool) -> None:
    out = options.output()
    files = await deferToThread(find_files, paths, recursive)
    folders = await deferToThread(skipped_folders, paths, recursive)
    sizes = await deferToThread(lambda: sum(file_size(f) for f in files))
    # One CPU worker per job: --jobs is the parallelism the operator asked for.
    async with installation(reactor, options, {("render", "threads"): jobs}) as host:
        owner = await host.accounts.user_named(username)
        with FileProgress(out, "Importing", len(files), sizes) as advance:
            importer = Importer(host, owner, is_public=public, jobs=jobs, dry_run=dry_run,
                                on_outcome=lambda outcome: advance(outcome.size))
            running = Deferred.fromCoroutine(importer.run(files))
            try:
                summary = await _shielded(running)
            except CancelledError:
                importer.cancel()
                summary = await running
    _report(out, summary, folders)
    if summary.stopped_by:
        raise CommandFailed(f"Import stopped after importing {len(summary.imported)} files: "
                            f"{summary.stopped_by}")
    if summary.cancelled:
        raise CommandFailed(f"Interrupted after importing {len(summary.imported)} files; "
                            "nothing was left half-imported.")
    if summary.rejected:
        raise CommandFailed(f"{len(summary.rejected)} of {len(summary.outcomes)} files were "
                            "rejected (listed above); the others were handled.", EXIT_REJECTED)


def _shielded(running: Deferred) -> Deferred:
    """A Deferred following ``running`` whose cancellation does not cancel ``running``
    (a file being stored must be allowed to finish or roll back)."""
    follower: Deferred = Deferred()

    def forward(result: Any) -> Any:
        if not follower.called:
            follower.callback(result)
        return result

    running.addCallback(forward)
    return follower


def summary_json(summary: ImportSummary, folders: list[Path]) -> dict[str, Any]:
    result: dict[str, Any] = {
        "imported": len(summary.imported),
        "duplicates": [{"path": str(o.path), "imageId": o.image_id}
                       for o in summary.duplicates],
        "rejected": [{"path": str(o.path), "reason": o.reason} for o in summary.rejected],
        "skippedFolders": [str(f) for f in folders],
    }
    if summary.dry_run:
        result["dryRun"] = True
    if summary.cancelled:
        result["cancelled"] = True
    if summary.stopped_by:
        result["stoppedBy"] = summary.stopped_by
    return result


def _report(out: Output, summary: ImportSummary, folders: list[Path]) -> None:
    def human() -> None:
        verb = "Would import" if summary.dry_run else "Imported"
        out.table(["Result", "Files"], [
            (verb, len(summary.imported)),
            ("Skipped (duplicate)", len(summary.duplicates)),
            ("Rejected", len(summary.rejected)),
            *([("Not imported (interrupted)", len(summary.having(SKIPPED)))]
              if summary.cancelled else []),
            *([("Not imported (quota)", len(summary.having(SKIPPED)))]
              if summary.stopped_by else []),
        ], title="Import summary")
        if summary.duplicates:
            out.table(["Skipped file", "Same content as image"],
                      [(str(o.path), o.image_id) for o in summary.duplicates],
                      ids=("Same content as image",))
        if summary.rejected:
            out.table(["Rejected file", "Reason"],
                      [(str(o.path), o.reason) for o in summary.rejected])
        if folders:
            out.say(f"Skipped {len(folders)} sub-folders (use --recursive to import them): "
                    + ", ".join(str(f) for f in folders))

    out.show(summary_json(summary, folders), human)
