"""What a default daemon loads: a real twistd process on an installation that exists."""

import json
import os
import re
import subprocess
import sys
import urllib.request

from tests.conftest import image_bytes
from tests.test_daemon import REPO, free_port, stop_cleanly, wait_for_health

# Optional extras and one-off tools: boto3 only with S3 storage, Alembic only to migrate.
NOT_FOR_A_DEFAULT_DAEMON = ("boto3", "botocore", "alembic", "mako")


def started_daemon(tmp_path, port: int, log, *python_options: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *python_options, "-c", "from twisted.scripts.twistd import run; run()",
         "-n", "--pidfile=", "imagehost", "--workers", "1", "--listen",
         f"tcp:{port}:interface=127.0.0.1", "--data-dir", str(tmp_path / "data")],
        cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
        env=dict(os.environ, PYTHONPATH=str(REPO), IMAGEHOST_ACCESS_ALLOW_GUEST_UPLOADS="true"))


def test_a_default_daemon_imports_neither_boto3_nor_alembic(tmp_path):
    port = free_port()
    log_path = tmp_path / "twistd.log"
    with log_path.open("wb") as log:
        # -X importtime: every module the process imports, as it imports it.
        first = started_daemon(tmp_path, port, log, "-X", "importtime")
        wait_for_health(f"http://127.0.0.1:{port}")
        migrating = imports(stop_cleanly(first, log_path))
        assert "alembic" in migrating  # the first start creates and migrates the database
        log.truncate(0)
        log.seek(0)
        daemon = started_daemon(tmp_path, port, log, "-X", "importtime")
        try:
            base = f"http://127.0.0.1:{port}"
            wait_for_health(base)
            image_id = upload(base, image_bytes("JPEG", (640, 480)))
            for path in (f"/image/{image_id}.webp?w=100", f"/image/{image_id}.jpg", "/"):
                with urllib.request.urlopen(base + path, timeout=10) as response:
                    assert response.status == 200
        finally:
            text = stop_cleanly(daemon, log_path)
    imported = imports(text)
    assert "imagehost.web.api" in imported and "PIL.WebPImagePlugin" in imported
    assert {m.split(".")[0] for m in imported} & set(NOT_FOR_A_DEFAULT_DAEMON) == set()


def imports(log: str) -> set[str]:
    return set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)$", log, re.M))


def upload(base: str, data: bytes) -> str:
    boundary = "imagehost-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; "
            f"filename=\"a.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n").encode() + data + (
        f"\r\n--{boundary}--\r\n".encode())
    request = urllib.request.Request(
        base + "/api/guest/upload", data=body, method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=20) as response:
        assert response.status == 201
        return json.load(response)["id"]
