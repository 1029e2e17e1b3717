"""View counts batched in memory and written to the database every few seconds."""

from __future__ import annotations

from collections import Counter

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from imagehost.db.images import add_views
from imagehost.service.pools import Pools

_log = Logger()

FLUSH_INTERVAL = 2.0  # seconds; the contract allows at most 5


class ViewCounter:
    """Counts views in memory; ``start`` flushes them every ``interval``, ``stop`` once more."""

    def __init__(self, pools: Pools, clock, interval: float = FLUSH_INTERVAL):
        self._db = pools.db
        self._loop = LoopingCall(self.flush)
        self._loop.clock = clock
        self.interval = interval
        self.pending: Counter[str] = Counter()
        self._flushing: set[Deferred] = set()

    def count(self, image_id: str) -> None:
        """One more view of ``image_id`` (no I/O)."""
        self.pending[image_id] += 1

    def start(self) -> None:
        self._loop.start(self.interval, now=False)

    async def stop(self) -> None:
        """Stop the periodic flush and write everything still pending."""
        if self._loop.running:
            self._loop.stop()
        await DeferredList(list(self._flushing))
        await self.flush()

    def flush(self) -> Deferred:
        """Write the pending counts in one transaction; on failure they are kept for next time."""
        if not self.pending:
            return succeed(None)
        counts, self.pending = self.pending, Counter()
        d = self._db.run(add_views, dict(counts))
        self._flushing.add(d)
        d.addBoth(self._flushed, d, counts)
        return d

    def _flushed(self, result, d: Deferred, counts: Counter[str]) -> None:
        self._flushing.discard(d)
        if isinstance(result, Failure):
            self.pending.update(counts)
            _log.failure("Cannot write {n} view counts; keeping them", result,
                         n=sum(counts.values()))
        return None

