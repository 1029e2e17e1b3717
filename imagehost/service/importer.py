"""Bulk import of image files through the same validation and storage path as an upload.

Each file is read and hashed on the CPU pool, checked against the owner's images (and the
other files of the same run) by content hash, validated and stored by
``Images.accept``, then recorded by ``Images.record``. Files run ``jobs`` at a time.
``cancel()`` stops starting new files and lets the running ones settle: a file that was
stored but not yet recorded is deleted again, so no original is left without its record.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from twisted.internet.defer import Deferred, gatherResults, succeed

from imagehost.db.accounts import User
from imagehost.service import Imagehost
from imagehost.service.errors import ValidationFailed
from imagehost.service.images import check_size
from imagehost.service.quotas import QuotaExceeded
from imagehost.service.runtime_settings import Settings

IMPORTED = "imported"
DUPLICATE = "duplicate"
REJECTED = "rejected"
SKIPPED = "skipped"  # not started because the import was cancelled


@dataclass(frozen=True)
class ImportOutcome:
    """What happened to one file."""

    path: Path
    status: str
    size: int
    reason: str | None = None
    image_id: str | None = None


@dataclass
class ImportSummary:
    """Every file's outcome, in the order the files were given."""

    outcomes: list[ImportOutcome] = field(default_factory=list)
    dry_run: bool = False
    cancelled: bool = False
    stopped_by: str | None = None  # the quota message that stopped the import

    def having(self, status: str) -> list[ImportOutcome]:
        return [o for o in self.outcomes if o.status == status]

    @property
    def imported(self) -> list[ImportOutcome]:
        return self.having(IMPORTED)

    @property
    def duplicates(self) -> list[ImportOutcome]:
        return self.having(DUPLICATE)

    @property
    def rejected(self) -> list[ImportOutcome]:
        return self.having(REJECTED)


def find_files(paths: Iterable[Path], recursive: bool) -> list[Path]:
    """The regular files named by ``paths``: files as given, folders' files sorted (blocking)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            entries = path.rglob("*") if recursive else path.iterdir()
            found.extend(sorted(p for p in entries if p.is_file()))
        else:
            found.append(path)
    return found


def skipped_folders(paths: Iterable[Path], recursive: bool) -> list[Path]:
    """The sub-folders of the given folders that ``find_files`` does not descend into."""
    if recursive:
        return []
    return sorted(p for path in paths if path.is_dir() for p in path.iterdir() if p.is_dir())


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read(path: Path) -> tuple[bytes, str]:
    data = path.read_bytes()
    return data, hashlib.sha256(data).hexdigest()


class _FirstCopy:
    """The first file of a run with a given hash; later copies wait for its outcome."""

    def __init__(self):
        self.outcome: ImportOutcome | None = None
        self._waiting: list[Deferred] = []

    def settled(self) -> Deferred:
        if self.outcome is not None:
            return succeed(self.outcome)
        d: Deferred = Deferred()
        self._waiting.append(d)
        return d

    def settle(self, outcome: ImportOutcome) -> None:
        self.outcome = outcome
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(outcome)


class Importer:
    """Imports files for one owner; ``run`` once per instance."""

    def __init__(self, imagehost: Imagehost, owner: User, *, is_public: bool = False,
                 jobs: int = 1, dry_run: bool = False,
                 on_outcome: Callable[[ImportOutcome], None] | None = None):
        self._host = imagehost
        self._owner = owner
        self._is_public = is_public
        self._jobs = max(1, jobs)
        self._dry_run = dry_run
        self._on_outcome = on_outcome or (lambda outcome: None)
        self._first_copies: dict[str, _FirstCopy] = {}
        self._cancelled = False
        self._stopped_by: str | None = None
        self._turns: list[Deferred] = []

    def cancel(self) -> None:
        """Start no further files; running ones finish or are rolled back."""
        self._cancelled = True

    async def run(self, files: list[Path]) -> ImportSummary:
        """Import ``files``; never fails because of a bad file."""
        settings = await self._host.settings.current()
        outcomes: dict[int, ImportOutcome] = {}
        queue = iter(enumerate(files))
        self._turns = [Deferred() for _ in files]

        # ``jobs`` lanes pull from one queue: no per-file Deferred chains, so
        # thousands of files (or a cancelled run) never nest callbacks deeply.
        async def lane() -> None:
            for index, path in queue:
                outcomes[index] = await self._import_one(index, path, settings)

        await gatherResults([Deferred.fromCoroutine(lane()) for _ in range(self._jobs)])
        return ImportSummary([outcomes[i] for i in range(len(files))],
                             dry_run=self._dry_run,
                             cancelled=self._cancelled and self._stopped_by is None,
                             stopped_by=self._stopped_by)

    async def _import_one(self, index: int, path: Path, settings: Settings) -> ImportOutcome:
        size = file_size(path)
        try:
            if self._cancelled:
                return ImportOutcome(path, SKIPPED, size)
            try:
                outcome = await self._import(index, path, size, settings)
            except Exception as e:  # a bad file is reported, never fatal
                outcome = ImportOutcome(path, REJECTED, size, reason=_describe(e))
        finally:
            self._pass_turn(index)
        self._on_outcome(outcome)
        return outcome

    def _pass_turn(self, index: int) -> None:
        if not self._turns[index].called:
            self._turns[index].callback(None)

    async def _import(self, index: int, path: Path, size: int,
                      settings: Settings) -> ImportOutcome:
        check_size(size, settings)
        data, digest = await self._host.pools.cpu.submit(_read, path)
        # Hashes are claimed in file order, so of identical files the first one
        # named is imported and the later ones are its duplicates, whatever the timing.
        if index:
            await self._turns[index - 1]
        first = self._first_copies.get(digest)
        if first is not None:
            self._pass_turn(index)
            return _copy_of(await first.settled(), path, len(data))
        first = self._first_copies[digest] = _FirstCopy()
        self._pass_turn(index)
        try:
            outcome = await self._import_new(path, data, digest, settings)
        except Exception as e:
            outcome = ImportOutcome(path, REJECTED, len(data), reason=_describe(e))
        first.settle(outcome)
        return outcome

    async def _import_new(self, path: Path, data: bytes, digest: str,
                          settings: Settings) -> ImportOutcome:
        images = self._host.images
        existing = await images.duplicate_of(self._owner, digest)
        if existing is not None:
            return ImportOutcome(path, DUPLICATE, len(data), image_id=existing.id)
        if self._dry_run:
            await images.validate(data, settings)
            return ImportOutcome(path, IMPORTED, len(data))
        try:
            stored = await images.store(data, settings, sha256=digest, owner=self._owner)
            if self._cancelled:
                await images.discard(stored)
                return ImportOutcome(path, SKIPPED, len(data))
            image = await images.record(stored, owner=self._owner, original_name=path.name,
                                        description="", is_public=self._is_public,
                                        settings=settings)
        except QuotaExceeded as e:
            # The owner is full: no later file can fit either, so the import stops here
            # (files already in flight finish).
            self._stopped_by = self._stopped_by or e.message
            self.cancel()
            return ImportOutcome(path, SKIPPED, len(data), reason=e.message)
        return ImportOutcome(path, IMPORTED, len(data), image_id=image.id)


def _copy_of(first: ImportOutcome, path: Path, size: int) -> ImportOutcome:
    """The outcome of a later copy of a file already handled in this run."""
    if first.status in (IMPORTED, DUPLICATE):
        return ImportOutcome(path, DUPLICATE, size, image_id=first.image_id)
    return ImportOutcome(path, first.status, size, reason=first.reason)


def _describe(error: Exception) -> str:
    """The reason a file was rejected, as the HTTP API would word it."""
    if isinstance(error, ValidationFailed):
        return "; ".join(v.message for v in error.violations)
    if isinstance(error, OSError):
        return f"Cannot read the file: {error.strerror or error}."
    return f"{type(error).__name__}: {error}"
