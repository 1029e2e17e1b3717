"""The services built in isolation: real SQLite, files and Pillow, synchronous pools
(``tests/support.py``) and a fake clock; and the assembly that wires them for a daemon."""

from __future__ import annotations

import os
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from imagehost.config import load_config
from imagehost.db import images as image_queries
from imagehost.db.accounts import User
from imagehost.service.accounts import Principal
from imagehost.service.delivery import Delivery
from imagehost.service.errors import NotFound, Overloaded
from imagehost.service.images import Images
from imagehost.service.library import Library
from imagehost.service.pools import CpuPool
from imagehost.service.quotas import Quotas
from imagehost.service.runtime_settings import RuntimeSettings, Settings
from imagehost.service.throttle import RateLimit
from imagehost.service.variant_cache import VariantCache
from imagehost.service.views import ViewCounter
from imagehost.storage import LocalStorage
from tests.conftest import image_bytes
from tests.support import (
    HeldThreadPool,
    ImmediateReactor,
    ImmediateThreadPool,
    sqlite_database,
    synchronous_pools,
)

# Everything here runs synchronously: a test that waits is a bug, not a slow machine.
pytestmark = pytest.mark.timeout(30)

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
OWNER = User(id="u-1", username="alice", email="a@example.com", display_name="alice",
             password_hash="x", is_admin=False, is_active=True, created_at=NOW)


class Parts:
    """One installation's services on synchronous pools; ``cpu``/``io`` may hold jobs."""

    def __init__(self, root: Path, *, cpu=None, io=None, revalidate_after: float = 5.0):
        self.root = root
        self.db = sqlite_database(root)
        self.cpu, self.io = cpu or ImmediateThreadPool(), io or ImmediateThreadPool()
        self.pools = synchronous_pools(self.db, cpu=self.cpu, io=self.io)
        self.storage = LocalStorage(root)
        self.storage.prepare()
        self.config = load_config(environ={}, overrides={("server", "data_dir"): str(root)})
        self.settings = RuntimeSettings(self.config, self.pools)
        self.clock = Clock()
        self.images = Images(self.pools, self.storage, self.settings,
                             limits=_limits(self.config), now=lambda: NOW,
                             guest_limit=RateLimit(self.pools, "guest", 0, self.clock.seconds,
                                                   "guest uploads"),
                             quotas=Quotas(self.pools, self.settings))
        self.cache = VariantCache(self.storage, 10**9, self.pools.io)
        self.delivery = Delivery(self.pools, self.storage, self.cache,
                                 ViewCounter(self.pools, self.clock), max_dimension=4096,
                                 clock=self.clock, revalidate_after=revalidate_after)
        self.library = Library(self.pools, self.storage, now=lambda: NOW,
                               cursor_key=b"test cursor key", on_delete=self.delivery.deleted)
        self.db.run(_insert_owner)

    async def upload(self, data: bytes) -> str:
        settings = Settings(self.settings.defaults())
        stored = await self.images.store(data, settings)
        image = await self.images.record(stored, owner=OWNER, original_name="a.png",
                                         description="", is_public=False)
        return image.id


def _limits(config):
    from imagehost.assembly import source_limits

    return source_limits(config)


def _insert_owner(conn) -> None:
    from imagehost.db.accounts import insert_user

    insert_user(conn, OWNER)


def fired(d: Deferred):
    """The result of a Deferred that has already fired (synchronous pools)."""
    results = []

    def keep(result):
        results.append(result)
        return None if isinstance(result, Failure) else result

    d.addBoth(keep)
    assert results, "the Deferred has not fired"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


# -- the CPU pool ------------------------------------------------------------------------


def test_a_full_cpu_pool_answers_with_a_failed_deferred_not_an_exception():
    held = HeldThreadPool(threads=1)
    pool = CpuPool(ImmediateReactor(), held, queue_size=1)
    running, waiting = pool.submit(lambda: 1), pool.submit(lambda: 2)
    refused = pool.submit(lambda: 3)  # must not raise: callers expect a Deferred
    with pytest.raises(Overloaded):
        fired(refused)
    # One job per thread is on the thread pool; the other waits in the CpuPool's own
    # queue (so that requests can overtake background jobs there).
    assert pool.pending == 2 and len(held.held) == 1
    held.release()
    assert (fired(running), fired(waiting)) == (1, 2)
    assert pool.pending == 0
    after = pool.submit(lambda: 4)
    held.release()
    assert fired(after) == 4


def test_requests_start_before_background_jobs_that_waited_longer():
    held = HeldThreadPool(threads=1)
    pool = CpuPool(ImmediateReactor(), held, queue_size=4)
    order = []
    first = pool.submit(order.append, "request 1")
    background = pool.submit_background(order.append, "background")
    second = pool.submit(order.append, "request 2")  # queued after the background job
    held.release()
    assert order == ["request 1", "request 2", "background"]
    assert [fired(d) for d in (first, second, background)] == [None, None, None]


def test_background_jobs_run_one_at_a_time_and_leave_a_thread_for_requests():
    held = HeldThreadPool(threads=2)
    pool = CpuPool(ImmediateReactor(), held, queue_size=4)
    for n in range(3):
        pool.submit_background(lambda n=n: n)
    assert len(held.held) == 1  # one background job; the other thread stays free
    pool.submit(lambda: "request")
    assert len(held.held) == 2  # the request did not wait
    pool.submit(lambda: "request")
    assert len(held.held) == 2  # both threads busy: this one waits, first in line
    held.release()
    assert pool.pending == 0 and not held.held


def test_background_jobs_wait_until_requests_left_the_pool_quiet_for_a_while():
    clock = Clock()
    held = HeldThreadPool(threads=2)
    pool = CpuPool(ImmediateReactor(), held, queue_size=4, clock=clock,
                   background_quiet=0.25)
    pool.submit_background(lambda: "first")
    assert len(held.held) == 1  # no request has run yet: it starts at once
    held.release()
    pool.submit(lambda: "request")
    held.release()
    pool.submit_background(lambda: "second")
    for _ in range(8):  # a steady load: a request every 0.1 s
        clock.advance(0.1)
        pool.submit(lambda: "request")
        assert len(held.held) == 1  # the request alone: the background job waits
        held.release()
    clock.advance(0.2)
    assert not held.held
    clock.advance(0.05)
    assert len(held.held) == 1  # 0.25 s after the last request ended, it starts
    held.release()
    assert pool.pending == 0 and not held.held


def _background_pool(clock: Clock, threads: int) -> tuple[CpuPool, HeldThreadPool]:
    held = HeldThreadPool(threads=threads)
    return CpuPool(ImmediateReactor(), held, queue_size=4, clock=clock,
                   background_quiet=0.25, background_share=0.05), held


def _held_background(held: HeldThreadPool) -> list[int]:
    """The numbers of the background jobs on a thread (their ``fn`` is ``list.append``)."""
    return [args[1] for _on, _run, args, _kw in held.held if len(args) == 2]


def test_under_a_steady_load_background_jobs_still_get_their_share_and_no_more():
    clock = Clock()
    pool, held = _background_pool(clock, threads=2)
    step = 0.125  # each job holds its thread for two steps (0.25 s)
    done = []

    def keep_requests_waiting():
        while pool.pending < pool.threads + pool.queue_size:
            pool.submit(lambda: "request")

    keep_requests_waiting()
    for n in range(50):
        pool.submit_background(done.append, n)
    started, ended = {}, {}
    for _ in range(160):  # 20 s of every thread busy and requests always waiting
        clock.advance(step)
        oldest = held.held[0][2]  # (fn, *args) of the job that ends now
        held.release_one()
        if len(oldest) == 2:
            ended[oldest[1]] = clock.seconds()
        keep_requests_waiting()
        for n in _held_background(held):
            started.setdefault(n, clock.seconds())
        assert len(_held_background(held)) <= 1
    # (a) the lane made progress under load: a 0.25 s job about every 5 s
    assert sorted(done) == list(range(len(done))) and 4 <= len(done) <= 5
    # (b) and never started before its share allowed: 19 times the last job's time
    for n in range(1, len(started)):
        took = ended[n - 1] - started[n - 1]
        assert took == 0.25
        assert started[n] >= ended[n - 1] + 19 * took
    assert pool.background_done == len(done) and pool.pending == pool.threads + 4


def test_a_quiet_pool_runs_background_jobs_back_to_back_whatever_their_share():
    clock = Clock()
    pool, held = _background_pool(clock, threads=2)
    done = []
    pool.submit(lambda: "request")
    pool.submit_background(done.append, 0)  # its share under load
    assert _held_background(held) == [0]
    clock.advance(1.0)
    held.release()  # a 1 s job: under load the next would wait 19 s
    for n in range(1, 6):
        pool.submit_background(done.append, n)
    assert not held.held  # a request ended just now and the share is used up
    clock.advance(0.25)
    for n in range(1, 6):
        assert _held_background(held) == [n]  # started the moment the last one ended
        clock.advance(1.0)
        held.release_one()
    assert done == list(range(6)) and not held.held and pool.background_done == 6


def test_a_full_background_queue_drops_jobs_but_never_refuses_requests():
    held = HeldThreadPool(threads=1)
    pool = CpuPool(ImmediateReactor(), held, queue_size=1, background_queue_size=1)
    pool.submit(lambda: 1)
    pool.submit_background(lambda: 2)
    with pytest.raises(Overloaded):
        fired(pool.submit_background(lambda: 3))
    assert pool.background_dropped == 1
    fired_later = pool.submit(lambda: 4)
    held.release()
    assert fired(fired_later) == 4


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
@pytest_twisted.ensureDeferred
async def test_cpu_threads_run_at_a_lower_priority_than_the_reactor(reactor):
    threadpool = ThreadPool(minthreads=1, maxthreads=1, name="test-cpu")
    pool = CpuPool(reactor, threadpool, queue_size=1, niceness=3)
    pool.start()
    try:
        def nice() -> int:
            return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

        ours = nice()
        assert [await pool.submit(nice), await pool.submit(nice)] == [min(ours + 3, 19)] * 2
        assert nice() == ours  # the reactor thread keeps its priority
    finally:
        pool.stop()


def test_the_idle_timer_is_set_once_per_idle_period_not_once_per_job():
    clock = Clock()
    timers = []
    set_timer = clock.callLater
    clock.callLater = lambda *args: timers.append(args[0]) or set_timer(*args)
    calls = []
    pool = CpuPool(ImmediateReactor(), ImmediateThreadPool(), queue_size=4,
                   when_idle=lambda: calls.append(clock.seconds()), idle_delay=2.0,
                   clock=clock)
    pool.start()
    for _ in range(20):  # a job every 0.1 s, as renders under load
        pool.submit(lambda: None)
        clock.advance(0.1)
    # One timer per idle delay (it looks again when it fires), not one per job.
    assert timers == [2.0, pytest.approx(1.9)]
    clock.advance(1.85)
    assert calls == []
    clock.advance(0.1)  # 2 s after the last job (at 1.9 s) ended
    assert calls == [pytest.approx(3.95)]
    assert len(timers) == 2


def test_when_idle_runs_once_the_pool_has_been_idle_for_the_delay():
    clock = Clock()
    calls = []
    held = HeldThreadPool(threads=1)
    pool = CpuPool(ImmediateReactor(), held, queue_size=4, when_idle=lambda: calls.append(1),
                   idle_delay=2.0, clock=clock)
    pool.start()
    pool.submit(lambda: 1)
    clock.advance(5)
    assert calls == []  # still busy
    held.release()
    clock.advance(1.5)
    pool.submit(lambda: 2)  # busy again before the delay was over
    held.release()
    clock.advance(1.5)
    assert calls == []
    clock.advance(0.5)
    held.release()  # when_idle itself runs on a pool thread
    assert calls == [1]
    clock.advance(10)
    assert calls == [1]  # once per idle period


# -- images --------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_storing_an_original_writes_it_on_the_io_pool(tmp_path):
    io = HeldThreadPool()
    parts = Parts(tmp_path, io=io)
    settings = Settings(parts.settings.defaults())
    storing = Deferred.fromCoroutine(parts.images.store(image_bytes("PNG"), settings))
    assert not storing.called and len(io.held) == 1  # validated and hashed; write waits
    assert not list(parts.storage.stored_originals())
    io.release()
    stored = fired(storing)
    assert parts.storage.read_original(stored.image_id, "png") == image_bytes("PNG")


@pytest_twisted.ensureDeferred
async def test_a_known_digest_is_not_computed_again(tmp_path):
    parts = Parts(tmp_path)
    settings = Settings(parts.settings.defaults())
    stored = await parts.images.store(image_bytes(), settings, sha256="f" * 64)
    assert stored.sha256 == "f" * 64


# -- delivery --------------------------------------------------------------------------------


def _png_variant(parts: Parts, image_id: str, width: int):
    return Deferred.fromCoroutine(parts.delivery.locate(
        image_id, "png", thumbnail=False, query={"w": [str(width)]}))


def _held_renders_of_a_png(tmp_path: Path):
    """Services whose CPU pool holds its jobs, with a 200x100 PNG uploaded: the pool, the
    services and its 50 px wide variant, located."""
    cpu = HeldThreadPool()
    parts = Parts(tmp_path, cpu=cpu)
    uploading = Deferred.fromCoroutine(parts.upload(image_bytes("PNG", (200, 100))))
    cpu.release()  # the upload's validation
    return cpu, parts, fired(_png_variant(parts, fired(uploading), 50))


@pytest_twisted.ensureDeferred
async def test_a_miss_renders_once_and_then_hits_the_cache(tmp_path):
    cpu, parts, content = _held_renders_of_a_png(tmp_path)
    first = Deferred.fromCoroutine(parts.delivery.body(content, count_view=True))
    second = Deferred.fromCoroutine(parts.delivery.body(content, count_view=True))
    assert len(cpu.held) == 1  # identical misses share one render
    cpu.release()
    assert fired(first).cache == fired(second).cache == "MISS"
    assert fired(first).data == fired(second).data
    assert parts.delivery.renders == 1
    hit = await parts.delivery.body(content, count_view=False)
    with hit.file:
        assert hit.cache == "HIT" and hit.file.read() == fired(first).data


async def _uploaded_with_held_io(parts: Parts, io: HeldThreadPool, size=(200, 100)) -> str:
    uploading = Deferred.fromCoroutine(parts.upload(image_bytes("PNG", size)))
    io.release()  # the original's write
    return fired(uploading)


async def _answered_with_held_io(root: Path):
    """Services whose I/O pool holds its jobs, with a 200x100 PNG uploaded and its 50 px
    wide variant answered (rendered; its cache file's write held): the pool, the
    services, the variant's content and the answer."""
    io = HeldThreadPool()
    parts = Parts(root, io=io)
    image_id = await _uploaded_with_held_io(parts, io)
    content = fired(_png_variant(parts, image_id, 50))
    return io, parts, content, fired(Deferred.fromCoroutine(
        parts.delivery.body(content, count_view=False)))


@pytest_twisted.ensureDeferred
async def test_a_miss_is_answered_before_its_cache_file_is_written(tmp_path):
    io, parts, content, first = await _answered_with_held_io(tmp_path)
    assert first.cache == "MISS" and len(io.held) == 1  # answered; the write waits
    assert not content.cache_path.exists()
    # Meanwhile the same variant is served from the bytes being written, not rendered
    # again: by the route and by the hit path alike.
    second = fired(Deferred.fromCoroutine(parts.delivery.body(content, count_view=False)))
    at_once = parts.delivery.cached_body(content, count_view=False, read_up_to=2**16)
    assert second.cache == at_once.cache == "HIT"
    assert second.data == at_once.data == first.data
    assert parts.delivery.cached_body(content, count_view=False) is None  # HEAD: no bytes
    assert parts.delivery.renders == 1 and len(io.held) == 1
    stopping = Deferred.fromCoroutine(parts.delivery.stop())
    assert not stopping.called  # stop waits for the cache file
    io.release()
    fired(stopping)
    assert content.cache_path.read_bytes() == first.data
    third = fired(Deferred.fromCoroutine(parts.delivery.body(content, count_view=False)))
    with third.file:
        assert third.cache == "HIT" and third.file.read() == first.data


@pytest_twisted.ensureDeferred
async def test_the_hit_path_miss_takes_bytes_being_written_that_it_would_not_read_at_once(
        tmp_path):
    io, parts, content, first = await _answered_with_held_io(tmp_path)
    # The hit path reads at once only bytes up to a size: these are more, so it renders...
    assert parts.delivery.cached_body(content, count_view=False, read_up_to=10) is None
    second = fired(parts.delivery.render_miss(content))
    # ...and gets the bytes being written, not a render of its own.
    assert second.cache == "HIT" and second.data == first.data
    assert parts.delivery.renders == 1 and parts.delivery.immediate_misses == 1
    io.release()


@pytest_twisted.ensureDeferred
async def test_a_failed_cache_write_leaves_no_file_and_the_next_request_renders_again(
        tmp_path):
    io, parts, content, first = await _answered_with_held_io(tmp_path)
    folder = content.cache_path.parent
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.write_bytes(b"")  # a file where the image's folder goes: the write fails
    io.release()
    assert folder.read_bytes() == b""  # nothing half-written
    again = Deferred.fromCoroutine(parts.delivery.body(content, count_view=False))
    assert again.called  # rendered again at once; its own write waits
    assert fired(again).cache == "MISS" and fired(again).data == first.data
    assert parts.delivery.renders == 2
    folder.unlink()
    io.release()
    assert content.cache_path.read_bytes() == first.data


def held_calls(cpu: HeldThreadPool) -> list[str]:
    """The functions of the CPU jobs held, in order (each is wrapped by ``CpuPool._run``)."""
    return [job[2][0].__name__ for job in cpu.held]


def test_on_demand_renders_go_before_the_first_views_queued_earlier(tmp_path):
    cpu = HeldThreadPool(threads=1)
    parts = Parts(tmp_path, cpu=cpu)
    parts.delivery.eager_presets = ("thumbnail",)
    uploading = Deferred.fromCoroutine(parts.upload(image_bytes("PNG", (800, 600))))
    cpu.release()  # the upload's validation
    image_id = fired(uploading)
    record = fired(parts.db.run(image_queries.image_by_id, image_id))
    wide, narrow = fired(_png_variant(parts, image_id, 400)), fired(_png_variant(parts, image_id,
                                                                                  200))
    first = Deferred.fromCoroutine(parts.delivery.body(wide, count_view=False))
    ahead = parts.delivery.render_first_views(record)  # queued while the thread is busy
    second = Deferred.fromCoroutine(parts.delivery.body(narrow, count_view=False))
    assert held_calls(cpu) == ["render_variant"]
    cpu.release_one()  # the first request's render; next on the thread is the second's
    assert held_calls(cpu) == ["render_variant"]
    cpu.release_one()
    assert fired(first).cache == fired(second).cache == "MISS"
    assert held_calls(cpu) == ["_render_unless_cached"]
    cpu.release()
    fired(ahead)
    assert parts.delivery.eager_renders == 1
    thumbnail = fired(Deferred.fromCoroutine(parts.delivery.locate(
        image_id, "png", thumbnail=True, query={})))
    hit = fired(Deferred.fromCoroutine(parts.delivery.body(thumbnail, count_view=False)))
    with hit.file:
        assert hit.cache == "HIT"


@pytest_twisted.ensureDeferred
async def test_a_remembered_image_is_trusted_until_the_clock_says_revalidate(tmp_path):
    parts = Parts(tmp_path, revalidate_after=5.0)
    image_id = await parts.upload(image_bytes("PNG", (200, 100)))
    content = fired(_png_variant(parts, image_id, 50))
    await parts.delivery.body(content, count_view=False)
    variants = parts.storage.variants_dir(image_id)
    await parts.db.run(image_queries.delete_image, image_id, None)  # another daemon's delete
    parts.clock.advance(4.9)
    assert fired(_png_variant(parts, image_id, 50)).image.id == image_id
    parts.clock.advance(0.2)
    with pytest.raises(NotFound):
        fired(_png_variant(parts, image_id, 50))
    assert not variants.exists()  # its cached variants went with it


@pytest_twisted.ensureDeferred
async def test_view_counts_are_batched_by_the_clock(tmp_path):
    parts = Parts(tmp_path)
    image_id = await parts.upload(image_bytes())
    views = ViewCounter(parts.pools, parts.clock, interval=5.0)
    views.start()
    for _ in range(4):
        views.count(image_id)
    parts.clock.advance(4.9)
    assert (await parts.db.run(image_queries.image_by_id, image_id)).views == 0
    parts.clock.advance(0.1)
    assert not views.pending
    assert (await parts.db.run(image_queries.image_by_id, image_id)).views == 4
    views.count(image_id)
    await views.stop()
    assert (await parts.db.run(image_queries.image_by_id, image_id)).views == 5


def test_eviction_removes_files_on_the_io_pool(tmp_path):
    io = HeldThreadPool()
    parts = Parts(tmp_path, io=io)
    cache = VariantCache(parts.storage, 10, parts.pools.io)
    old, new = cache.path("ab-1", "old.png"), cache.path("ab-1", "new.png")
    for path in (old, new):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 8)
    cache.stored(old, 8)
    evicted = cache.stored(new, 8)
    assert cache.size == 8 and old.exists() and len(io.held) == 1
    io.release()
    fired(evicted)
    assert not old.exists() and new.exists()


# -- library ---------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_delete_removes_the_record_first_and_the_files_on_the_io_pool(tmp_path):
    io = HeldThreadPool()
    parts = Parts(tmp_path, io=io)
    uploading = Deferred.fromCoroutine(parts.upload(image_bytes("PNG")))
    io.release()
    image_id = fired(uploading)
    deleting = Deferred.fromCoroutine(parts.library.delete(Principal(OWNER), image_id))
    assert await parts.db.run(image_queries.image_by_id, image_id) is None
    assert parts.storage.read_original(image_id, "png")  # still there: the I/O job waits
    io.release()
    fired(deleting)
    with pytest.raises(FileNotFoundError):
        parts.storage.read_original(image_id, "png")



def _cache_files(parts: Parts) -> list[Path]:
    return [p for p in parts.storage.cache.rglob("*") if p.is_file()]


@pytest_twisted.ensureDeferred
async def test_a_cache_write_pending_at_a_delete_leaves_no_file_whichever_lands_first(
        tmp_path):
    for write_lands_first in (False, True):
        io, parts, content, answered = await _answered_with_held_io(
            tmp_path / str(write_lands_first))
        assert answered.cache == "MISS" and len(io.held) == 1  # its cache file waits
        deleting = Deferred.fromCoroutine(parts.library.delete(Principal(OWNER),
                                                               content.image.id))
        assert len(io.held) == 2  # the write, then the delete's removal of the files
        if not write_lands_first:
            io.held.reverse()  # the removal runs first, then the rename lands
        io.release()  # (and the removal of a file that landed after the mark)
        fired(deleting)
        assert _cache_files(parts) == [], write_lands_first
        assert parts.cache.size == 0 and len(parts.cache) == 0


@pytest_twisted.ensureDeferred
async def test_a_render_finishing_after_its_image_is_deleted_caches_nothing(tmp_path):
    cpu, parts, content = _held_renders_of_a_png(tmp_path)
    image_id = content.image.id
    rendering = Deferred.fromCoroutine(parts.delivery.body(content, count_view=False))
    assert held_calls(cpu) == ["render_variant"]
    # (The original stays on disk, so the render under way still succeeds.)
    fired(Deferred.fromCoroutine(parts.library.delete(Principal(OWNER), image_id,
                                                      preserve_on_disk=True)))
    cpu.release()
    assert fired(rendering).cache == "MISS"  # that request still gets what it asked for
    fired(Deferred.fromCoroutine(parts.delivery.written()))
    assert _cache_files(parts) == []
    # An id that comes back (a restore) is cached again once it is uploaded anew.
    assert parts.cache.is_deleted(image_id)
    parts.delivery.render_first_views(content.image)
    assert not parts.cache.is_deleted(image_id)


# -- the assembly ------------------------------------------------------------------------------


def _built(tmp_path, reactor, **sections):
    from imagehost.assembly import build_imagehost

    overrides = {("server", "data_dir"): str(tmp_path)}
    overrides.update({tuple(k.split("__")): v for k, v in sections.items()})
    return build_imagehost(load_config(environ={}, overrides=overrides), reactor, b"secret")


def test_the_assembly_wires_local_storage_sqlite_and_the_configured_pool_sizes(tmp_path,
                                                                             reactor):
    host = _built(tmp_path, reactor, render__threads=3, render__queue_size=7,
                  database__pool_size=4)
    assert isinstance(host.storage, LocalStorage) and host.storage.root == tmp_path
    assert host.pools.db.engine.dialect.name == "sqlite"
    assert host.pools.db.threads == 1  # SQLite has one writer, whatever pool_size says
    assert (host.pools.cpu.threads, host.pools.cpu.queue_size) == (3, 7)
    assert host.pools.io.threads >= 1
    host.pools.db.engine.dispose()


def test_the_assembly_wires_s3_and_postgresql_when_configured(tmp_path, reactor):
    pytest.importorskip("boto3")
    pytest.importorskip("psycopg")
    from imagehost.storage.s3 import S3Storage

    host = _built(tmp_path, reactor, storage__backend="s3", storage__s3_bucket="b",
                  storage__s3_endpoint_url="http://127.0.0.1:9",
                  database__url="postgresql+psycopg://u:p@127.0.0.1:9/db",
                  database__pool_size=6, render__threads=2)
    assert isinstance(host.storage, S3Storage) and host.storage.bucket == "b"
    assert host.storage.cache == tmp_path / "cache"
    assert host.pools.db.engine.dialect.name == "postgresql"
    assert host.pools.db.threads == 6  # one per connection
    assert host.pools.cpu.threads == 2


# -- the web layer's table of errors ------------------------------------------------------


def _subclasses(cls: type) -> set[type]:
    return {sub for direct in cls.__subclasses__() for sub in {direct, *_subclasses(direct)}}


def test_every_service_and_storage_error_has_an_entry_in_the_status_table():
    from imagehost.service.errors import ServiceError
    from imagehost.storage.errors import StorageError
    from imagehost.web.errors import STATUS_BY_ERROR

    missing = {cls.__name__ for cls in _subclasses(ServiceError) | _subclasses(StorageError)
               if cls not in STATUS_BY_ERROR}
    assert not missing, f"add these to imagehost/web/errors.py: {sorted(missing)}"


def test_the_table_gives_statuses_titles_and_retry_after():
    from imagehost.service.errors import RateLimited, ValidationFailed
    from imagehost.storage.errors import StorageUnavailable
    from imagehost.web.errors import SYMFONY_TITLE, error_body, retry_after, status_of

    invalid = ValidationFailed.one("image", "Nope.")
    assert status_of(invalid) == 422
    assert error_body(invalid) == {"error": {
        "title": SYMFONY_TITLE, "message": "Validation Error",
        "violations": [{"property": "image", "message": "Nope."}]}}
    limited = RateLimited("Too many.", 7)
    assert (status_of(limited), retry_after(limited)) == (429, 7)
    assert error_body(limited)["error"]["title"] == "RateLimited"
    unavailable = StorageUnavailable("The store is down.")
    assert (status_of(unavailable), retry_after(unavailable)) == (503, 5)
    assert error_body(unavailable)["error"]["title"] == "StorageUnavailable"
    assert retry_after(invalid) is None
