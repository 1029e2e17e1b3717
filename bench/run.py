"""imagehost vs thumbor vs raw Pillow vs a bare static file server: one command, one table.

    /work/venv/bin/python bench/run.py [--quick] [--profile]

Starts every server itself (imagehost as ``twistd -n imagehost`` from this checkout,
thumbor 7 from its own virtualenv, ``twistd -n web`` as the static ceiling), drives them
with wrk (GETs) or a Python client (uploads) in separate processes on 127.0.0.1, stops
them, prints the table and writes bench/results/latest.json. See bench/README.md.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

import delivery  # noqa: E402
import eager  # noqa: E402
import inprocess  # noqa: E402
import loadgen  # noqa: E402
import photos  # noqa: E402
import quality  # noqa: E402
import report  # noqa: E402
import servers  # noqa: E402

PARTS = ("uncached", "cached", "firstview", "overload", "upload", "memory")
#: Parts in modules of their own, run after PARTS: ``delivery`` (issue 15), ``quality``
#: and ``eager`` (issue 18).
EXTRA_PARTS = ("delivery", "quality", "eager")
SIZES = range(512, 399, -1)  # all use the same JPEG draft scale for 4 MP sources
#: The memory part's wide burst: fits over half of a 14 MP source's 4320 px width.
WIDE_BURST_WIDTHS = (3000, 2800, 2600, 2400, 2200, 2000)
QUALITIES = (80, 79, 81, 78, 82, 77, 83, 76, 84, 75, 85)
# The PNG and WebP rows have 2-3 sources each: more qualities keep every variant distinct.
WIDE_QUALITIES = (*QUALITIES, *range(86, 96), *range(74, 59, -1))
_THUMBOR_FORMAT = {"jpg": "jpeg", "webp": "webp"}


class Variants:
    """The endless-enough sequence of distinct variants (source, size, quality) per format.

    Every system gets the same slice for the same run, so they do identical work; the
    imagehost cursor only moves forward, so none of its requests can be a cache hit.
    """

    def __init__(self, sources: list[Path], used: set, qualities=QUALITIES):
        self.sequence = [(src, size, q) for q in qualities for size in SIZES
                         for src in sources]
        self.cursor = 0
        self.used = used  # shared by every sequence of one output format

    def take(self, count: int) -> list[tuple[Path, int, int]]:
        chunk = []
        while len(chunk) < count:
            if self.cursor >= len(self.sequence):
                raise RuntimeError("out of distinct variants: lower --duration or add sources")
            variant = self.sequence[self.cursor]
            self.cursor += 1
            if variant not in self.used:
                self.used.add(variant)
                chunk.append(variant)
        return chunk


def imagehost_path(ids: dict[Path, str], src: Path, size: int, q: int, ext: str) -> str:
    return f"/image/{ids[src]}.{ext}?w={size}&h={size}&q={q}"


def thumbor_path(root: Path, src: Path, size: int, q: int, ext: str) -> str:
    return (f"/unsafe/fit-in/{size}x{size}/filters:quality({q}):format({_THUMBOR_FORMAT[ext]})"
            f"/{src.relative_to(root)}")


def median_of(runs: list[dict]) -> dict:
    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float))]
    out = {k: statistics.median(r[k] for r in runs) for k in keys}
    out["runs"] = runs
    return out


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Bench:
    def __init__(self, args):
        self.args = args
        self.threads = os.cpu_count() or 1
        self.cache = HERE / ".cache"
        self.work = Path(tempfile.mkdtemp(prefix="imagehost-bench-"))
        self.photos = photos.prepare(self.cache, log)
        self.wrk = loadgen.ensure_wrk(log)
        self.thumbor_exe = servers.ensure_thumbor(self.cache / "thumbor-venv", log)
        self.started: list[servers.Server] = []
        self.results: dict = {"uncached": [], "cached": {}, "firstview": {}, "overload": {},
                              "upload": {}, "memory": {}}

    def processes(self) -> dict[str, str]:
        """The ``--workers`` setting when the command line gives one; else the default."""
        workers = self.args.workers
        return {} if workers is None else {"server_workers": str(workers)}

    def start(self, server: servers.Server) -> servers.Server:
        self.started.append(server)
        return server

    def close(self) -> None:
        for server in self.started:
            server.stop()
        shutil.rmtree(self.work, ignore_errors=True)

    def upload_all(self, base_url: str, paths: list[Path]) -> dict[Path, str]:
        with ThreadPoolExecutor(4) as pool:
            ids = pool.map(lambda p: servers.upload(base_url, p), paths)
            return dict(zip(paths, ids, strict=True))

    # -- 1. uncached renders -----------------------------------------------------

    def start_imagehost(self) -> None:
        """The imagehost under test, as the README starts it (``--workers N`` only when
        given), with every 4 MP source uploaded over HTTP."""
        self.imagehost = self.start(servers.start_imagehost(self.work / "data", self.work,
                                                            **self.processes()))
        self.results["processes"] = len(self.imagehost.tree())
        self.ids = self.upload_all(self.imagehost.base_url,
                                   sorted(set(self.photos.jpeg + self.photos.mixed)))
        self.wait_for_intermediates(self.photos.png + self.photos.webp)

    def wait_for_intermediates(self, sources: list[Path], timeout: float = 60) -> None:
        """The PNG/WebP rows measure the steady state: every source's intermediate (made
        on the background lane after its upload) exists before any run starts. With
        ``IMAGEHOST_DELIVERY_INTERMEDIATE_SIZE=0`` in the environment (which the server
        inherits) there are none: every variant comes from the original."""
        if os.environ.get("IMAGEHOST_DELIVERY_INTERMEDIATE_SIZE") == "0":
            return  # turned off (a before/after comparison): none will come
        cache = self.work / "data" / "cache"
        files = [cache / self.ids[s][:2] / self.ids[s] / "i1-1536" for s in sources]
        deadline = time.monotonic() + timeout
        while not all(f.exists() for f in files):
            if time.monotonic() > deadline:
                raise RuntimeError(f"intermediates not made within {timeout:.0f} s: {files}")
            time.sleep(0.2)

    def uncached(self) -> None:
        args = self.args
        ih = self.imagehost
        sources = {"jpeg": self.photos.jpeg, "mixed": self.photos.mixed,
                   "png": self.photos.png, "webp": self.photos.webp}
        th = self.start(servers.start_thumbor(self.thumbor_exe, self.photos.root, self.work,
                                              self.threads, result_storage=False))
        scenarios = [("jpeg", "jpg", 2), ("jpeg", "jpg", 8), ("jpeg", "webp", 2),
                     ("jpeg", "webp", 8), ("mixed", "jpg", 8), ("png", "jpg", 2),
                     ("png", "jpg", 8), ("webp", "jpg", 2), ("webp", "jpg", 8)]
        if args.quick:
            scenarios = [s for s in scenarios
                         if s[0] == "jpeg" or (s[0] in ("png", "webp") and s[2] == 8)]
        if args.sources:
            scenarios = [s for s in scenarios if s[0] in args.sources]
        used: dict[str, set] = {"jpg": set(), "webp": set()}
        variants = {(kind, ext): Variants(sources[kind], used[ext],
                                          WIDE_QUALITIES if kind in ("png", "webp")
                                          else QUALITIES)
                    for kind in sources for ext in ("jpg", "webp")}
        per_run = int(args.duration * args.max_rate)
        # Warm up imports, thread pools and disk caches of both servers.
        for kind, ext in variants:
            warm = variants[kind, ext].take(len(sources[kind]))
            self.gets(ih, [imagehost_path(self.ids, s, z, q, ext) for s, z, q in warm], 2, 1)
            self.gets(th, [thumbor_path(self.photos.root, s, z, q, ext) for s, z, q in warm],
                      2, 1)
        for kind, ext, clients in scenarios:
            runs: dict[str, list] = {"imagehost": [], "thumbor": [], "pillow": []}
            for run in range(args.runs):
                chunk = variants[kind, ext].take(per_run)
                log(f"uncached {kind}->{ext} c={clients} run {run + 1}/{args.runs}")
                measure = functools.partial(self.measure_uncached, ih, th, chunk, ext, clients)
                names = list(runs)
                for name in names[run % 3:] + names[:run % 3]:  # rotate who goes first
                    runs[name].append(measure(name))
                result = runs["imagehost"][-1]
                if result["hits"] or result["wrapped"]:
                    raise RuntimeError(f"imagehost uncached run was not all misses: {result}")
            self.results["uncached"].append({
                "sources": kind, "format": ext, "clients": clients,
                **{name: median_of(r) for name, r in runs.items()}})
        if args.profile:
            chunk = variants["jpeg", "jpg"].take(per_run * 2)
            self.profile("uncached", ih, [imagehost_path(self.ids, s, z, q, "jpg")
                                          for s, z, q in chunk], 8)
        th.stop()

    def measure_uncached(self, ih, th, chunk, ext: str, clients: int, name: str) -> dict:
        """One run of one system over ``chunk``, the same variants for every system."""
        duration = self.args.duration
        if name == "imagehost":
            paths = [imagehost_path(self.ids, s, z, q, ext) for s, z, q in chunk]
            return self.gets(ih, paths, clients, duration, count_cache=True)
        if name == "thumbor":
            paths = [thumbor_path(self.photos.root, s, z, q, ext) for s, z, q in chunk]
            return self.gets(th, paths, clients, duration)
        jobs = ((s, z, q, ext) for s, z, q in chunk)
        return inprocess.run_for(duration, self.threads, jobs, inprocess.render)

    def gets(self, server, paths, clients, duration, count_cache=False) -> dict:
        return loadgen.run_gets(self.wrk, server.base_url, paths, connections=clients,
                                duration=duration, count_cache=count_cache)

    def profile(self, part: str, server, paths: list[str], clients: int) -> None:
        """py-spy (GIL holders, all processes of ``server``) during one more run of ``paths``
        at ``clients`` connections: ``results["profile"][part]``."""
        raw = HERE / "results" / f"profile-{part}.txt"
        seconds = max(5, round(self.args.duration))
        log(f"profiling {server.name} ({part}) with py-spy for {seconds}s -> {raw}")
        spy = subprocess.Popen(
            # --subprocesses: the --workers processes too; --gil: only samples holding the
            # GIL, which is what the HTTP and orchestration overhead competes for.
            [str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(server.pid),
             "--subprocesses", "--gil",
             "--duration", str(seconds), "--rate", "200", "--format", "raw", "--output",
             str(raw)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
        self.gets(server, paths, clients, seconds)
        spy.wait(60)
        self.results.setdefault("profile", {})[part] = report.summarise_profile(raw)

    # -- 2. cached hits ------------------------------------------------------------

    def cached(self) -> None:
        args = self.args
        ih = self.imagehost
        sources = self.photos.jpeg
        ih_paths = [imagehost_path(self.ids, s, 512, 80, "jpg") for s in sources]
        th = self.start(servers.start_thumbor(self.thumbor_exe, self.photos.root, self.work,
                                              self.threads, result_storage=True))
        th_paths = [thumbor_path(self.photos.root, s, 512, 80, "jpg") for s in sources]
        static_dir = self.work / "static"
        static_dir.mkdir()
        sizes = []
        for src, path in zip(sources, ih_paths, strict=True):
            body = urllib.request.urlopen(ih.base_url + path).read()  # renders, caches
            (static_dir / f"{self.ids[src]}.jpg").write_bytes(body)
            sizes.append(len(body))
        for path in th_paths:
            urllib.request.urlopen(th.base_url + path).read()  # fills thumbor's result storage
        if not list((self.work / "thumbor-results").rglob("*")):
            raise RuntimeError("thumbor's result storage stayed empty")
        st = self.start(servers.start_static(static_dir, self.work))
        st_paths = [f"/{self.ids[s]}.jpg" for s in sources]
        # One process alone: a second daemon on the same installation, --workers 1.
        one = self.start(servers.start_imagehost(self.work / "data", self.work,
                                                 server_workers="1"))
        runs: dict[str, list] = {"imagehost": [], "imagehost_1": [], "thumbor": [],
                                 "static": []}
        targets = [("imagehost", ih, ih_paths), ("imagehost_1", one, ih_paths),
                   ("thumbor", th, th_paths), ("static", st, st_paths)]
        for _name, server, paths in targets:
            self.gets(server, paths, args.connections, 1)  # warm up
        for run in range(args.runs):
            log(f"cached c={args.connections} run {run + 1}/{args.runs}")
            shift = run % len(targets)
            for name, server, paths in targets[shift:] + targets[:shift]:
                runs[name].append(self.gets(server, paths, args.connections, args.duration,
                                            count_cache=name.startswith("imagehost")))
                if name.startswith("imagehost") and runs[name][-1]["misses"]:
                    raise RuntimeError(f"{name} cached run had misses: {runs[name][-1]}")
        if args.profile:  # the hit path of one process alone: all of it on the reactor
            self.profile("cached", one, ih_paths, args.connections)
        self.results["cached"] = {"connections": args.connections,
                                  "mean_size": statistics.mean(sizes),
                                  **{n: median_of(r) for n, r in runs.items()}}
        th.stop()
        st.stop()
        one.stop()

    # -- first views and overload ---------------------------------------------------

    def firstview(self) -> None:
        """Upload 4 MP JPEGs one by one; one second after each 201, ask for its thumbnail
        (rendered ahead, so it should be a hit) and for a variant of the same size that
        nothing rendered ahead (a miss, for comparison)."""
        ih = self.imagehost
        rows = []
        # The uploads of the set-up queued their own thumbnails: let them finish first.
        eager.drain(self.work / "data", list(self.ids.values()), log)
        for src in self.photos.jpeg[: self.args.firstviews]:
            image_id = servers.upload(ih.base_url, src)
            time.sleep(1.0)
            rows.append({"thumbnail": timed_get(ih, f"/image/{image_id}_thumbnail.jpg"),
                         "other": timed_get(ih, f"/image/{image_id}.jpg?w=300&h=300"
                                                f"&crop=true&q=84")})
        log(f"first views: {sum(r['thumbnail']['cache'] == 'HIT' for r in rows)}/{len(rows)} "
            "thumbnails were hits")
        self.results["firstview"] = {
            "uploads": len(rows),
            "hits": sum(r["thumbnail"]["cache"] == "HIT" for r in rows),
            "thumbnail_ms": statistics.median(r["thumbnail"]["ms"] for r in rows),
            "miss_ms": statistics.median(r["other"]["ms"] for r in rows), "rows": rows}

    def overload(self) -> None:
        """Cached hits (8 connections) alone, then while 32 more connections ask for
        uncached renders of 14 MP sources (every one a distinct variant)."""
        args = self.args
        ih = self.imagehost
        big_ids = self.upload_all(ih.base_url, self.photos.big)
        hit_paths = [imagehost_path(self.ids, s, 512, 80, "jpg") for s in self.photos.jpeg]
        for path in hit_paths:
            urllib.request.urlopen(ih.base_url + path).read()  # renders, caches
        renders = [f"/image/{big_ids[s]}.jpg?w={w}&h={w}&q={q}" for q in QUALITIES
                   for w in range(1000, 600, -1) for s in self.photos.big]
        runs: dict[str, list] = {"alone": [], "under": [], "renders": []}
        for run in range(args.runs):
            log(f"overload run {run + 1}/{args.runs}")
            runs["alone"].append(self.gets(ih, hit_paths, 8, args.duration, count_cache=True))
            chunk = renders[run::args.runs]
            with ThreadPoolExecutor(1) as pool:
                load = pool.submit(self.gets, ih, chunk, 32, args.duration + 2)
                time.sleep(1)  # the renders are under way
                runs["under"].append(self.gets(ih, hit_paths, 8, args.duration,
                                               count_cache=True))
                runs["renders"].append(load.result())
        self.results["overload"] = {name: median_of(r) for name, r in runs.items()}

    # -- 3. uploads --------------------------------------------------------------

    def uploads(self) -> None:
        args = self.args
        files = self.photos.upload
        url = self.imagehost.base_url + "/api/guest/upload"
        runs: dict[str, list] = {"imagehost": [], "inprocess": []}
        loadgen.run_uploads(url, files[:1], clients=1, duration=0.5)  # warm up
        for run in range(args.runs):
            log(f"upload c=4 run {run + 1}/{args.runs}")
            result = loadgen.run_uploads(url, files, clients=4, duration=args.duration)
            if result["errors"]:
                raise RuntimeError(f"upload errors: {result}")
            runs["imagehost"].append(result)
            runs["inprocess"].append(inprocess.accept_uploads(files, args.duration,
                                                              self.threads))
        self.results["upload"] = {
            "clients": 4, "mean_size": statistics.mean(f.stat().st_size for f in files),
            **{n: median_of(r) for n, r in runs.items()}}

    # -- 4. memory -----------------------------------------------------------------

    def memory(self) -> None:
        big, huge = self.photos.big, self.photos.huge
        data = self.work / "data-memory"
        ih = self.start(servers.start_imagehost(data, self.work, **self.processes()))
        ids = self.upload_all(ih.base_url, big + huge)
        # Measured from a fresh start, as thumbor is: the uploads and the first start's
        # migrations are set-up, not part of the burst (a restarted daemon skips Alembic).
        ih.stop()
        ih = self.start(servers.start_imagehost(data, self.work, **self.processes()))
        time.sleep(5)  # the workers are up, and idle since the CPU pools' idle trim (2 s)
        idle = [servers._status_kb(pid, "VmRSS") * 1024 for pid in ih.tree()]
        idle_pss = [servers.smaps_kb(pid, "Pss") * 1024 for pid in ih.tree()]
        th = self.start(servers.start_thumbor(self.thumbor_exe, self.photos.root, self.work,
                                              self.threads, result_storage=False))
        burst = [(src, 512 - n, 80) for n in range(self.args.burst) for src in big]
        log(f"memory: {len(burst)} renders of 14 MP sources, 8 at a time")
        ih_big = self.burst(ih, [imagehost_path(ids, s, z, q, "jpg") for s, z, q in burst])
        th_big = self.burst(th, [thumbor_path(self.photos.root, s, z, q, "jpg")
                                 for s, z, q in burst])
        burst = [(src, 500 - n, 80) for n in range(self.args.burst) for src in huge]
        log(f"memory: {len(burst)} renders of 48 MP sources, 8 at a time")
        ih_huge = self.burst(ih, [imagehost_path(ids, s, z, q, "jpg") for s, z, q in burst])
        # Outputs over half the source's width: the JPEG draft cannot shrink the decode, so
        # every render holds the whole 14 MP source (the burst: thumbor's peak was
        # 298 MB there, against its ~55 MB in the fit-512 burst above).
        burst = [(src, width, 80) for width in WIDE_BURST_WIDTHS for src in big]
        log(f"memory: {len(burst)} wide renders of 14 MP sources, 8 at a time")
        ih_wide = self.burst(ih, [imagehost_path(ids, s, z, q, "jpg") for s, z, q in burst])
        th_wide = self.burst(th, [thumbor_path(self.photos.root, s, z, q, "jpg")
                                  for s, z, q in burst])
        self.results["memory"] = {"imagehost_14mp": ih_big, "thumbor_14mp": th_big,
                                  "imagehost_48mp": ih_huge,
                                  "imagehost_14mp_wide": ih_wide, "thumbor_14mp_wide": th_wide,
                                  "render_threads": self.threads,
                                  "idle_rss_per_process": idle,
                                  "idle_pss_per_process": idle_pss}
        ih.stop()
        th.stop()

    def burst(self, server, paths: list[str]) -> dict:
        """Peak RSS (VmHWM, reset just before) of the process tree while ``paths`` are
        fetched 8 at a time, the peaks of its RSS and PSS (sampled every 20 ms meanwhile),
        and its RSS in the 10 s after."""
        idle, idle_pss = server.tree_rss(), server.tree_pss()
        server.reset_peak()
        started = time.monotonic()

        def fetch(path):
            with urllib.request.urlopen(server.base_url + path, timeout=120) as response:
                return response.status, len(response.read())

        with ThreadPoolExecutor(2) as samplers, ThreadPoolExecutor(8) as clients:
            sampling = threading.Event()
            peak_pss = samplers.submit(sample_peak, server.tree_pss, sampling)
            sampled_rss = samplers.submit(sample_peak, server.tree_rss, sampling)
            answers = list(clients.map(fetch, paths))
            sampling.set()
        if any(status != 200 for status, _ in answers):
            raise RuntimeError(f"{server.name}: failed renders in the memory burst")
        seconds = time.monotonic() - started
        peak = server.tree_peak_rss()
        after, returned = [], None
        done = time.monotonic()
        while time.monotonic() - done < 10:
            after.append(server.tree_rss())
            if returned is None and after[-1] <= idle + 30 * 1e6:
                returned = time.monotonic() - done
            time.sleep(0.25)
        return {"idle_rss": idle, "peak_rss": peak, "renders": len(paths), "seconds": seconds,
                "rss_after": after[0], "rss_10s": after[-1], "return_seconds": returned,
                "idle_pss": idle_pss, "peak_pss": peak_pss.result(),
                "peak_rss_sampled": sampled_rss.result()}


def sample_peak(measure, done: threading.Event, interval: float = 0.02) -> int:
    """The largest value ``measure()`` returned until ``done`` is set."""
    peak = measure()
    while not done.wait(interval):
        peak = max(peak, measure())
    return max(peak, measure())


def timed_get(server, path: str) -> dict:
    """One GET: status, X-Cache and milliseconds."""
    started = time.monotonic()
    with urllib.request.urlopen(server.base_url + path, timeout=60) as response:
        response.read()
        return {"status": response.status, "cache": response.headers.get("X-Cache"),
                "ms": (time.monotonic() - started) * 1000}


def print_extra_tables(results: dict) -> None:
    """The tables of the parts in modules of their own (after the targets table)."""
    console = report.Console(width=140)
    if results.get("delivery"):
        delivery.print_table(results["delivery"], console)
    if results.get("quality"):
        quality.print_table(results["quality"], console)
    if results.get("eager"):
        eager.print_table(results["eager"], console)


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip()
                  for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    mem_kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal")))
    import PIL

    return {"nproc": os.cpu_count(), "cpu": model, "ram_gb": round(mem_kb / 1024 / 1024, 1),
            "python": platform.python_version(), "pillow": PIL.__version__,
            "kernel": platform.release(), "loadavg_at_start": os.getloadavg()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="1 run of 3 s per measurement; JPEG sources, and PNG/WebP "
                             "sources at 8 clients (~3 min)")
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement (median)")
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per run")
    parser.add_argument("--connections", type=int, default=32, help="for cached hits")
    parser.add_argument("--sources", choices=("jpeg", "mixed", "png", "webp"),
                        action="append", help="uncached part: only the rows of these "
                                              "sources (repeatable)")
    parser.add_argument("--workers", type=int, default=None,
                        help="imagehost processes (twistd imagehost --workers N); default: "
                             "the default install, as the README starts it")
    parser.add_argument("--firstviews", type=int, default=5,
                        help="uploads whose first thumbnail view is timed")
    parser.add_argument("--burst", type=int, default=8, help="renders per 14/48 MP source")
    parser.add_argument("--max-rate", type=float, default=220.0,
                        help="distinct variants prepared per second of an uncached run")
    parser.add_argument("--profile", action="store_true",
                        help="also record imagehost with py-spy (needs the bench extra) under "
                             "uncached load and, one process alone, under cached hits")
    parser.add_argument("--only", choices=(*PARTS, *EXTRA_PARTS),
                        action="append", help="run only these parts (repeatable)")
    parser.add_argument("--nice", type=int, default=0,
                        help="renice the benchmark and every server it starts by this much "
                             "(e.g. -5) to lessen noise from other work on the machine")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "latest.json")
    parser.add_argument("--show", type=Path, metavar="JSON",
                        help="only print the tables of an earlier run's JSON")
    args = parser.parse_args(argv)
    if args.show:
        shown = json.loads(args.show.read_text())
        report.print_tables(shown)
        print_extra_tables(shown)
        return 0
    if args.quick:
        args.runs, args.duration, args.burst = 1, 3.0, 4
    if args.nice:
        os.nice(args.nice)  # children (servers, wrk, clients) inherit it
    args.output.parent.mkdir(parents=True, exist_ok=True)
    (HERE / "results").mkdir(exist_ok=True)
    started = time.time()
    info = machine()
    bench = Bench(args)
    parts = args.only or [*PARTS, *EXTRA_PARTS]
    error = None
    try:
        if (set(PARTS[:-1]) | {"delivery", "eager"}) & set(parts):  # (not quality)
            bench.start_imagehost()
        for part in PARTS:
            if part in parts:
                getattr(bench, {"upload": "uploads"}.get(part, part))()
        if "delivery" in parts:  # issue 15's part: .auto and smart crops
            bench.results["delivery"] = delivery.run(bench, log)
        if "quality" in parts:  # issue 18: variants from the intermediate, in-process
            bench.results["quality"] = quality.run(bench.photos, log)
        if "eager" in parts:  # issue 18: eager renders against on-demand ones
            bench.results["eager"] = eager.run(bench, log)
    except Exception as e:  # keep what was measured, say what failed
        error = f"{type(e).__name__}: {e}"
        traceback.print_exc()
    finally:
        bench.close()
    results = {"error": error,"command": " ".join([Path(sys.executable).name, *sys.argv]),
               "machine": info, "seconds": round(time.time() - started),
               "settings": {k: (str(v) if isinstance(v, Path) else v)
                            for k, v in vars(args).items()},
               **bench.results}
    args.output.write_text(json.dumps(results, indent=2, default=str))
    report.print_tables(results)
    print_extra_tables(results)
    log(f"wrote {args.output} ({results['seconds']} s)")
    if error:
        log(f"FAILED: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
