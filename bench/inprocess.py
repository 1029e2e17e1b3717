"""The in-process baselines: no HTTP, no reactor, just Pillow (or imagehost's own
upload pipeline) in a ThreadPoolExecutor with as many threads as the server uses."""

from __future__ import annotations

import hashlib
import io
import itertools
import statistics
import tempfile
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

from PIL import Image

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
        small.save(buffer, "WEBP", quality=quality, method=4)
    return buffer.getvalue()


def run_for(duration: float, threads: int, jobs, fn) -> dict:
    """Keep ``threads`` jobs in flight for ``duration`` seconds; rate and latencies."""
    latencies: list[float] = []
    produced = 0
    jobs = iter(jobs)

    def timed(job):
        started = time.perf_counter()
        result = fn(*job)
        return time.perf_counter() - started, result

    started = time.perf_counter()
    stop_at = started + duration
    with ThreadPoolExecutor(threads) as pool:
        running = {pool.submit(timed, next(jobs)) for _ in range(threads)}
        while running:
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                latency, result = future.result()
                latencies.append(latency)
                produced += len(result) if isinstance(result, bytes) else 0
                if time.perf_counter() < stop_at:
                    running.add(pool.submit(timed, next(jobs)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies), "seconds": elapsed, "rate": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "out_bytes": produced / max(1, len(latencies)),
    }


def accept_uploads(files: list[Path], duration: float, threads: int) -> dict:
    """What ``Images.accept`` does for an upload (validate, store, hash), on a temp data dir."""
    from imagehost.config import load_config
    from imagehost.service.images import validate_image
    from imagehost.service.runtime_settings import RuntimeSettings, Settings
    from imagehost.storage import LocalStorage
    from imagehost.tap import source_limits

    config = load_config(environ={})
    settings = Settings(RuntimeSettings(config, db=None).defaults())
    limits = source_limits(config)
    datas = [f.read_bytes() for f in files]
    with tempfile.TemporaryDirectory() as tmp:
        storage = LocalStorage(Path(tmp))
        storage.prepare()

        def accept(data: bytes) -> bytes:
            info = validate_image(data, settings, limits)
            storage.put_original(str(uuid.uuid4()), info.ext, data)
            hashlib.sha256(data).hexdigest()
            return b""

        jobs = ((datas[n % len(datas)],) for n in itertools.count())
        result = run_for(duration, threads, jobs, accept)
    size = sum(map(len, datas)) / len(datas)
    result["mb_per_s"] = result["rate"] * size / 1e6
    return result
