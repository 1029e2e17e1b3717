"""Load generators, always in a process of their own: ``wrk`` for GETs, a Python client for uploads.

``run_gets`` drives wrk with ``paths.lua`` (each connection walks its own slice of a path
list). ``run_uploads`` starts this file as a script: N threads, each with a keep-alive
``http.client`` connection, POSTing multipart bodies for a bounded time.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent


def ensure_wrk(log=print) -> str:
    """Path of ``wrk``, installed with apt-get when missing."""
    found = shutil.which("wrk")
    if found:
        return found
    log("installing wrk with apt-get ...")
    subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True,
                   stdout=subprocess.DEVNULL)
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("wrk is not installed and apt-get could not install it")
    return found


def run_gets(wrk: str, base_url: str, paths: list[str], *, connections: int,
             duration: float, count_cache: bool = False,
             headers: dict[str, str] | None = None) -> dict:
    """GET ``paths`` for ``duration`` seconds over ``connections`` keep-alive connections,
    each request with ``headers``."""
    threads = min(2, connections)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(paths) + "\n")
    try:
        env = {**os.environ, "WRK_COUNT_CACHE": "1" if count_cache else "0"}
        result = subprocess.run(
            [wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s",
             "--timeout", "30s", *(f for k, v in (headers or {}).items()
                                   for f in ("-H", f"{k}: {v}")),
             "-s", str(HERE / "paths.lua"), base_url, "--", f.name,
             str(threads)],
            capture_output=True, text=True, env=env, check=True)
    finally:
        os.unlink(f.name)
    line = next((x for x in result.stdout.splitlines() if x.startswith("JSON:")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result: {result.stdout[-800:]} {result.stderr[-800:]}")
    raw = json.loads(line[5:])
    seconds = raw["duration_us"] / 1e6
    errors = sum(raw[k] for k in ("connect_errors", "read_errors", "write_errors",
                                  "status_errors", "timeouts"))
    return {
        "requests": raw["requests"], "seconds": seconds, "rate": raw["requests"] / seconds,
        "p50_ms": raw["p50_us"] / 1000, "p99_ms": raw["p99_us"] / 1000,
        "mb_per_s": raw["bytes"] / seconds / 1e6, "errors": errors,
        "wrapped": raw["wrapped"], "hits": raw["hits"], "misses": raw["misses"],
    }


def run_uploads(url: str, files: list[Path], *, clients: int, duration: float) -> dict:
    """POST multipart uploads of ``files`` from ``clients`` threads in a separate process."""
    result = subprocess.run(
        [sys.executable, __file__, "upload", url, "--clients", str(clients),
         "--duration", str(duration), *map(str, files)],
        capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


# -- the upload client (runs in its own process) ---------------------------------

def _upload_client(url: str, bodies: list[tuple[str, bytes]], stop_at: float,
                   results: list, offset: int) -> None:
    host_port = url.split("//", 1)[1].split("/", 1)[0]
    path = "/" + url.split("//", 1)[1].split("/", 1)[1]
    connection = http.client.HTTPConnection(host_port, timeout=60)
    i = offset
    while time.monotonic() < stop_at:
        boundary, body = bodies[i % len(bodies)]
        i += 1
        started = time.monotonic()
        connection.request("POST", path, body=body, headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}"})
        response = connection.getresponse()
        response.read()
        results.append((time.monotonic() - started, response.status, len(body)))
    connection.close()


def _upload_main(args) -> None:
    sys.path.insert(0, str(HERE))
    from servers import multipart_body

    bodies = []
    for name in args.files:
        boundary = uuid.uuid4().hex
        bodies.append((boundary, multipart_body(boundary, Path(name).name,
                                                Path(name).read_bytes())))
    results: list = []
    started = time.monotonic()
    stop_at = started + args.duration
    workers = [threading.Thread(target=_upload_client,
                                args=(args.url, bodies, stop_at, results, n))
               for n in range(args.clients)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.monotonic() - started
    ok = [r for r in results if r[1] == 201]
    latencies = sorted(r[0] for r in ok) or [0.0]
    print(json.dumps({
        "requests": len(results), "ok": len(ok), "seconds": elapsed,
        "rate": len(ok) / elapsed, "mb_per_s": sum(r[2] for r in ok) / elapsed / 1e6,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "errors": len(results) - len(ok),
    }))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("upload")
    up.add_argument("url")
    up.add_argument("files", nargs="+")
    up.add_argument("--clients", type=int, default=4)
    up.add_argument("--duration", type=float, default=8)
    _upload_main(parser.parse_args())
