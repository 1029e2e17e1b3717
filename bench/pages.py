"""Web page vs JSON API: the ``/images`` page of 50 images against
``GET /api/images/history/1?limit=50``, by the daemon's own server time.

Starts a real twistd daemon on a fresh data directory, uploads 50 images through the
API, logs in through the login form (a browser session), then requests the two URLs
alternately over one keep-alive connection each. Server time is what the daemon's
access log records per request (from the request head to the end of the response),
so client and loopback costs are left out. Prints the median and 95th percentile of
each and the ratio of medians (target: the page at most 1.5x the API).

    python bench/pages.py [--runs 300]
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parent.parent
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
ADMIN = ("bench", "bench-password")
BOUNDARY = "benchboundary"
_LOG_LINE = re.compile(r'"GET (?P<uri>\S+)" (?P<code>\d+) \d+ (?P<ms>[\d.]+)ms')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_daemon(folder: Path, port: int) -> subprocess.Popen:
    ini = folder / "imagehost.ini"
    ini.write_text(f"[server]\naccess_log = {folder / 'access.log'}\n"
                   f"[limits]\nlogins_per_minute_per_ip = 1000\n")
    env = dict(os.environ, PYTHONPATH=str(REPO), IMAGEHOST_ADMIN_USERNAME=ADMIN[0],
               IMAGEHOST_ADMIN_PASSWORD=ADMIN[1])
    daemon = subprocess.Popen(
        TWISTD + ["-n", "--pidfile=", "imagehost", "--listen", f"tcp:{port}:interface=127.0.0.1",
                  "--data-dir", str(folder / "data"), "--config", str(ini)],
        cwd=folder, env=env, stdout=(folder / "twistd.log").open("wb"),
        stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return daemon
        except OSError:
            time.sleep(0.2)
    daemon.kill()
    raise SystemExit("the daemon did not start; see twistd.log")


def photo(n: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (640, 480), (n * 5 % 256, 90, 200 - n)).save(buffer, "JPEG")
    return buffer.getvalue()


def multipart(data: bytes, description: str, public: bool = False) -> bytes:
    visibility = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"isPublic\"\r\n\r\n"
                  "true\r\n") if public else ""
    return (f"{visibility}--{BOUNDARY}\r\n"
            f"Content-Disposition: form-data; name=\"description\"\r\n\r\n"
            f"{description}\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"image\"; "
            f"filename=\"p.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n").encode() + data + (
            f"\r\n--{BOUNDARY}--\r\n").encode()


def prepare(port: int) -> tuple[str, str]:
    """50 uploads; returns (bearer token, session cookie)."""
    token, session = prepare_session(port)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for n in range(50):
        connection.request("POST", "/api/upload", multipart(photo(n), f"photo {n}"), {
            "Authorization": f"Bearer {token}",
            "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
        assert connection.getresponse().read()
    return token, session


def prepare_session(port: int) -> tuple[str, str]:
    """A bearer token and a logged-in browser session of the bench's administrator."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("POST", "/api/auth/login", json.dumps(
        {"username": ADMIN[0], "password": ADMIN[1]}), {"Content-Type": "application/json"})
    token = json.loads(connection.getresponse().read())["access_token"]
    connection.request("GET", "/login")
    response = connection.getresponse()
    cookie = response.getheader("Set-Cookie").split(";")[0]
    csrf = re.search(r'name="csrf" value="([^"]+)"', response.read().decode()).group(1)
    form = urllib.parse.urlencode({"csrf": csrf, "username": ADMIN[0], "password": ADMIN[1]})
    connection.request("POST", "/login", form, {
        "Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"})
    response = connection.getresponse()
    response.read()
    session = [c for c in response.headers.get_all("Set-Cookie")
               if c.startswith("imagehost_session=")][0].split(";")[0]
    return token, session


def measure(port: int, token: str, session: str, runs: int) -> None:
    targets = {"/images": {"Cookie": session},
               "/api/images/history/1?limit=50": {"Authorization": f"Bearer {token}"}}
    connections = {path: http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                   for path in targets}
    for _ in range(runs):
        for path, headers in targets.items():
            connections[path].request("GET", path, headers=headers)
            response = connections[path].getresponse()
            body = response.read()
            assert response.status == 200 and len(body) > 1000, (path, response.status)


def server_times(log: Path, uris: list[str] | None = None) -> dict[str, list[float]]:
    """Server times of the 200 answers to each of ``uris``, from the access log."""
    uris = uris or ["/images", "/api/images/history/1?limit=50"]
    times: dict[str, list[float]] = {uri: [] for uri in uris}
    for line in log.read_text().splitlines():
        found = _LOG_LINE.search(line)
        if found and found["uri"] in times and found["code"] == "200":
            times[found["uri"]].append(float(found["ms"]))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="imagehost-pages-bench-") as tmp:
        folder, port = Path(tmp), free_port()
        daemon = start_daemon(folder, port)
        try:
            token, session = prepare(port)
            measure(port, token, session, 20)  # warm up (templates, caches)
            time.sleep(1.5)  # the access log is flushed once a second
            (folder / "access.log").write_text("")
            measure(port, token, session, args.runs)
            time.sleep(1.5)
        finally:
            daemon.terminate()
            daemon.wait(timeout=30)
        times = server_times(folder / "access.log")
    print(f"server time per request, {args.runs} requests each, 50 images per response")
    print(f"{'request':34} {'median ms':>10} {'p95 ms':>8}")
    medians = {}
    for path, values in times.items():
        values.sort()
        medians[path] = statistics.median(values)
        print(f"{path:34} {medians[path]:10.2f} {values[int(len(values) * 0.95) - 1]:8.2f}")
    ratio = medians["/images"] / medians["/api/images/history/1?limit=50"]
    print(f"page / API (medians): {ratio:.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    main()
