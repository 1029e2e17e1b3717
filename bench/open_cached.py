"""Opening a cached variant on the reactor thread vs handing the open to the I/O pool.

In-process, no HTTP: N sequential opens (open, fstat, read, close) of a cached variant
of SIZE bytes, done inline on the reactor thread, then the same through
``deferToThreadPool`` on a dedicated pool as ``IoPool.run`` does. Prints, per open, the
wall time and the CPU time the reactor thread spent (what the open costs every other
connection). ``python bench/open_cached.py [--opens N] [--size BYTES]``
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def open_variant(path: Path) -> int:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        f.read()
    return size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--opens", type=int, default=5000)
    parser.add_argument("--size", type=int, default=30_000, help="bytes (a typical variant)")
    args = parser.parse_args()

    from twisted.internet import reactor
    from twisted.internet.defer import Deferred
    from twisted.internet.threads import deferToThreadPool
    from twisted.python.threadpool import ThreadPool

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r1-400x300.jpg"
        path.write_bytes(os.urandom(args.size))
        pool = ThreadPool(minthreads=1, maxthreads=4, name="bench-io")
        pool.start()
        results = {}

        async def measure() -> None:
            for _ in range(200):  # warm the page cache and the pool
                open_variant(path)
                await deferToThreadPool(reactor, pool, open_variant, path)
            wall, cpu = time.perf_counter(), time.thread_time()
            for _ in range(args.opens):
                open_variant(path)
            results["on the reactor"] = (time.perf_counter() - wall, time.thread_time() - cpu)
            wall, cpu = time.perf_counter(), time.thread_time()
            for _ in range(args.opens):
                await deferToThreadPool(reactor, pool, open_variant, path)
            results["on the I/O pool"] = (time.perf_counter() - wall, time.thread_time() - cpu)

        def run() -> None:
            d = Deferred.fromCoroutine(measure())
            d.addBoth(lambda _: reactor.stop())

        reactor.callWhenRunning(run)
        reactor.run()
        pool.stop()
    print(f"{args.opens} opens of a {args.size} B cached variant (open, fstat, read, close)")
    print(f"{'where':<18}{'wall us/open':>14}{'reactor CPU us/open':>22}")
    for where, (wall, cpu) in results.items():
        print(f"{where:<18}{wall / args.opens * 1e6:>14.1f}{cpu / args.opens * 1e6:>22.1f}")


if __name__ == "__main__":
    main()
