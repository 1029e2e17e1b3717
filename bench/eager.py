"""Part ``eager`` of bench/run.py: how much first views rendered ahead (the eager
thumbnails after each upload, the CPU pool's background lane) delay on-demand renders.

    python bench/run.py --only eager [--quick]

The same on-demand load, uncached JPEG renders of the 4 MP sources (fit in ~400-512 px,
every request a new variant, ``CLIENTS`` connections), is measured twice per run on the
benchmark's imagehost, back to back: **alone**, with nothing in the background lane, and
**backlog**, right after a burst of ``BACKLOG`` uploads whose eager thumbnails are still
waiting. The uploads are over (every 201 received) before the measurement starts, so
their own CPU is not part of it; what the backlog arm has more is the eager renders.
Thumbnails on disk tell how much of the backlog was left when the measurement started
and when it ended, so how many were rendered during the load (the background lane's
bounded share under load, README "First views"): a run whose backlog ran out before
the end says so (it would understate the delay). Between runs the backlog is left to
drain.

The figures are the median over runs of alone/backlog images per second (1.00: no
delay; target <= 1.10), beside the same for the median latency, and the median number
of queued thumbnails done during the load (target >= 1: the lane makes progress).
"""

from __future__ import annotations

import json
import statistics
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import loadgen
import servers

CLIENTS = 2  # the pool has a spare thread between requests: the lane gets to run
BACKLOG = 300  # uploads per burst (the lane holds 256 per process)
SIZES = range(512, 399, -1)
QUALITIES = range(60, 75)  # part 1 uses 75-85: no variant here is ever a hit
DRAIN_TIMEOUT = 180.0


def run(bench, log) -> dict:
    """Measure both arms ``bench.args.runs`` times; the results for ``print_table``."""
    args = bench.args
    ih = bench.imagehost
    backlog = BACKLOG // 3 if args.quick else BACKLOG
    variants = [(src, size, q) for q in QUALITIES for size in SIZES
                for src in bench.photos.jpeg]
    per_run = int(args.duration * args.max_rate)
    bodies = [src.read_bytes() for src in bench.photos.jpeg]
    data_dir = bench.work / "data"
    runs: dict[str, list] = {"alone": [], "backlog": []}
    left: list[dict] = []
    drain(data_dir, list(bench.ids.values()), log)  # the set-up's own thumbnails
    for run in range(args.runs):
        order = ["alone", "backlog"] if run % 2 == 0 else ["backlog", "alone"]
        for arm in order:
            if len(variants) < per_run:
                raise RuntimeError("eager: out of distinct variants: lower --duration")
            chunk, variants = variants[:per_run], variants[per_run:]
            paths = [f"/image/{bench.ids[src]}.jpg?w={s}&h={s}&q={q}" for src, s, q in chunk]
            ids: list[str] = []
            if arm == "backlog":
                log(f"eager: uploading {backlog} images (run {run + 1}/{args.runs})")
                ids = _upload_burst(ih.base_url, bodies, backlog)
            at_start = _waiting(data_dir, ids)
            log(f"eager: {arm} c={CLIENTS} run {run + 1}/{args.runs}"
                + (f", {at_start} eager thumbnails waiting" if ids else ""))
            result = loadgen.run_gets(bench.wrk, ih.base_url, paths, connections=CLIENTS,
                                      duration=args.duration, count_cache=True)
            if result["hits"] or result["wrapped"]:
                raise RuntimeError(f"eager: on-demand run was not all misses: {result}")
            runs[arm].append(result)
            if ids:
                left.append({"uploads": len(ids), "at_start": at_start,
                             "at_end": _waiting(data_dir, ids)})
                drain(data_dir, ids, log)
    return {"clients": CLIENTS, "uploads": backlog, "left": left,
            **{arm: _median(r) for arm, r in runs.items()}}


def _upload_burst(base_url: str, bodies: list[bytes], count: int) -> list[str]:
    """Upload ``count`` distinct JPEGs (the sources, each with a comment segment of its
    own, so none is a duplicate) from 4 threads; their ids."""
    def one(n: int) -> str:
        return _upload(base_url, _distinct(bodies[n % len(bodies)], n))

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, range(count)))


def _distinct(jpeg: bytes, n: int) -> bytes:
    """The same JPEG with a COM segment after SOI: other bytes, the same pixels."""
    comment = f"imagehost bench {n} {uuid.uuid4()}".encode()
    return jpeg[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + jpeg[2:]


def _upload(base_url: str, data: bytes) -> str:
    boundary = uuid.uuid4().hex
    request = urllib.request.Request(
        base_url + "/api/guest/upload", data=servers.multipart_body(boundary, "e.jpg", data),
        method="POST", headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.load(response)["id"]


def _waiting(data_dir: Path, ids: list[str]) -> int:
    """How many of these images have no variant in the cache yet (thumbnail not rendered)."""
    cache = data_dir / "cache"
    return sum(1 for i in ids if not any((cache / i[:2] / i).glob("*")))


def drain(data_dir: Path, ids: list[str], log) -> None:
    """Wait until every one of these images has its eager thumbnail (at most a while)."""
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while (waiting := _waiting(data_dir, ids)) and time.monotonic() < deadline:
        time.sleep(0.5)
    if waiting:
        log(f"eager: {waiting} thumbnails still not rendered after {DRAIN_TIMEOUT:.0f} s")


def _median(runs: list[dict]) -> dict:
    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float))]
    return {k: statistics.median(r[k] for r in runs) for k in keys} | {"runs": runs}


def delay(results: dict) -> float | None:
    """Median over runs of alone/backlog images per second (each pair back to back)."""
    pairs = [a["rate"] / b["rate"] for a, b in
             zip(results["alone"]["runs"], results["backlog"]["runs"], strict=True)
             if b["rate"]]
    return statistics.median(pairs) if pairs else None


def done_during_load(results: dict) -> float | None:
    """Median over runs of the queued thumbnails rendered while the load ran."""
    done = [x["at_start"] - x["at_end"] for x in results["left"]]
    return statistics.median(done) if done else None


def print_table(results: dict, console) -> None:
    """The eager-delay table (part ``eager``)."""
    from rich.table import Table

    table = Table(title=f"Eager renders vs on-demand renders: uncached 4 MP JPEG renders, "
                        f"{results['clients']} clients, alone and right after "
                        f"{results['uploads']} uploads (their thumbnails queued)")
    for column in ("on-demand", "img/s", "p50 ms", "p99 ms", "thumbnails waiting at "
                   "start -> end (per run)", "done during the load"):
        table.add_column(column, justify="right")
    for arm in ("alone", "backlog"):
        r = results[arm]
        left = ", ".join(f"{x['at_start']} -> {x['at_end']}" for x in results["left"])
        done = ", ".join(str(x["at_start"] - x["at_end"]) for x in results["left"])
        table.add_row(arm, f"{r['rate']:.1f}", f"{r['p50_ms']:.0f}", f"{r['p99_ms']:.0f}",
                      *((left, done) if arm == "backlog" else ("-", "-")))
    console.print(table)
    if any(x["at_end"] == 0 for x in results["left"]):
        console.print(" [bold]the backlog ran out before the end of a run[/]: raise "
                      "eager.BACKLOG, the delay is understated")
