"""Bulk import benchmark: ``imagehost import`` of a real image folder, --jobs 1 vs --jobs 2.

The folder is Debian's ``gnome-backgrounds`` (16 WebP wallpapers of 4096x4096 and 9
SVGs, which are rejected as a disallowed type). If /tmp/gnome-bg is missing it is
fetched with ``apt-get download gnome-backgrounds`` and unpacked with ``dpkg -x``.

Each run is the real command in its own process, on a fresh data directory (so no
file is a duplicate), exactly as an operator runs it. The fixed cost of starting the
command (Python, imports, opening the installation) is measured by importing an empty
folder and reported separately; "net" rates leave it out.

``--jpeg`` also runs the same wallpapers re-encoded as JPEG (quality 90), for contrast:
how well --jobs scales depends on whether Pillow's decoder for the format releases
the GIL.

    /work/venv/bin/python bench/import_bench.py [--folder DIR] [--runs 3] [--jobs 1 2] [--jpeg]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GNOME_BG = Path("/tmp/gnome-bg")
GNOME_FOLDER = GNOME_BG / "usr" / "share" / "backgrounds"

# Runs the checkout's cli/ under its installed name, imagehost_cli (see setup.cfg).
_BOOT = f"""
import importlib.util, sys
sys.path.insert(0, {str(REPO)!r})
spec = importlib.util.spec_from_file_location(
    "imagehost_cli", {str(REPO / "cli" / "__init__.py")!r},
    submodule_search_locations=[{str(REPO / "cli")!r}])
module = importlib.util.module_from_spec(spec)
sys.modules["imagehost_cli"] = module
spec.loader.exec_module(module)
from imagehost_cli.main import main
main()
"""


def ensure_gnome_backgrounds() -> Path:
    """The wallpaper folder, downloaded and unpacked on first use."""
    if not GNOME_FOLDER.is_dir():
        subprocess.run(["apt-get", "download", "gnome-backgrounds"], cwd="/tmp", check=True)
        package = sorted(glob.glob("/tmp/gnome-backgrounds_*.deb"))[-1]
        subprocess.run(["dpkg", "-x", package, str(GNOME_BG)], check=True)
    return GNOME_FOLDER


def as_jpeg(folder: Path) -> Path:
    """The folder's WebP images re-encoded as JPEG (once, next to the originals)."""
    from PIL import Image

    target = Path(f"{folder}-jpeg")
    target.mkdir(exist_ok=True)
    for source in sorted(folder.rglob("*.webp")):
        jpeg = target / f"{source.stem}.jpg"
        if not jpeg.exists():
            with Image.open(source) as image:
                image.convert("RGB").save(jpeg, "JPEG", quality=90)
    return target


def imagehost(*args: str) -> tuple[float, str]:
    """Run the CLI; its wall-clock seconds and stdout."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _BOOT, *args], capture_output=True, text=True,
                          cwd=REPO)
    elapsed = time.perf_counter() - started
    if done.returncode not in (0, 3):  # 3: an import that rejected some files
        raise SystemExit(f"imagehost {' '.join(args)} failed:\n{done.stderr}")
    return elapsed, done.stdout


def fresh_installation(root: Path) -> list[str]:
    data = Path(tempfile.mkdtemp(prefix="import-bench-", dir=root))
    options = ["--data-dir", str(data)]
    imagehost(*options, "user", "create", "bench", "--email", "bench@example.com",
              "--password", "bench-password")
    return options


def import_once(root: Path, folder: Path, empty: Path, jobs: int) -> tuple[float, float, dict]:
    """One import on a fresh installation, right after an empty import on the same one
    (the command's start-up cost under the same machine load); both wall times."""
    options = fresh_installation(root)
    start_up, _ = imagehost(*options, "--json", "import", str(empty), "--user", "bench")
    elapsed, out = imagehost(*options, "--json", "import", str(folder), "--user", "bench",
                             "--recursive", "--jobs", str(jobs))
    return elapsed, start_up, json.loads(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, default=None,
                        help="image folder (default: gnome-backgrounds)")
    parser.add_argument("--runs", type=int, default=3, help="runs per setting (median)")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--jpeg", action="store_true",
                        help="also benchmark the WebP images re-encoded as JPEG")
    args = parser.parse_args()
    folder = args.folder or ensure_gnome_backgrounds()
    benchmark(folder, args.runs, args.jobs)
    if args.jpeg:
        print()
        benchmark(as_jpeg(folder), args.runs, args.jobs)


def benchmark(folder: Path, runs: int, jobs_settings: list[int]) -> None:
    """Time the import of ``folder`` for each --jobs setting and print a table."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    load_before = os.getloadavg()[0]

    results = {}
    with tempfile.TemporaryDirectory(prefix="import-bench-") as tmp:
        root = Path(tmp)
        empty = root / "empty"
        empty.mkdir()
        for _ in range(runs):  # interleaved, so a load spike hits both settings alike
            for jobs in jobs_settings:
                results.setdefault(jobs, []).append(import_once(root, folder, empty, jobs))

    print(f"folder: {folder} ({len(files)} files, {size / 1e6:.1f} MB); "
          f"CPUs: {os.cpu_count()}; median of {runs} runs; "
          f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
    summary = {}
    for jobs, timed in results.items():
        wall = statistics.median(t for t, _, _ in timed)
        net = statistics.median(t - s for t, s, _ in timed)
        summary[jobs] = (wall, net, statistics.median(s for _, s, _ in timed), timed[0][2])

    def rate(amount: float, seconds: float) -> str:
        return f"{amount / seconds:.2f}" if seconds > 0 else "n/a"

    rows = [
        ("imported / duplicates / rejected",
         [f"{r['imported']} / {len(r['duplicates'])} / {len(r['rejected'])}"
          for *_, r in summary.values()]),
        ("wall time (s)", [f"{w:.2f}" for w, *_ in summary.values()]),
        ("start-up: empty import (s)", [f"{s:.2f}" for _, _, s, _ in summary.values()]),
        ("images/s (wall)", [rate(r["imported"], w) for w, _, _, r in summary.values()]),
        ("images/s (net of start-up)",
         [rate(r["imported"], n) for _, n, _, r in summary.values()]),
        ("MB/s read (net)", [rate(size / 1e6, n) for _, n, _, _ in summary.values()]),
    ]
    columns = [f"--jobs {jobs}" for jobs in summary]
    width = max(len(label) for label, _ in rows)
    print(f"{'':<{width}}  " + "  ".join(f"{c:>12}" for c in columns))
    for label, cells in rows:
        print(f"{label:<{width}}  " + "  ".join(f"{c:>12}" for c in cells))
    first = next(iter(summary.values()))[3]
    for rejected in first["rejected"][:2]:
        print(f"rejected e.g. {Path(rejected['path']).name}: {rejected['reason']}")


if __name__ == "__main__":
    main()
