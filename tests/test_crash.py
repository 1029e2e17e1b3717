"""SIGKILL during concurrent uploads, renders and deletes: after a restart every
acknowledged image is intact, no row lacks its file, and no temp file is left."""

import io
import json
import os
import random
import signal
import sqlite3
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from PIL import Image

from tests.test_daemon import REPO, TWISTD, free_port, wait_for_health

ADMIN = {"username": "root", "password": "root-password"}


def start_daemon(data_dir: Path, port: int, log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), IMAGEHOST_ADMIN_USERNAME=ADMIN["username"],
               IMAGEHOST_ADMIN_PASSWORD=ADMIN["password"],
               IMAGEHOST_LIMITS_LOGINS_PER_MINUTE_PER_IP="0")
    daemon = subprocess.Popen(
        # One process: SIGKILL must take the whole daemon down at once.
        TWISTD + ["-n", "--pidfile=", "imagehost", "--workers", "1", "--listen",
                  f"tcp:{port}:interface=127.0.0.1", "--data-dir", str(data_dir)],
        cwd=data_dir.parent, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    wait_for_health(f"http://127.0.0.1:{port}")
    return daemon


def call(url: str, method: str = "GET", data: bytes | None = None, headers=None):
    request = urllib.request.Request(url, method=method, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def multipart(data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; "
            f"filename=\"x.png\"\r\nContent-Type: image/png\r\n\r\n").encode()
    body += data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def noise_png(seed: int) -> bytes:
    rng = random.Random(seed)
    image = Image.frombytes("RGB", (300, 300), bytes(rng.getrandbits(8) for _ in range(270000)))
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=1)
    return out.getvalue()


class Traffic:
    """Uploads, renders and deletes from several threads until told to stop."""

    def __init__(self, base: str, token: str):
        self.base = base
        self.auth = {"Authorization": f"Bearer {token}"}
        self.acknowledged: dict[str, bytes] = {}
        self.deleted: set[str] = set()
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def uploader(self, worker: int) -> None:
        seed = worker * 100000
        while not self.stop.is_set():
            seed += 1
            data = noise_png(seed)
            body, content_type = multipart(data)
            try:
                status, answer = call(self.base + "/api/upload", "POST", body,
                                      dict(self.auth, **{"Content-Type": content_type}))
            except OSError:
                return  # the daemon is gone
            if status == 201:
                with self.lock:
                    self.acknowledged[json.loads(answer)["id"]] = data

    def renderer_and_deleter(self) -> None:
        width = 10
        while not self.stop.is_set():
            with self.lock:
                ids = list(self.acknowledged)
            if not ids:
                time.sleep(0.01)
                continue
            width += 1
            try:
                call(f"{self.base}/image/{ids[-1]}.webp?w={width % 290 + 10}")
                if width % 5 == 0:
                    victim = ids[0]
                    with self.lock:
                        self.deleted.add(victim)
                    call(f"{self.base}/api/image/{victim}", "DELETE", b"{}", self.auth)
            except OSError:
                return


def test_sigkill_during_traffic_loses_nothing_acknowledged(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    log = tmp_path / "twistd.log"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    daemon = start_daemon(data_dir, port, log)
    try:
        status, answer = call(base + "/api/auth/login", "POST", json.dumps(ADMIN).encode())
        assert status == 200
        traffic = Traffic(base, json.loads(answer)["access_token"])
        threads = [threading.Thread(target=traffic.uploader, args=(n,)) for n in range(4)]
        threads.append(threading.Thread(target=traffic.renderer_and_deleter))
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 20
        while len(traffic.acknowledged) < 15 and time.monotonic() < deadline:
            time.sleep(0.05)
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=10)
        traffic.stop.set()
        for thread in threads:
            thread.join(timeout=15)
    finally:
        if daemon.poll() is None:
            daemon.kill()
    assert len(traffic.acknowledged) >= 15, log.read_text()

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    daemon = start_daemon(data_dir, port, log)
    try:
        for image_id, data in traffic.acknowledged.items():
            status, body = call(f"{base}/image/{image_id}.png")
            if image_id in traffic.deleted:
                assert status in (200, 404)
                continue
            assert status == 200, image_id
            assert body == data, image_id
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)

    leftovers = list(data_dir.rglob(".tmp-*"))
    assert leftovers == []
    with sqlite3.connect(data_dir / "imagehost.db") as db:
        rows = db.execute("SELECT id, mime_type FROM images").fetchall()
    extension = {"image/png": "png", "image/jpeg": "jpg"}
    for image_id, mime in rows:
        name = f"{image_id}.{extension[mime]}"
        path = data_dir / "originals" / image_id[:2] / image_id[2:4] / name
        assert path.is_file(), f"row {image_id} has no file"
