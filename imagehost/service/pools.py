"""The three thread pools every service is given, injected together as ``Pools``.

- **DB** (``imagehost.db.Database``): SQL, sized to the engine's connections.
- **CPU** (``CpuPool``): Pillow, hashing and multipart parsing only; a bounded queue in
  front, so a flood of renders gets 503 instead of an unbounded backlog.
- **I/O** (``IoPool``): file and S3 calls; its own pool, not the reactor's default one,
  which DNS lookups use, so a slow bucket cannot stall name resolution.

Tests build them around synchronous thread pools (``tests/support.py``).
"""

from __future__ import annotations

import functools
import os
import sys
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, DeferredSemaphore, FirstError, fail, gatherResults
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from imagehost.db import Database
from imagehost.service.errors import Overloaded

T = TypeVar("T")


class CpuPool:
    """``threads`` threads; at most ``queue_size`` requests waiting beyond the running ones.

    Jobs wait here, not in the thread pool's own queue, in two lanes: requests
    (``submit``) always start first; background jobs (``submit_background``: renders
    nobody waits for yet, such as the thumbnail made after an upload) start only when no
    request is waiting, one at a time, and, when there are several threads, only while
    one is left free for a request arriving meanwhile. So, but for the share below, a
    background job can hold up a request by at most the rest of one job, and only when
    requests are not keeping the pool busy anyway. With ``background_quiet`` seconds, a
    pool where no request has run for that long (a quiet pool) runs background jobs back
    to back; under a steady load of requests they get ``background_share`` of one thread
    instead: after a background job that took d seconds, the next may start (on the
    first free thread, before waiting requests) only (1 / share - 1) * d seconds after
    it ended (19 d for 5 %), so they still make progress while requests keep every
    thread busy. Without a limit,
    at 2 clients (a thread free between requests) the eager thumbnails of a burst of
    uploads halved the renders of requests, at the same or a lower thread priority
    alike; with none at all under load (share 0), they never ran while the load lasted
    (the eager figure in bench/README.md).

    ``when_idle`` (e.g. ``imaging.memory.release_free_memory``) runs on a pool thread
    ``idle_delay`` seconds after the last job, unless another job came meanwhile.

    Its threads run at a lower scheduling priority (``niceness`` more than the process)
    than the reactor thread, so that when renders keep every core busy, cached hits and
    other requests the reactor answers by itself still get a core at once instead of a
    time slice after the renders (the overload figure in bench/README.md).
    """

    def __init__(self, reactor, threadpool: ThreadPool, queue_size: int, *,
                 background_queue_size: int = 256, when_idle: Callable[[], Any] | None = None,
                 idle_delay: float = 2.0, clock=None, niceness: int = 0,
                 background_quiet: float = 0.0, background_share: float = 0.0):
        self._reactor = reactor
        self._pool = threadpool
        self.threads = threadpool.max
        self.queue_size = queue_size
        self.background_queue_size = background_queue_size
        self.pending = 0  # requests running or waiting
        self._requests: deque[_Job] = deque()
        self._background: deque[_Job] = deque()
        self._running = 0
        self._running_background = 0
        self._dispatching = False
        self._when_idle = when_idle
        self._idle_delay = idle_delay
        self._clock = reactor if clock is None else clock
        self._idle_call = None
        self._idle_since = 0.0  # clock seconds when the pool last went idle
        self.background_dropped = 0
        self.niceness = niceness
        self._lowered = threading.local()
        self.background_quiet = background_quiet
        self.background_share = background_share
        self.background_done = 0  # background jobs finished, beside those dropped
        self._last_request = float("-inf")  # when a request job last finished
        self._background_due = float("-inf")  # when the share allows the next one
        self._quiet_call = None

    def start(self) -> None:
        self._pool.start()
        self._schedule_idle()  # what building the daemon left free goes back too

    def stop(self) -> None:
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.cancel()
        self._idle_call = None
        if self._quiet_call is not None and self._quiet_call.active():
            self._quiet_call.cancel()
        self._quiet_call = None
        self._pool.stop()

    def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        """Run ``fn`` on the pool; a Deferred that fails with Overloaded when it is full."""
        if self.pending >= self.threads + self.queue_size:
            return fail(Overloaded())
        self.pending += 1
        job = _Job(fn, args, kwargs)
        job.result.addBoth(self._request_done)
        self._requests.append(job)
        self._dispatch()
        return job.result

    def submit_background(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        """Run ``fn`` when the pool has nothing better to do; fails with Overloaded when
        ``background_queue_size`` jobs are waiting already (the job is dropped)."""
        if len(self._background) >= self.background_queue_size:
            self.background_dropped += 1
            return fail(Overloaded())
        job = _Job(fn, args, kwargs, background=True)
        self._background.append(job)
        self._dispatch()
        return job.result

    def _request_done(self, result):
        self.pending -= 1
        return result

    def _next_job(self) -> _Job | None:
        if self._running >= self.threads:
            return None
        idle_lane = self._background and self._running_background == 0
        if idle_lane and self._share_allows():
            return self._background.popleft()  # its share under load, even before requests
        if self._requests:
            return self._requests.popleft()
        spare = self.threads - self._running - (1 if self.threads > 1 else 0)
        if idle_lane and spare > 0 and self._quiet():
            return self._background.popleft()
        return None

    def _share_allows(self) -> bool:
        """Whether the background lane's share under load allows a job now."""
        return bool(self.background_quiet and self.background_share
                    and self._clock.seconds() >= self._background_due)

    def _quiet(self) -> bool:
        """Whether no request has run for ``background_quiet`` seconds; if not, a look at
        the background lane is due when that (or the share's next turn) will be the case."""
        if not self.background_quiet:
            return True
        if self._running > self._running_background:
            return False  # a request is running: its end looks again
        now = self._clock.seconds()
        look_at = self._last_request + self.background_quiet
        if now >= look_at:
            return True
        if self.background_share:
            look_at = min(look_at, self._background_due)
        if self._quiet_call is None or not self._quiet_call.active():
            self._quiet_call = self._clock.callLater(look_at - now, self._quiet_over)
        return False

    def _quiet_over(self) -> None:
        self._quiet_call = None
        self._dispatch()

    def _dispatch(self) -> None:
        if self._dispatching:  # a synchronous pool (tests) finishes jobs as they start
            return
        self._dispatching = True
        try:
            while (job := self._next_job()) is not None:
                self._start(job)
        finally:
            self._dispatching = False
        self._schedule_idle()

    def _start(self, job: _Job) -> None:
        self._running += 1
        self._running_background += job.background
        if job.background and self.background_share:
            job.started = self._clock.seconds()
        # (No Deferred per job: the thread hands its result straight to ``_finished``.)
        self._pool.callInThreadWithCallback(functools.partial(self._hand_back, job),
                                            self._run, job.fn, *job.args, **job.kwargs)

    def _hand_back(self, job: _Job, _succeeded: bool, result) -> None:
        """On the pool thread: give the job's result (or Failure) to the reactor thread."""
        self._reactor.callFromThread(self._finished, result, job)

    def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn`` on a pool thread, which first lowers its own priority (once)."""
        if self.niceness and not getattr(self._lowered, "done", False):
            self._lowered.done = True
            lower_thread_priority(self.niceness)
        return fn(*args, **kwargs)

    def _finished(self, result, job: _Job) -> None:
        self._running -= 1
        self._running_background -= job.background
        if job.background:
            self.background_done += 1
            if self.background_share:
                now = self._clock.seconds()
                took = now - job.started
                self._background_due = now + took * (1 / self.background_share - 1)
        elif self.background_quiet:
            self._last_request = self._clock.seconds()
        self._dispatch()
        if isinstance(result, Failure):
            job.result.errback(result)
        else:
            job.result.callback(result)

    def _schedule_idle(self) -> None:
        # One timer per idle period, not one per job (a callLater and its cancel were a
        # part of the reactor's time per render): when it fires, it looks again.
        if self._when_idle is None or self._running or self._requests or self._background:
            return
        self._idle_since = self._clock.seconds()
        if self._idle_call is None:
            self._idle_call = self._clock.callLater(self._idle_delay, self._went_idle)

    def _went_idle(self) -> None:
        self._idle_call = None
        if self._running or self._requests or self._background:
            return  # busy again: its end schedules the next look
        wait = self._idle_since + self._idle_delay - self._clock.seconds()
        if wait > 0:  # a job ran meanwhile: idle for the delay after it
            self._idle_call = self._clock.callLater(wait, self._went_idle)
        elif self._pool.started:
            self._pool.callInThread(self._when_idle)


def lower_thread_priority(niceness: int) -> None:
    """Raise the calling thread's nice value by ``niceness`` (Linux gives each thread its
    own; elsewhere this lowers the whole process, so it is skipped)."""
    if sys.platform.startswith("linux"):
        try:
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + niceness)
        except OSError:
            pass  # a limit on nice values: run at the priority we have


@dataclass
class _Job:
    fn: Callable[..., Any]
    args: tuple
    kwargs: dict
    background: bool = False
    result: Deferred = field(default_factory=Deferred)
    started: float = 0.0  # clock seconds when it went to a thread


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
