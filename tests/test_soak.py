"""A bounded soak: mixed traffic at 32 connections against a real twistd daemon.

The short run is part of the default suite; the long one is marked ``slow``:
``pytest -m slow tests/test_soak.py -s`` (IMAGEHOST_TEST_SOAK_SECONDS sets its length).
"""

import json
import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.test_crash import ADMIN, call, multipart, noise_png, start_daemon
from tests.test_daemon import free_port

CONNECTIONS = 32


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@dataclass
class Soak:
    base: str
    auth: dict
    deadline: float
    images: dict = field(default_factory=dict)  # id -> bytes, for images still alive
    deleted: set = field(default_factory=set)
    statuses: dict = field(default_factory=dict)
    unexpected: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, what: str, status: int, body: bytes) -> None:
        with self.lock:
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status >= 500 and status != 503:
                self.unexpected.append((what, status, body[:200]))

    def pick(self, rng: random.Random) -> tuple[str, bytes] | None:
        with self.lock:
            if not self.images:
                return None
            image_id = rng.choice(list(self.images))
            return image_id, self.images[image_id]

    def client(self, seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < self.deadline:
            roll = rng.random()
            picked = self.pick(rng)
            if picked is None or roll < 0.15:
                self.upload(rng)
            elif roll < 0.65:
                self.render(rng, *picked)
            elif roll < 0.75:
                self.read_original(*picked)
            elif roll < 0.85:
                status, body = call(f"{self.base}/api/images/{rng.randint(1, 3)}?limit=20",
                                    headers=self.auth)
                self.record("list", status, body)
            elif roll < 0.95:
                status, body = call(f"{self.base}/api/image/{picked[0]}", "PATCH",
                                    json.dumps({"description": f"d{rng.random()}"}).encode(),
                                    dict(self.auth, **{"Content-Type": "application/json"}))
                self.record("edit", status, body)
            else:
                self.delete(picked[0])

    def upload(self, rng: random.Random) -> None:
        data = noise_png(rng.getrandbits(32))
        body, content_type = multipart(data)
        status, answer = call(self.base + "/api/upload", "POST", body,
                              dict(self.auth, **{"Content-Type": content_type}))
        self.record("upload", status, answer)
        if status == 201:
            with self.lock:
                self.images[json.loads(answer)["id"]] = data

    def render(self, rng: random.Random, image_id: str, _data: bytes) -> None:
        ext = rng.choice(["jpg", "webp", "png"])
        status, body = call(f"{self.base}/image/{image_id}.{ext}?w={rng.randint(20, 120)}")
        self.record("render", status, body)

    def read_original(self, image_id: str, data: bytes) -> None:
        status, body = call(f"{self.base}/image/{image_id}.png")
        self.record("original", status, body)
        if status == 200 and body != data:
            self.unexpected.append(("corrupted", image_id, len(body)))

    def delete(self, image_id: str) -> None:
        with self.lock:
            if self.images.pop(image_id, None) is None:
                return
            self.deleted.add(image_id)
        status, body = call(f"{self.base}/api/image/{image_id}", "DELETE", b"{}", self.auth)
        self.record("delete", status, body)


def run_soak(tmp_path: Path, seconds: float) -> dict:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    daemon = start_daemon(data_dir, port, tmp_path / "twistd.log")
    try:
        status, answer = call(base + "/api/auth/login", "POST", json.dumps(ADMIN).encode())
        assert status == 200
        soak = Soak(base, {"Authorization": f"Bearer {json.loads(answer)['access_token']}"},
                    time.monotonic() + seconds)
        threads = [threading.Thread(target=soak.client, args=(n,)) for n in range(CONNECTIONS)]
        for thread in threads:
            thread.start()
        rss = []
        while any(t.is_alive() for t in threads):
            rss.append(rss_kib(daemon.pid))
            time.sleep(max(0.5, seconds / 40))
        for thread in threads:
            thread.join()
        lost = [i for i, data in soak.images.items()
                if call(f"{base}/image/{i}.png") != (200, data)]
        gone = [i for i in soak.deleted if call(f"{base}/image/{i}.png")[0] != 404]
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
    half = len(rss) // 2
    return {"statuses": soak.statuses, "unexpected": soak.unexpected, "lost": lost,
            "still_served_after_delete": gone, "images": len(soak.images),
            "rss_first_half_max_kib": max(rss[:half]), "rss_second_half_max_kib": max(rss[half:]),
            "rss_second_half_min_kib": min(rss[half:]), "requests": sum(soak.statuses.values())}


def check(result: dict) -> None:
    print(json.dumps(result, indent=1))
    assert result["unexpected"] == []
    assert result["lost"] == []
    assert result["still_served_after_delete"] == []
    assert result["statuses"].get(201, 0) > 0 and result["statuses"].get(200, 0) > 0


def test_short_soak(tmp_path):
    check(run_soak(tmp_path, 15))


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_long_soak_keeps_memory_flat(tmp_path):
    result = run_soak(tmp_path, float(os.environ.get("IMAGEHOST_TEST_SOAK_SECONDS", "180")))
    check(result)
    # Flat: the second half never grows more than 15% over its own low point.
    assert result["rss_second_half_max_kib"] <= result["rss_second_half_min_kib"] * 1.15, result
