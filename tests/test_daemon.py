"""The real twistd daemon: clean start on an empty data directory, clean SIGTERM, and
in-flight requests finishing during shutdown."""

import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest_twisted
from twisted.internet.defer import Deferred

from imagehost.db import create_engine
from imagehost.db.schema import metadata
from tests.conftest import image_bytes

REPO = Path(__file__).resolve().parent.parent
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_health(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} never became healthy")


def stop_cleanly(daemon: subprocess.Popen, log: Path) -> str:
    """SIGTERM the daemon; assert it stopped cleanly; return its log."""
    daemon.send_signal(signal.SIGTERM)
    code = daemon.wait(timeout=30)
    text = log.read_text()
    # twistd re-raises the signal it stopped on, so a clean SIGTERM exit is -15.
    assert code in (0, -signal.SIGTERM), text
    assert "Traceback" not in text, text
    return text


def test_twistd_starts_clean_and_stops_on_sigterm(tmp_path):
    data_dir = tmp_path / "data"
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO), IMAGEHOST_ADMIN_USERNAME="root",
               IMAGEHOST_ADMIN_PASSWORD="root-password", IMAGEHOST_ADMIN_EMAIL="r@example.com")
    log = tmp_path / "twistd.log"
    with log.open("wb") as out:
        daemon = subprocess.Popen(
            TWISTD + ["-n", "--pidfile=", "imagehost", "--listen",
                      f"tcp:{port}:interface=127.0.0.1", "--data-dir", str(data_dir)],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for_health(f"http://127.0.0.1:{port}")
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/auth/login", method="POST",
                data=b'{"username": "root", "password": "root-password"}')
            with urllib.request.urlopen(request, timeout=5) as response:
                assert response.status == 200
        finally:
            text = stop_cleanly(daemon, log)
    assert '"POST /api/auth/login" 200' in text  # the access log line
    secret = data_dir / "secret.key"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert len(secret.read_bytes().strip()) == 64
    assert (data_dir / "originals").is_dir() and (data_dir / "cache").is_dir()
    engine = create_engine(f"sqlite:///{data_dir / 'imagehost.db'}")
    with engine.connect() as conn:
        tables = set(engine.dialect.get_table_names(conn))
    assert set(metadata.tables) | {"alembic_version"} == tables


def test_the_twistd_script_runs_again_without_docstrings_in_the_same_process(tmp_path):
    """``twistd imagehost`` parses its options, then starts again with ``-OO`` (and no
    traceback column ranges) under the same pid; the option help still has its text."""
    script = Path(sys.executable).with_name("twistd")
    help_text = subprocess.run([str(script), "imagehost", "--help"], capture_output=True,
                               text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert help_text.returncode == 0, help_text.stderr
    assert "Listen on a Twisted endpoint" in help_text.stdout  # a docstring
    port = free_port()
    log = tmp_path / "twistd.log"
    with log.open("wb") as out:
        daemon = subprocess.Popen(
            [str(script), "-n", "--pidfile=", "imagehost", "--listen",
             f"tcp:{port}:interface=127.0.0.1", "--data-dir", str(tmp_path / "data")],
            cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=out,
            stderr=subprocess.STDOUT)
        try:
            wait_for_health(f"http://127.0.0.1:{port}")
            command = Path(f"/proc/{daemon.pid}/cmdline").read_bytes().split(b"\0")
        finally:
            stop_cleanly(daemon, log)
    assert command[1:4] == [b"-OO", b"-X", b"no_debug_ranges"]
    # twistd without its plugin scan, on the same arguments
    assert command[4:7] == [b"-m", b"imagehost.lean_twistd", str(script).encode()]
    assert command[7:] == [b"-n", b"--pidfile=", b"imagehost", b"--listen",
                           f"tcp:{port}:interface=127.0.0.1".encode(), b"--data-dir",
                           str(tmp_path / "data").encode(), b""]


def test_a_worker_refuses_arguments_twistd_would_not_give_it_in_one_line():
    for argv in (["--index", "1"], ["--index", "x", "--handoff", "3", "--data-dir", "d"],
                 ["--index", "1", "--handoff", "3", "--data-dir", "d", "extra"], ["--port"]):
        finished = subprocess.run([sys.executable, "-m", "imagehost.worker", *argv],
                                  capture_output=True, text=True, timeout=60,
                                  env=dict(os.environ, PYTHONPATH=str(REPO)))
        assert finished.returncode == 1, finished
        assert finished.stderr.startswith("python -m imagehost.worker: ")
        assert "Traceback" not in finished.stderr and finished.stderr.count("\n") == 1


def test_worker_arguments_are_what_twistd_passes():
    from imagehost.worker import WorkerArguments

    args = WorkerArguments(["--index", "2", "--handoff", "7", "--data-dir", "/srv/data",
                            "--config", "/etc/imagehost.ini"])
    assert (args.index, args.handoff, args.data_dir, args.config) == (
        2, 7, "/srv/data", "/etc/imagehost.ini")
    assert WorkerArguments(["--index=1", "--handoff=3", "--data-dir=d"]).config is None


@pytest_twisted.ensureDeferred
async def test_stopping_waits_for_requests_in_flight(server, admin, reactor):
    from twisted.internet.task import deferLater

    site = server.service.site
    big = image_bytes("PNG", size=(2500, 2500), color=(9, 9, 9))
    upload = Deferred.fromCoroutine(admin.upload("/api/upload", big))
    while not site.in_flight:
        await deferLater(reactor, 0.005, lambda: None)
    stopped = server.service.stopService()
    response = await upload
    await stopped
    assert response.code == 201


def child_pids(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return children


def connections_by_process(pids: list[int], port: int) -> dict[int, int]:
    """How many established TCP connections to local ``port`` each of ``pids`` holds,
    once twistd has closed its copies of those a worker took.

    twistd keeps a connection it handed off until the worker's "taken" arrives, which a
    loaded machine may deliver after the client already has its answer: for that moment
    both processes hold the socket. A copy twistd never closes fails here after 10 s.
    """
    deadline = time.monotonic() + 10
    while True:
        held = _connections_held(pids, port)
        seen = Counter(inode for inodes in held.values() for inode in inodes)
        shared = {inode for inode, holders in seen.items() if holders > 1}
        if not shared or time.monotonic() > deadline:
            assert not shared, f"twistd still holds {len(shared)} connections a worker took"
            return {pid: len(inodes) for pid, inodes in held.items()}
        time.sleep(0.05)


def _connections_held(pids: list[int], port: int) -> dict[int, set[str]]:
    """The socket inodes of established connections to local ``port``, per pid."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "01":  # ESTABLISHED
            inodes.add(fields[9])
    held = {}
    for pid in pids:
        links = (_link(fd) for fd in Path(f"/proc/{pid}/fd").iterdir())
        held[pid] = {link[len("socket:["):-1] for link in links
                     if link.startswith("socket:[")} & inodes
    return held


def _link(fd: Path) -> str:
    """Where an open file descriptor points; "" if it was closed meanwhile."""
    try:
        return os.readlink(fd)
    except FileNotFoundError:
        return ""


def open_keepalive_connections(port: int, count: int) -> list[socket.socket]:
    """``count`` connections that each got an answer to /health and stay open."""
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
    for client in clients:
        client.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    for client in clients:
        assert client.recv(4096).startswith(b"HTTP/1.1 200"), "no answer on a connection"
    return clients


def get_health(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
        return response.status


@contextmanager
def twistd_with_a_worker(tmp_path: Path, **env: str) -> Iterator[tuple[subprocess.Popen, int,
                                                                       int]]:
    """``twistd imagehost --workers 2`` serving; yields it, its port and the worker's pid,
    and checks that it stops cleanly."""
    port = free_port()
    log = tmp_path / "twistd.log"
    with log.open("wb") as out:
        daemon = subprocess.Popen(
            TWISTD + ["-n", "--pidfile=", "imagehost", "--workers", "2", "--listen",
                      f"tcp:{port}:interface=127.0.0.1", "--data-dir", str(tmp_path / "data")],
            cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(REPO), **env), stdout=out,
            stderr=subprocess.STDOUT)
        try:
            wait_for_health(f"http://127.0.0.1:{port}")
            yield daemon, port, wait_for_worker(daemon, log)
        finally:
            stop_cleanly(daemon, log)


def test_workers_get_connections_in_turn_are_replaced_and_stop_with_twistd(tmp_path):
    with twistd_with_a_worker(tmp_path) as (daemon, port, worker):
        # A worker runs without docstrings and asserts (-OO: less idle memory).
        assert b"-OO" in Path(f"/proc/{worker}/cmdline").read_bytes().split(b"\0")
        # Keep-alive clients connecting at once are dealt out evenly, every time;
        # sharing accept() on one socket gave all 8 to one process in 2 of 5 tries.
        for _ in range(3):
            clients = open_keepalive_connections(port, 8)
            assert connections_by_process([daemon.pid, worker], port) == {
                daemon.pid: 4, worker: 4}
            for client in clients:
                client.close()
        # A worker that dies loses no new connection: twistd serves them meanwhile.
        os.kill(worker, signal.SIGKILL)
        assert all(get_health(port) == 200 for _ in range(50))
        replacement = wait_for_worker(daemon, tmp_path / "twistd.log", after=worker)
        clients = open_keepalive_connections(port, 8)
        assert connections_by_process([daemon.pid, replacement], port) == {
            daemon.pid: 4, replacement: 4}
        for client in clients:
            client.close()
    assert not Path(f"/proc/{replacement}").exists()


def test_workers_spend_from_one_rate_limit(tmp_path):
    limits = {"IMAGEHOST_LIMITS_LOGINS_PER_MINUTE_PER_IP": "2",
              "IMAGEHOST_LIMITS_LOGINS_PER_MINUTE_PER_USER": "0"}
    with twistd_with_a_worker(tmp_path, **limits) as (_daemon, port, _worker):
        # A new connection each time, so twistd and the worker take turns answering.
        codes = [login_status(port) for _ in range(4)]
    assert codes == [401, 401, 429, 429]


def login_status(port: int) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/auth/login", method="POST",
        data=b'{"username": "nobody", "password": "wrong"}',
        headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def wait_for_worker(daemon: subprocess.Popen, log: Path, after: int = 0) -> int:
    """The pid of the worker once it is serving (a new one if ``after`` is given)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pids = [pid for pid in child_pids(daemon.pid) if pid != after]
        if pids and f"worker 1 (pid {pids[0]}) serving" in log.read_text():
            return pids[0]
        time.sleep(0.1)
    raise AssertionError(f"no worker serving:\n{log.read_text()}")


@pytest_twisted.ensureDeferred
async def test_access_log_to_a_file_is_written_in_batches_and_at_stop(tmp_path, reactor):
    from tests.conftest import start_server

    path = tmp_path / "access.log"
    server = await start_server(tmp_path, reactor, {"server": {"access_log": str(path)}})
    await server.client.get("/health", headers={"User-Agent": "probe/1"})
    await server.client.get("/nope")
    await server.service.stopService()
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    assert re.fullmatch(r'\S+Z 127\.0\.0\.1 "GET /health" 200 2 [\d.]+ms "probe/1"', lines[0])
    assert '"GET /nope" 404' in lines[1]


@pytest_twisted.ensureDeferred
async def test_access_log_through_twistds_log_is_one_event_per_second(tmp_path, reactor):
    from twisted.logger import formatEvent, globalLogPublisher

    from tests.conftest import start_server

    events = []

    def observe(event) -> None:
        if event.get("log_namespace") == "imagehost.access":
            events.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        server = await start_server(tmp_path, reactor)
        for path in ("/health", "/nope", "/health"):
            await server.client.get(path, headers={"User-Agent": "probe/1"})
        await server.service.stopService()
    finally:
        globalLogPublisher.removeObserver(observe)
    # twistd writes (and flushes) its log once per event: the lines come as one batch.
    lines = "\n".join(formatEvent(e) for e in events).splitlines()
    assert len(events) <= 2 and len(lines) == 3, events
    assert re.fullmatch(r'127\.0\.0\.1 "GET /health" 200 2 [\d.]+ms "probe/1"', lines[0])
    assert '"GET /nope" 404' in lines[1]
