"""The in-process baselines: no HTTP, no reactor, just Pillow (or imagehost's own
upload pipeline) in a ThreadPoolExecutor with as many threads as the server uses."""

from __future__ import annotations

import io
import itertools
import statistics
import tempfile
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

from PIL import Image

# The same encoder effort as imagehost, so the comparison is of the same work.
from imagehost.imaging.render import WEBP_METHOD

_FORMATS = {"jpg": "JPEG", "webp": "WEBP"}


def render(path: Path, size: int, quality: int, ext: str) -> bytes:
    """The plain Pillow pipeline: draft, reduce + LANCZOS, encode (thumbor's encoder options)."""
    with open(path, "rb") as f, Image.open(f) as im:
        scale = min(size / im.width, size / im.height, 1.0)
        out = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
        im.draft("RGB", out)
        small = im.resize(out, Image.Resampling.LANCZOS, reducing_gap=2.0)
    if small.mode not in ("RGB", "L"):
        small = small.convert("RGB")
    buffer = io.BytesIO()
    if ext == "jpg":
        small.save(buffer, "JPEG", quality=quality, optimize=True)
    else:
        small.save(buffer, "WEBP", quality=quality, method=WEBP_METHOD)
    return buffer.getvalue()


def run_for(duration: float, threads: int, jobs, fn) -> dict:
    """Keep ``threads`` jobs in flight for ``duration`` seconds, or until ``jobs`` runs
    out (then the rate is over the time the jobs took); rate and latencies."""
    latencies: list[float] = []
    produced = 0
    jobs = iter(jobs)
    ran_out = False

    def submit(pool, running) -> None:
        nonlocal ran_out
        job = next(jobs, None)
        if job is None:
            ran_out = True
        else:
            running.add(pool.submit(timed, job))

    def timed(job):
        started = time.perf_counter()
        result = fn(*job)
        return time.perf_counter() - started, result

    started = time.perf_counter()
    stop_at = started + duration
    with ThreadPoolExecutor(threads) as pool:
        running: set = set()
        for _ in range(threads):
            submit(pool, running)
        while running:
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                latency, result = future.result()
                latencies.append(latency)
                produced += len(result) if isinstance(result, bytes) else 0
                if time.perf_counter() < stop_at:
                    submit(pool, running)
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies), "seconds": elapsed, "rate": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "out_bytes": produced / max(1, len(latencies)),
        "ran_out": ran_out,
    }


def accept_uploads(files: list[Path], duration: float, threads: int) -> dict:
    """imagehost's own ``Images.accept`` (validate, store, hash) on a temp data dir.

    The object graph comes from ``assembly.build_imagehost``, as in the daemon; no pool
    is started and no request is made, so this is the upload work without HTTP.
    """
    from twisted.internet import reactor

    from imagehost.assembly import build_imagehost
    from imagehost.config import load_config
    from imagehost.service.runtime_settings import Settings

    datas = [f.read_bytes() for f in files]
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(environ={}, overrides={("server", "data_dir"): tmp})
        imagehost = build_imagehost(config, reactor, b"bench-secret")
        imagehost.storage.prepare()
        settings = Settings(imagehost.settings.defaults())

        def accept(data: bytes) -> bytes:
            checked = imagehost.images.check(data, settings)
            imagehost.storage.put_original(str(uuid.uuid4()), checked.info.ext, data)
            return b""

        jobs = ((datas[n % len(datas)],) for n in itertools.count())
        result = run_for(duration, threads, jobs, accept)
    size = sum(map(len, datas)) / len(datas)
    result["mb_per_s"] = result["rate"] * size / 1e6
    return result
