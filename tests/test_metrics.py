"""GET /metrics in Prometheus text format."""

import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import image_bytes, start_server


def samples(body: bytes) -> dict:
    found = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


@pytest_twisted.ensureDeferred
async def test_metrics_count_requests_by_route_and_uploads(server, admin):
    await admin.upload("/api/upload", image_bytes())
    await server.client.get("/health")
    await server.client.get("/no/such/path/" + "x" * 50)
    response = await server.client.get("/metrics")
    assert response.code == 200
    assert response.header("Content-Type").startswith("text/plain; version=0.0.4")
    found = samples(response.body)
    upload = (("method", "POST"), ("route", "/api/upload"), ("status", "201"))
    assert found[("imagehost_http_requests_total", upload)] == 1
    health = (("method", "GET"), ("route", "/health"), ("status", "200"))
    assert found[("imagehost_http_requests_total", health)] == 1
    other = (("method", "GET"), ("route", "other"), ("status", "404"))
    assert found[("imagehost_http_requests_total", other)] == 1
    assert found[("imagehost_http_request_duration_seconds_count",
                  (("route", "/api/upload"),))] == 1
    assert found[("imagehost_uploads_total", ())] == 1
    assert found[("imagehost_stored_bytes_total", ())] == len(image_bytes())
    assert ("imagehost_cpu_pool_jobs", ()) in found


@pytest_twisted.ensureDeferred
async def test_health_fails_when_storage_is_gone(server):
    originals = server.data_dir / "originals"
    originals.rename(server.data_dir / "moved")
    try:
        response = await server.client.get("/health")
        assert response.code == 503
        assert response.body == b"UNAVAILABLE"
    finally:
        (server.data_dir / "moved").rename(originals)
    assert (await server.client.get("/health")).code == 200


@pytest_twisted.ensureDeferred
async def test_health_fails_when_the_database_is_unreadable(tmp_path, reactor):
    server = await start_server(tmp_path, reactor)  # SQLite: the file can be spoiled
    server.db.engine.dispose()
    database = server.data_dir / "imagehost.db"
    saved = database.read_bytes()
    database.write_bytes(b"this is not a database" * 100)
    try:
        assert (await server.client.get("/health")).code == 503
    finally:
        server.db.engine.dispose()
        database.write_bytes(saved)
        await server.service.stopService()


def test_image_paths_are_labelled_like_their_route():
    from imagehost.web.api import ImagehostAPI
    from imagehost.web.metrics import Metrics

    class Services:
        cpu_jobs = 0
        delivery = None

    metrics = Metrics(Services(), ImagehostAPI.app.url_map)
    rules = {rule.rule for rule in ImagehostAPI.app.url_map.iter_rules()}
    fast = metrics.route_of("GET", "/image/abc.jpg")
    assert fast in rules
    assert metrics.route_of("GET", "/api/image/abc.jpg") in rules
    assert metrics.route_of("GET", "/image/a/b") == "other"
