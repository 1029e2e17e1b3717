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
    if done.returncode != 0:
        raise SystemExit(f"imagehost {' '.join(args)} failed:\n{done.stderr}")
    return elapsed, done.stdout


def fresh_installation(root: Path) -> list[str]:
    data = Path(tempfile.mkdtemp(prefix="import-bench-", dir=root))
    options = ["--data-dir", str(data)]
    imagehost(*options, "user", "create", "bench", "--email", "bench@example.com",
              "--password", "bench-password")
    return options


def import_once(root: Path, folder: Path, jobs: int) -> tuple[float, dict]:
    options = fresh_installation(root)
    elapsed, out = imagehost(*options, "--json", "import", str(folder), "--user", "bench",
                             "--recursive", "--jobs", str(jobs))
    return elapsed, json.loads(out)


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

    with tempfile.TemporaryDirectory(prefix="import-bench-") as tmp:
        root = Path(tmp)
        empty = root / "empty"
        empty.mkdir()
        overheads = []
        for _ in range(runs):
            options = fresh_installation(root)
            overheads.append(imagehost(*options, "--json", "import", str(empty),
                                       "--user", "bench")[0])
        overhead = statistics.median(overheads)

        results = {}
        for jobs in jobs_settings:
            timed = [import_once(root, folder, jobs) for _ in range(runs)]
            results[jobs] = (statistics.median(t for t, _ in timed), timed[0][1])

    print(f"folder: {folder} ({len(files)} files, {size / 1e6:.1f} MB); "
          f"CPUs: {os.cpu_count()}; median of {runs} runs; "
          f"command start-up (empty import): {overhead:.2f} s")
    columns = [f"--jobs {jobs}" for jobs in jobs_settings]
    rows = [
        ("imported / duplicates / rejected",
         [f"{r['imported']} / {r['duplicates']} / {len(r['rejected'])}"
          for _, r in results.values()]),
        ("wall time (s)", [f"{t:.2f}" for t, _ in results.values()]),
        ("images/s (wall)", [f"{r['imported'] / t:.2f}" for t, r in results.values()]),
        ("images/s (net of start-up)",
         [f"{r['imported'] / max(t - overhead, 1e-9):.2f}" for t, r in results.values()]),
        ("MB/s read (net)", [f"{size / 1e6 / max(t - overhead, 1e-9):.1f}"
                             for t, _ in results.values()]),
    ]
    width = max(len(label) for label, _ in rows)
    print(f"{'':<{width}}  " + "  ".join(f"{c:>12}" for c in columns))
    for label, cells in rows:
        print(f"{label:<{width}}  " + "  ".join(f"{c:>12}" for c in cells))
    first, *_ = results.values()
    for rejected in first[1]["rejected"][:3]:
        print(f"rejected e.g. {Path(rejected['path']).name}: {rejected['reason']}")


if __name__ == "__main__":
    main()
