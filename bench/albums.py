"""Albums and share links beside the feed: the page of an album of 200 images, its
share page, a share's image hit, against the ``/explore`` feed page and a plain image
hit, by the daemon's own server time.

Starts a real twistd daemon (``bench/pages.py``'s set-up), uploads 200 images through
the API, puts them in one public album, shares the album and one image, logs in
through the login form, then requests each URL in turn over one keep-alive connection
per URL. Server time is what the access log records per request. Prints the median and
95th percentile of each.

    python bench/albums.py [--runs 100]
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pages  # noqa: E402

IMAGES = 200


def api(connection, method: str, path: str, token: str, body=None) -> dict:
    connection.request(method, path, None if body is None else json.dumps(body), {
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    response = connection.getresponse()
    raw = response.read()
    assert response.status < 300, (path, response.status, raw[:200])
    return json.loads(raw) if raw else {}


def prepare(port: int) -> dict[str, dict[str, str]]:
    """200 public uploads in one album, two shares; the URLs to time with their headers."""
    token, session = pages.prepare_session(port)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    ids = []
    for n in range(IMAGES):
        connection.request("POST", "/api/upload", pages.multipart(pages.photo(n), f"p{n}",
                                                                  public=True), {
            "Authorization": f"Bearer {token}",
            "Content-Type": f"multipart/form-data; boundary={pages.BOUNDARY}"})
        ids.append(json.loads(connection.getresponse().read())["id"])
    album = api(connection, "POST", "/api/albums", token, {"title": "Bench", "isPublic": True})
    api(connection, "PUT", f"/api/album/{album['id']}/images", token, {"imageIds": ids})
    album_share = api(connection, "POST", "/api/shares", token, {"albumId": album["id"]})
    image_share = api(connection, "POST", "/api/shares", token, {"imageId": ids[0]})
    browser = {"Cookie": session}
    return {f"/a/{album['id']}": browser, album_share["url"]: {},
            f"{image_share['url']}/image.jpg": {}, "/explore": browser,
            f"/image/{ids[0]}.jpg": {}}


def measure(port: int, targets: dict[str, dict[str, str]], runs: int) -> None:
    connections = {path: http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                   for path in targets}
    for _ in range(runs):
        for path, headers in targets.items():
            connections[path].request("GET", path, headers=headers)
            response = connections[path].getresponse()
            response.read()
            assert response.status == 200, (path, response.status)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="imagehost-albums-bench-") as tmp:
        folder, port = Path(tmp), pages.free_port()
        daemon = pages.start_daemon(folder, port)
        try:
            targets = prepare(port)
            measure(port, targets, 5)  # warm up (templates, variant caches)
            time.sleep(1.5)  # the access log is flushed once a second
            (folder / "access.log").write_text("")
            measure(port, targets, args.runs)
            time.sleep(1.5)
        finally:
            daemon.terminate()
            daemon.wait(timeout=30)
        times = pages.server_times(folder / "access.log", list(targets))
    labels = {0: f"album page ({IMAGES} images)", 1: f"album share page ({IMAGES} images)",
              2: "image share hit (original)", 3: "feed page /explore (50 images)",
              4: "plain image hit /image/{id}.jpg"}
    print(f"server time per request, {args.runs} requests each")
    print(f"{'request':36} {'median ms':>10} {'p95 ms':>8}")
    for n, path in enumerate(targets):
        values = sorted(times[path])
        print(f"{labels[n]:36} {statistics.median(values):10.2f} "
              f"{values[max(0, int(len(values) * 0.95) - 1)]:8.2f}")


if __name__ == "__main__":
    main()
