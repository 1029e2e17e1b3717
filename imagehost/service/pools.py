"""The three thread pools every service is given, injected together as ``Pools``.

- **DB** (``imagehost.db.Database``): SQL, sized to the engine's connections.
- **CPU** (``CpuPool``): Pillow, hashing and multipart parsing only; a bounded queue in
  front, so a flood of renders gets 503 instead of an unbounded backlog.
- **I/O** (``IoPool``): file and S3 calls; its own pool, not the reactor's default one,
  which DNS lookups use, so a slow bucket cannot stall name resolution.

Tests build them around synchronous thread pools (``tests/support.py``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, DeferredSemaphore, FirstError, fail, gatherResults
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from imagehost.db import Database
from imagehost.service.errors import Overloaded

T = TypeVar("T")


class CpuPool:
    """``threads`` threads; at most ``queue_size`` jobs waiting beyond the running ones."""

    def __init__(self, reactor, threadpool: ThreadPool, queue_size: int):
        self._reactor = reactor
        self._pool = threadpool
        self.threads = threadpool.max
        self.queue_size = queue_size
        self.pending = 0

    def start(self) -> None:
        self._pool.start()

    def stop(self) -> None:
        self._pool.stop()

    def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        """Run ``fn`` on the pool; a Deferred that fails with Overloaded when it is full."""
        if self.pending >= self.threads + self.queue_size:
            return fail(Overloaded())
        self.pending += 1
        d = deferToThreadPool(self._reactor, self._pool, fn, *args, **kwargs)
        d.addBoth(self._done)
        return d

    def _done(self, result):
        self.pending -= 1
        return result


class IoPool:
    """Blocking file and object-store calls on a fixed number of threads."""

    def __init__(self, reactor, threadpool: ThreadPool):
        self._reactor = reactor
        self._pool = threadpool
        self.threads = threadpool.max

    def start(self) -> None:
        self._pool.start()

    def stop(self) -> None:
        self._pool.stop()

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        """Run ``fn`` on an I/O thread."""
        return deferToThreadPool(self._reactor, self._pool, fn, *args, **kwargs)


@dataclass(frozen=True)
class Pools:
    """The DB, CPU and I/O pools of one process; started and stopped together."""

    db: Database
    cpu: CpuPool
    io: IoPool

    def start(self) -> None:
        self.db.start()
        self.cpu.start()
        self.io.start()

    def stop(self) -> None:
        """Stop the pools; jobs already queued run first (ThreadPool.stop joins)."""
        self.cpu.stop()  # a finished render may still hand its cache file to the I/O pool
        self.io.stop()
        self.db.stop()


async def in_lanes(lanes: int, calls: Iterable[Callable[[], Awaitable[T]]]) -> list[T]:
    """Await every call, at most ``lanes`` at a time; results in order. The first
    failure is raised as itself (not wrapped in a FirstError) as soon as it happens."""
    semaphore = DeferredSemaphore(lanes)
    try:
        return await gatherResults([semaphore.run(call) for call in calls],
                                   consumeErrors=True)
    except FirstError as e:
        e.subFailure.raiseException()
        raise
