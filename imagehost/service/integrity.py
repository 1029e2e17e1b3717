"""Integrity check (``imagehost verify``): are the stored originals the bytes uploaded?

Every original is read on the I/O pool and re-hashed on the CPU pool, then compared with
the sha256 its record holds. Three kinds of problem are reported: a recorded original
that is gone (``missing``), one whose bytes no longer hash to the recorded value
(``corrupt``) and a stored original no record accounts for (``unrecorded``, what
``imagehost gc`` removes; files younger than the grace period are uploads in flight).
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from imagehost.db import images as image_queries
from imagehost.db.images import RecordedOriginal
from imagehost.service.collector import DEFAULT_GRACE, unrecorded_originals
from imagehost.service.pools import Pools, in_lanes
from imagehost.storage import Storage

MISSING, CORRUPT, UNRECORDED = "missing", "corrupt", "unrecorded"


@dataclass(frozen=True)
class Problem:
    """One original that is not what its record says."""

    kind: str  # MISSING, CORRUPT or UNRECORDED
    image_id: str
    location: str  # relative to the data directory, or the key in the bucket
    expected: str | None = None  # the recorded sha256
    actual: str | None = None  # the sha256 of the stored bytes


@dataclass
class IntegrityReport:
    """What a verification checked and found."""

    recorded: int  # images with a record
    checked: int = 0  # originals re-hashed (all of them, or the sample)
    checked_bytes: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.problems

    def having(self, kind: str) -> list[Problem]:
        return [p for p in self.problems if p.kind == kind]


class Integrity:
    """Re-hashes stored originals against the sha256 recorded at upload."""

    def __init__(self, pools: Pools, storage: Storage, clock: Callable[[], float] = time.time):
        self._db = pools.db
        self._cpu = pools.cpu
        self._io = pools.io
        self._storage = storage
        self._clock = clock

    async def recorded(self) -> list[RecordedOriginal]:
        """Every recorded original (to size a progress bar before ``verify``)."""
        return await self._db.run(image_queries.recorded_originals)

    async def verify(self, originals: list[RecordedOriginal], *, sample: int | None = None,
                     older_than: float = DEFAULT_GRACE,
                     on_checked: Callable[[RecordedOriginal], None] | None = None,
                     ) -> IntegrityReport:
        """Check ``originals`` (or a random ``sample`` of them) and list unrecorded files."""
        report = IntegrityReport(recorded=len(originals))
        chosen = originals if sample is None or sample >= len(originals) else sorted(
            random.sample(originals, sample), key=lambda o: o.image_id)
        kept = await self._db.run(image_queries.kept_image_ids)
        cutoff = self._clock() - older_than
        strays = await self._io.run(unrecorded_originals, self._storage, kept, cutoff)
        # At most one read and hash per CPU worker at a time: the pool's queue stays free.
        found = await in_lanes(self._cpu.threads, [
            partial(self._check, original, report, on_checked) for original in chosen])
        report.problems = [p for p in found if p is not None] + [
            Problem(UNRECORDED, o.image_id, o.location) for o in strays]
        return report

    async def _check(self, original: RecordedOriginal, report: IntegrityReport,
                     on_checked) -> Problem | None:
        try:
            data = await self._io.run(self._storage.read_original, original.image_id,
                                      original.ext)
        except FileNotFoundError:
            data = None
        problem = None
        if data is None:
            # A delete between the listing and the read is not a lost file.
            if await self._db.run(image_queries.image_exists, original.image_id):
                problem = Problem(MISSING, original.image_id, self._where(original),
                                  original.sha256)
        else:
            actual = await self._cpu.submit(_sha256, data)
            report.checked_bytes += len(data)
            if actual != original.sha256:
                problem = Problem(CORRUPT, original.image_id, self._where(original),
                                  original.sha256, actual)
        report.checked += 1
        if on_checked is not None:
            on_checked(original)
        return problem

    def _where(self, original: RecordedOriginal) -> str:
        return self._storage.original_location(original.image_id, original.ext)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
