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
import urllib.request
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


@pytest_twisted.ensureDeferred
async def test_stopping_waits_for_requests_in_flight(server, admin, reactor):
    from twisted.internet.task import deferLater

    site = server.service.services[0].site
    big = image_bytes("PNG", size=(2500, 2500), color=(9, 9, 9))
    upload = Deferred.fromCoroutine(admin.upload("/api/upload", big))
    while not site.in_flight:
        await deferLater(reactor, 0.005, lambda: None)
    stopped = server.service.stopService()
    response = await upload
    await stopped
    assert response.code == 201


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def child_pids(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return children


def test_workers_share_the_listening_socket_and_stop_with_twistd(tmp_path):
    port = free_port()
    log = tmp_path / "twistd.log"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with log.open("wb") as out:
        daemon = subprocess.Popen(
            TWISTD + ["-n", "--pidfile=", "imagehost", "--workers", "2", "--listen",
                      f"tcp:{port}:interface=127.0.0.1", "--data-dir", str(tmp_path / "data")],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for_health(f"http://127.0.0.1:{port}")
            deadline = time.monotonic() + 20
            while "worker 1 (pid" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.1)
            [worker] = child_pids(daemon.pid)
            before = cpu_ticks(worker)
            for _ in range(400):  # a new connection each time: the kernel spreads them
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health") as response:
                    assert response.status == 200
            assert cpu_ticks(worker) > before, "the worker served nothing"
        finally:
            stop_cleanly(daemon, log)
    assert not Path(f"/proc/{worker}").exists()


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
