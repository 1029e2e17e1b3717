"""Synchronous stand-ins for thread pools, for services built in isolation.

A service under test gets real ``Pools`` (``imagehost.service.pools``) whose thread
pools run each job at once on the calling thread, so a test needs no reactor turns; or
holds them until the test releases them, to see what waits. Everything else is real:
SQLite, files, Pillow.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from twisted.python.failure import Failure

from imagehost.db import Database, create_engine, upgrade
from imagehost.service.pools import CpuPool, IoPool, Pools


class ImmediateReactor:
    """The one reactor method ``deferToThreadPool`` uses, run at once."""

    def callFromThread(self, fn: Callable, *args, **kwargs) -> None:  # noqa: N802
        fn(*args, **kwargs)


class ImmediateThreadPool:
    """A ``ThreadPool`` that runs each job when it is submitted, on the caller's thread."""

    def __init__(self, threads: int = 1):
        self.max = threads
        self.started = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.started = False

    def callInThread(self, fn, *args, **kwargs) -> None:  # noqa: N802
        self.callInThreadWithCallback(lambda _ok, _result: None, fn, *args, **kwargs)

    def callInThreadWithCallback(self, on_result, fn, *args, **kwargs) -> None:  # noqa: N802
        try:
            result = fn(*args, **kwargs)
        except BaseException:
            on_result(False, Failure())
        else:
            on_result(True, result)


class HeldThreadPool(ImmediateThreadPool):
    """A ``ThreadPool`` that keeps jobs until ``release`` runs them."""

    def __init__(self, threads: int = 1):
        super().__init__(threads)
        self.held: list[tuple] = []

    def callInThreadWithCallback(self, on_result, fn, *args, **kwargs) -> None:  # noqa: N802
        self.held.append((on_result, fn, args, kwargs))

    def release_one(self) -> None:
        """Run the job held longest."""
        on_result, fn, args, kwargs = self.held.pop(0)
        super().callInThreadWithCallback(on_result, fn, *args, **kwargs)

    def release(self) -> None:
        while self.held:
            on_result, fn, args, kwargs = self.held.pop(0)
            super().callInThreadWithCallback(on_result, fn, *args, **kwargs)


def sqlite_database(data_dir: Path) -> Database:
    """A migrated SQLite database in ``data_dir``, run synchronously."""
    data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_engine(f"sqlite:///{data_dir / 'imagehost.db'}")
    upgrade(engine)
    return Database(engine, ImmediateReactor(), ImmediateThreadPool())


def synchronous_pools(db: Database, *, cpu: ImmediateThreadPool | None = None,
                      io: ImmediateThreadPool | None = None, queue_size: int = 4) -> Pools:
    """Pools around ``db`` whose CPU and I/O jobs run at once (or as ``cpu``/``io`` say)."""
    reactor = ImmediateReactor()
    return Pools(db=db, cpu=CpuPool(reactor, cpu or ImmediateThreadPool(), queue_size),
                 io=IoPool(reactor, io or ImmediateThreadPool()))
