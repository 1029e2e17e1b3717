"""Screenshots of every web page at 1280 and 360 px wide, into this folder.

Starts a twistd daemon on a fresh data directory, uploads a few generated pictures,
and photographs each page with the same headless Chromium the browser tests use
(Debian's chromium and chromium-driver through selenium):

    python docs/screenshots/make.py
"""

from __future__ import annotations

import base64
import io
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from PIL import Image, ImageOps

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))

from bench.pages import ADMIN, free_port, multipart, start_daemon  # noqa: E402
from tests.browser_support import missing_browser, start_chromium  # noqa: E402

WIDTHS = (1280, 360)
COLOURS = [("#0b3d91", "#f2a65a"), ("#1b4332", "#d8f3dc"), ("#5a189a", "#ffafcc"),
           ("#3d0c02", "#ffd166"), ("#023047", "#8ecae6"), ("#2b2d42", "#edf2f4")]
DESCRIPTIONS = ["Harbour at dusk", "Fern in the morning", "Neon evening", "Desert road",
                "Deep water", "Winter sky"]


def picture(n: int) -> bytes:
    """A generated gradient picture (no photo files needed)."""
    size = (1600, 1000) if n % 2 else (1200, 1200)
    ramp = Image.linear_gradient("L").rotate(35 * n, expand=True).resize(size)
    mixed = Image.blend(ramp, Image.radial_gradient("L").resize(size), 0.4)
    dark, light = COLOURS[n % len(COLOURS)]
    buffer = io.BytesIO()
    ImageOps.colorize(mixed, dark, light).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def call(base: str, method: str, path: str, body: bytes | None, headers: dict) -> bytes:
    request = urllib.request.Request(base + path, data=body, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read()


def seed(base: str) -> str:
    """Upload the pictures (public but the last); returns the first image's id."""
    login = json.dumps({"username": ADMIN[0], "password": ADMIN[1]}).encode()
    token = json.loads(call(base, "POST", "/api/auth/login", login,
                            {"Content-Type": "application/json"}))["access_token"]
    ids = []
    for n, description in enumerate(DESCRIPTIONS):
        body = multipart(picture(n), description)
        ids.append(json.loads(call(base, "POST", "/api/upload", body, {
            "Authorization": f"Bearer {token}",
            "Content-Type": "multipart/form-data; boundary=benchboundary"}))["id"])
        if n < len(DESCRIPTIONS) - 1:
            call(base, "PATCH", f"/api/image/{ids[-1]}", b'{"isPublic": true}', {
                "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    call(base, "POST", "/api/user/api-keys", b'{"name": "laptop"}', {
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    return ids[0]


def shoot(driver, base: str, path: str, name: str) -> None:
    for width in WIDTHS:
        driver.set_window_size(width, 900)
        driver.get(base + path)
        time.sleep(0.5)  # lazy thumbnails
        height = driver.execute_script("return document.documentElement.scrollHeight")
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": min(height, 2400), "scale": 1}})
        (HERE / f"{name}-{width}.png").write_bytes(base64.b64decode(shot["data"]))
        print(f"{name}-{width}.png")


def main() -> None:
    reason = missing_browser()
    if reason:
        raise SystemExit(f"Cannot take screenshots: {reason}")
    os.environ.setdefault("IMAGEHOST_ADMIN_EMAIL", "bench@example.com")
    with tempfile.TemporaryDirectory(prefix="imagehost-screenshots-") as tmp:
        port = free_port()
        daemon = start_daemon(Path(tmp), port)
        driver = start_chromium()
        try:
            base = f"http://127.0.0.1:{port}"
            image_id = seed(base)
            shoot(driver, base, "/login", "login")
            shoot(driver, base, "/explore", "explore")
            driver.get(base + "/login")
            driver.find_element("id", "username").send_keys(ADMIN[0])
            driver.find_element("id", "password").send_keys(ADMIN[1], "\n")
            time.sleep(0.5)
            for path, name in [("/", "upload"), ("/images", "images"),
                               (f"/i/{image_id}", "image"), ("/account", "account"),
                               ("/admin", "admin"), ("/no-such-page", "not-found")]:
                shoot(driver, base, path, name)
        finally:
            driver.quit()
            daemon.terminate()
            daemon.wait(timeout=30)


if __name__ == "__main__":
    main()
