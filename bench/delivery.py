"""Part ``delivery`` of bench/run.py: ``.auto`` and smart crops, beside centre crops and
thumbor 7 (its ``/smart/`` and ``AUTO_WEBP``).

    python bench/run.py --only delivery [--quick]

thumbor's ``/smart/`` runs its detectors (faces, then features) only with OpenCV, which
is thumbor's own ``opencv`` extra; this part installs it into the benchmark's thumbor
venv. Where that fails the table says so, since thumbor's smart crop is then a centre
crop. Every request of a run is a distinct variant (no cache hits), as in part 1.
"""

from __future__ import annotations

import statistics
import subprocess
import time
import urllib.request
from pathlib import Path

import loadgen
import servers

SIZES = range(420, 339, -1)
QUALITIES = range(70, 91)
CLIENTS = 4
THUMBOR_OPENCV = ["opencv-python-headless>=4.9.0.80,<5", "numpy>=1.26.3,<3"]
THUMBOR_DETECTORS = ["thumbor.detectors.face_detector", "thumbor.detectors.feature_detector"]
WEBP = {"Accept": "image/webp,*/*"}
#: name -> (imagehost path, thumbor path, headers); {id}, {src}, {s}, {q} filled per variant.
#: ``.auto`` with WebP accepted and the fixed ``.webp`` are the same variants in imagehost,
#: so those two rows take their variants from one sequence (never a cache hit).
ROWS = {
    "centre crop -> jpg": ("/image/{id}.jpg?w={s}&h={s}&crop=true&q={q}",
                           "/unsafe/{s}x{s}/filters:quality({q}):format(jpeg)/{src}", {}),
    "smart crop -> jpg": ("/image/{id}.jpg?w={s}&h={s}&crop=smart&q={q}",
                          "/unsafe/{s}x{s}/smart/filters:quality({q}):format(jpeg)/{src}", {}),
    ".auto fit (Accept webp)": ("/image/{id}.auto?w={s}&h={s}&q={q}",
                                "/unsafe/fit-in/{s}x{s}/filters:quality({q})/{src}", WEBP),
    "webp fit (fixed)": ("/image/{id}.webp?w={s}&h={s}&q={q}",
                         "/unsafe/fit-in/{s}x{s}/filters:quality({q}):format(webp)/{src}", {}),
}


def thumbor_with_opencv(executable: Path, log) -> bool:
    """Install thumbor's opencv extra into its venv (once); False if that fails."""
    python = executable.with_name("python")
    if subprocess.run([str(python), "-c", "import cv2"], capture_output=True).returncode == 0:
        return True
    log("installing opencv into thumbor's venv (its [opencv] extra, one time) ...")
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", *THUMBOR_OPENCV],
                          capture_output=True)
    return done.returncode == 0


def run(bench, log) -> dict:
    """Measure every row on imagehost and thumbor; the results for ``print_table``."""
    args = bench.args
    detectors = thumbor_with_opencv(bench.thumbor_exe, log)
    extra = ("AUTO_WEBP = True", f"DETECTORS = {THUMBOR_DETECTORS if detectors else []!r}")
    th = bench.start(servers.start_thumbor(bench.thumbor_exe, bench.photos.root, bench.work,
                                           bench.threads, result_storage=False, extra=extra,
                                           name="delivery"))
    sources = bench.photos.jpeg
    sequences: dict[str, list] = {}
    per_run = int(args.duration * args.max_rate)
    rows = []
    for name, (ih_pattern, th_pattern, headers) in ROWS.items():
        variants = sequences.setdefault(ih_pattern.split("?")[1], [
            (src, size, q) for q in QUALITIES for size in SIZES for src in sources])
        runs: dict[str, list] = {"imagehost": [], "thumbor": []}
        # One request each first (not measured): thumbor loads its detectors' models on
        # the first smart crop, imagehost its code paths.
        (src, s, q), variants[:] = variants[0], variants[1:]
        for base, path in ((bench.imagehost.base_url, ih_pattern.format(id=bench.ids[src], s=s,
                                                                        q=q)),
                           (th.base_url, th_pattern.format(
                               src=src.relative_to(bench.photos.root), s=s, q=q))):
            _warm_up(base + path, headers, log)
        for run in range(args.runs):
            log(f"delivery {name} c={CLIENTS} run {run + 1}/{args.runs}")
            if len(variants) < per_run:
                raise RuntimeError("out of distinct variants: lower --duration")
            chunk, variants[:] = variants[:per_run], variants[per_run:]
            ih_paths = [ih_pattern.format(id=bench.ids[src], s=s, q=q) for src, s, q in chunk]
            th_paths = [th_pattern.format(src=src.relative_to(bench.photos.root), s=s, q=q)
                        for src, s, q in chunk]
            runs["imagehost"].append(loadgen.run_gets(
                bench.wrk, bench.imagehost.base_url, ih_paths, connections=CLIENTS,
                duration=args.duration, count_cache=True, headers=headers))
            runs["thumbor"].append(loadgen.run_gets(
                bench.wrk, th.base_url, th_paths, connections=CLIENTS,
                duration=args.duration, headers=headers))
            if runs["imagehost"][-1]["hits"] or runs["imagehost"][-1]["wrapped"]:
                raise RuntimeError(f"imagehost delivery run was not all misses: "
                                   f"{runs['imagehost'][-1]}")
        rows.append({"variant": name, "clients": CLIENTS,
                     **{system: _median(r) for system, r in runs.items()}})
    th.stop()
    return {"rows": rows, "thumbor_smart": ("face + feature detectors (OpenCV)" if detectors
                                            else "no OpenCV: thumbor's smart is a centre crop")}


def _warm_up(url: str, headers: dict[str, str], log) -> None:
    started = time.monotonic()
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=300) as response:
        response.read()
    log(f"warm-up {url.split('/', 3)[3][:60]}: {time.monotonic() - started:.2f} s")


def _median(runs: list[dict]) -> dict:
    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float))]
    return {k: statistics.median(r[k] for r in runs) for k in keys} | {"runs": runs}


def print_table(results: dict, console) -> None:
    """The delivery table (part ``delivery``)."""
    from rich.table import Table

    table = Table(title=f"Delivery: .auto and smart crops, 4 MP JPEG sources, ~340-420 px, "
                        f"every request a new variant (thumbor smart: {results['thumbor_smart']})")
    for column in ("variant", "clients", "imagehost img/s", "p50/p99 ms", "thumbor img/s",
                   "p50/p99 ms", "ih/thumbor"):
        table.add_column(column, justify="right")
    for row in results["rows"]:
        ih, th = row["imagehost"], row["thumbor"]
        ratio = f"{ih['rate'] / th['rate']:.2f}" if th["rate"] else "n/a"
        th_latency = (f"{th['p50_ms']:.0f}/{th['p99_ms']:.0f}" if th["requests"]
                      else "none in time")
        table.add_row(row["variant"], str(row["clients"]), f"{ih['rate']:.1f}",
                      f"{ih['p50_ms']:.0f}/{ih['p99_ms']:.0f}", f"{th['rate']:.1f}",
                      th_latency, ratio)
    console.print(table)
