"""A CPU worker pool with a bounded queue: full means Overloaded (503), never unbounded."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, DeferredSemaphore, FirstError, gatherResults
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from imagehost.service.errors import Overloaded

T = TypeVar("T")


class WorkerPool:
    """``threads`` workers; at most ``queue_size`` jobs waiting beyond the running ones."""

    def __init__(self, reactor, threads: int, queue_size: int, name: str = "imagehost-cpu"):
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=threads, maxthreads=threads, name=name)
        self.threads = threads
        self.queue_size = queue_size
        self.pending = 0

    def start(self) -> None:
        self._pool.start()

    def stop(self) -> None:
        self._pool.stop()

    def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        """Run ``fn`` on a worker; fails at once with Overloaded when the queue is full."""
        if self.pending >= self.threads + self.queue_size:
            raise Overloaded()
        self.pending += 1
        d = deferToThreadPool(self._reactor, self._pool, fn, *args, **kwargs)
        d.addBoth(self._done)
        return d

    def _done(self, result):
        self.pending -= 1
        return result


async def in_lanes(lanes: int, calls: Iterable[Callable[[], Awaitable[T]]]) -> list[T]:
    """Await every call, at most ``lanes`` at a time; results in order. The first
    failure is raised as itself (not wrapped in a FirstError) once all have ended."""
    semaphore = DeferredSemaphore(lanes)
    try:
        return await gatherResults([semaphore.run(call) for call in calls],
                                   consumeErrors=True)
    except FirstError as e:
        e.subFailure.raiseException()
        raise
