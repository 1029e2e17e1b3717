"""Keeping the library safe: ``verify`` (and the backup commands)."""

from __future__ import annotations

from typing import Any

from imagehost.service.integrity import CORRUPT, MISSING, UNRECORDED, IntegrityReport
from imagehost_cli.errors import CommandFailed
from imagehost_cli.local import _store, installation
from imagehost_cli.options import GlobalOptions
from imagehost_cli.output import FileProgress, Output, human_size


async def verify(reactor, options: GlobalOptions, sample: int | None,
                 older_than: float) -> None:
    """Re-hash the originals; exit 1 when any is missing, corrupt or unrecorded."""
    out = options.output()
    async with installation(reactor, options) as host:
        integrity = host.integrity
        originals = await integrity.recorded()
        size = sum(o.size for o in originals) if sample is None else 0
        count = len(originals) if sample is None else min(sample, len(originals))
        with FileProgress(out, "Verifying", count, size, terminal_only=True) as advance:
            report = await integrity.verify(originals, sample=sample, older_than=older_than,
                                            on_checked=lambda original: advance(original.size))
    _show(out, report, _store(options.config()), sample)
    if not report.clean:
        raise CommandFailed(f"{len(report.problems)} problems found in {report.checked} "
                            "originals checked (listed above).")


def report_json(report: IntegrityReport, store: str, sample: int | None) -> dict[str, Any]:
    """The ``--json`` form of a verification."""
    return {"store": store, "recorded": report.recorded, "checked": report.checked,
            "checkedBytes": report.checked_bytes, "sample": sample, "clean": report.clean,
            **{kind: [{"imageId": p.image_id, "path": p.location, "expected": p.expected,
                       "actual": p.actual} for p in report.having(kind)]
               for kind in (MISSING, CORRUPT, UNRECORDED)}}


def _show(out: Output, report: IntegrityReport, store: str, sample: int | None) -> None:
    def human() -> None:
        if report.problems:
            out.table(["Problem", "Image", "Path"],
                      [(p.kind, p.image_id, p.location) for p in report.problems],
                      title=f"Problems in {store}", ids=("Image", "Path"))
        scope = f"a sample of {report.checked}" if sample is not None else str(report.checked)
        out.say(f"Checked {scope} of {report.recorded} originals "
                f"({human_size(report.checked_bytes)}): {len(report.having(MISSING))} missing, "
                f"{len(report.having(CORRUPT))} corrupt, "
                f"{len(report.having(UNRECORDED))} unrecorded")

    out.show(report_json(report, store, sample), human)
