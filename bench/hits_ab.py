"""Cached hits of two or more checkouts, A/B: one daemon per checkout, all running at once,
measured in turn (the order rotated every round), so that the machine's other load falls
on every checkout alike.

    .venv/bin/python bench/hits_ab.py old=/work/wt-old new=. [--rounds 8] [--duration 3]

Each checkout gets its own data directory with the 4 MP JPEG sources uploaded and their
512 px variant rendered once, as in ``run.py``'s cached part (``--workers 1`` by
default: one process, where the hit path's cost shows undiluted). Prints every round's
req/s and CPU time per request (the daemon's user + system time over its requests: on a
machine shared with other work, far steadier than req/s), their medians per checkout and
the medians of the per-round ratios to the first checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import loadgen  # noqa: E402
import photos  # noqa: E402
import report  # noqa: E402
import servers  # noqa: E402
from run import imagehost_path, log  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trees", nargs="+", metavar="NAME=CHECKOUT")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", default="1", help="imagehost processes per daemon")
    parser.add_argument("--output", type=Path, help="also write the runs as JSON here")
    parser.add_argument("--profile", type=float, default=0, metavar="SECONDS",
                        help="then record each daemon this long with py-spy (the bench "
                             "extra) under the same load and compare where the time goes")
    args = parser.parse_args(argv)
    trees = dict(spec.split("=", 1) for spec in args.trees)
    sources = photos.prepare(HERE / ".cache", log).jpeg
    wrk = loadgen.ensure_wrk(log)
    work = Path(tempfile.mkdtemp(prefix="imagehost-hits-ab-"))
    started, paths = {}, {}
    try:
        for name, tree in trees.items():
            logs = work / name
            logs.mkdir()
            server = servers.start_imagehost(logs / "data", logs, repo=Path(tree).resolve(),
                                             server_workers=args.workers)
            started[name] = server
            ids = {src: servers.upload(server.base_url, src) for src in sources}
            paths[name] = [imagehost_path(ids, src, 512, 80, "jpg") for src in sources]
            for path in paths[name]:
                urllib.request.urlopen(server.base_url + path).read()  # renders, caches
            loadgen.run_gets(wrk, server.base_url, paths[name],
                             connections=args.connections, duration=1)  # warm up
        rates: dict[str, list[float]] = {name: [] for name in trees}
        cpu: dict[str, list[float]] = {name: [] for name in trees}  # us per request
        names = list(trees)
        for run in range(args.rounds):
            shift = run % len(names)
            for name in names[shift:] + names[:shift]:
                before = cpu_seconds(started[name])
                result = loadgen.run_gets(wrk, started[name].base_url, paths[name],
                                          connections=args.connections,
                                          duration=args.duration, count_cache=True)
                used = cpu_seconds(started[name]) - before
                if result["misses"] or result["errors"]:
                    raise RuntimeError(f"{name}: not all hits: {result}")
                rates[name].append(result["rate"])
                cpu[name].append(1e6 * used / result["requests"])
            log(f"round {run + 1}: " + "  ".join(
                f"{n}={rates[n][-1]:.0f} req/s {cpu[n][-1]:.1f} us" for n in names))
        profiles = {name: profile(wrk, started[name], paths[name], args, work)
                    for name in names} if args.profile else {}
    finally:
        for server in started.values():
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    first = names[0]
    for name in names:
        ratios = [a / b for a, b in zip(rates[name], rates[first], strict=True)]
        cpu_ratios = [a / b for a, b in zip(cpu[name], cpu[first], strict=True)]
        print(f"{name:>12}: median {statistics.median(rates[name]):7.0f} req/s, "
              f"ratio to {first} {statistics.median(ratios):.3f}; "
              f"median CPU {statistics.median(cpu[name]):6.1f} us/request, "
              f"ratio to {first} {statistics.median(cpu_ratios):.3f}")
    if profiles:
        print_profiles(profiles)
    if args.output:
        args.output.write_text(json.dumps({"trees": trees, "rates": rates, "cpu_us": cpu,
                                           "time": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                 time.gmtime())}))
    return 0


def cpu_seconds(server: servers.Server) -> float:
    """User and system CPU time used so far by the daemon's processes (``/proc``)."""
    ticks = 0
    for pid in server.tree():
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def profile(wrk: str, server: servers.Server, paths: list[str], args, work: Path) -> dict:
    """py-spy samples (GIL holders) of one daemon under ``args.profile`` seconds of hits."""
    raw = work / f"profile-{server.port}.txt"
    spy = subprocess.Popen(
        [str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(server.pid),
         "--subprocesses", "--gil", "--duration", str(round(args.profile)), "--rate", "250",
         "--format", "raw", "--output", str(raw)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    loadgen.run_gets(wrk, server.base_url, paths, connections=args.connections,
                     duration=args.profile)
    spy.wait(60)
    return report.summarise_profile(raw, top=40)


def print_profiles(profiles: dict[str, dict]) -> None:
    """Inclusive sample shares side by side, the functions of any checkout's top 40."""
    names = list(profiles)
    shares = {name: dict(p["inclusive"]) for name, p in profiles.items()}
    functions = sorted({f for s in shares.values() for f in s},
                       key=lambda f: -max(s.get(f, 0) for s in shares.values()))
    print("inclusive % of samples: " + "  ".join(
        f"{n} ({profiles[n]['samples']} samples)" for n in names))
    for function in functions:
        print("  ".join(f"{shares[n].get(function, 0):6.1f}" for n in names), function)


if __name__ == "__main__":
    sys.exit(main())
