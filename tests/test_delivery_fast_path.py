"""Cache hits answered without a database read stay correct when images go away."""

from __future__ import annotations

import pytest_twisted
import sqlalchemy as sa
from twisted.internet.threads import deferToThread

from tests.conftest import image_bytes, start_server
from tests.test_delivery import raw_request

REVALIDATE_AFTER = 1.0


@pytest_twisted.async_yield_fixture
async def bounded(tmp_path, reactor, database_url):
    """A daemon that trusts a remembered image for REVALIDATE_AFTER seconds."""
    sections = {"cache": {"revalidate_after": REVALIDATE_AFTER}}
    if database_url:
        sections["database"] = {"url": database_url}
    running = await start_server(tmp_path, reactor, sections)
    yield running
    if running.service.running:
        await running.service.stopService()


async def sleep(reactor, seconds: float) -> None:
    from twisted.internet.task import deferLater

    await deferLater(reactor, seconds, lambda: None)


async def upload(client, data: bytes) -> str:
    response = await client.upload("/api/upload", data)
    assert response.code == 201, response.body
    return response.json()["id"]


def views_in_db(server, image_id: str) -> int:
    engine = sa.create_engine(server.db.engine.url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT views FROM images WHERE id = :id"),
                                {"id": image_id}).scalar_one()
    finally:
        engine.dispose()


def delete_row(server, image_id: str) -> None:
    """Remove the record as another daemon sharing the database would."""
    engine = sa.create_engine(server.db.engine.url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM images WHERE id = :id"), {"id": image_id})
    finally:
        engine.dispose()


@pytest_twisted.ensureDeferred
async def test_no_database_read_within_the_bound_then_404(bounded, reactor):
    server = bounded
    admin = await server.admin()
    image_id = await upload(admin, image_bytes("JPEG", (400, 300)))
    url = f"/image/{image_id}.webp?w=120"
    first = await server.client.get(url)
    second = await server.client.get(url)
    assert (first.header("X-Cache"), second.header("X-Cache")) == ("MISS", "HIT")
    assert second.body == first.body
    # The record is gone from the database (another daemon deleted it, keeping the
    # original): within the bound this daemon reads nothing from the database, so the
    # hit, a new size and the original are all still served...
    delete_row(server, image_id)
    other_size = f"/image/{image_id}.webp?w=121"
    for path in (url, other_size, f"/image/{image_id}.jpg"):
        assert (await server.client.get(path)).code == 200, path
    # ...and once the bound has passed, every URL asks, answers 404, and the dead variant
    # files go away.
    await sleep(reactor, REVALIDATE_AFTER + 0.2)
    for path in (url, other_size, f"/image/{image_id}.jpg"):
        gone = await server.client.get(path)
        assert gone.code == 404, (path, gone.body)
    variants = server.imagehost.storage.variants_dir(image_id)
    for _ in range(50):
        if not variants.exists():
            break
        await sleep(reactor, 0.05)
    assert not variants.exists()


@pytest_twisted.ensureDeferred
async def test_hits_keep_being_served_across_revalidations(bounded, reactor):
    server = bounded
    admin = await server.admin()
    image_id = await upload(admin, image_bytes("PNG", (300, 200)))
    url = f"/image/{image_id}.png?w=60"
    assert (await server.client.get(url)).header("X-Cache") == "MISS"
    await sleep(reactor, REVALIDATE_AFTER + 0.2)
    again = await server.client.get(url)
    assert (again.code, again.header("X-Cache")) == (200, "HIT")


@pytest_twisted.ensureDeferred
async def test_delete_preserving_the_original_ends_hits_and_renders(server, admin):
    image_id = await upload(admin, image_bytes("JPEG", (400, 300)))
    urls = [f"/image/{image_id}.png?w=50", f"/image/{image_id}_thumbnail.jpg",
            f"/image/{image_id}.jpg"]
    for url in urls * 2:
        assert (await server.client.get(url)).code == 200
    response = await admin.request("DELETE", f"/api/image/{image_id}",
                                   data=b'{"preserveOnDisk": true}',
                                   headers={"Content-Type": "application/json"})
    assert response.code == 204, response.body
    for url in urls:
        assert (await server.client.get(url)).code == 404, url


@pytest_twisted.ensureDeferred
async def test_an_empty_cache_file_is_a_miss_not_an_empty_image(server, admin):
    image_id = await upload(admin, image_bytes("JPEG", (400, 300)))
    url = f"/image/{image_id}.png?w=50"
    first = await server.client.get(url)
    [cached] = [p for p in (server.data_dir / "cache").rglob("*") if p.is_file()
                and p.name.startswith("r1-50x")]  # (not the eager thumbnail)
    cached.write_bytes(b"")  # what a power cut after an unsynced rename can leave
    again = await server.client.get(url)
    assert again.code == 200
    assert again.header("X-Cache") != "HIT"
    assert again.body == first.body


# -- hits answered at once, without the route ---------------------------------


@pytest_twisted.ensureDeferred
async def test_a_hit_answered_at_once_is_the_same_answer_as_the_routes(server, admin):
    image_id = await upload(admin, image_bytes("JPEG", (400, 300)))
    await server.imagehost.delivery.rendered_ahead(image_id)
    delivery = server.imagehost.delivery
    url = f"/image/{image_id}.png?w=50"
    assert (await server.client.get(url)).header("X-Cache") == "MISS"
    delivery.forget(image_id)  # the next request reads the record: the route answers
    by_route = await deferToThread(raw_request, server.base_url, "GET", url)
    assert delivery.immediate_hits == 0
    at_once = await deferToThread(raw_request, server.base_url, "GET", url)
    assert delivery.immediate_hits == 1
    for answer in (by_route, at_once):
        answer[1].pop("Date")
    assert at_once == by_route and at_once[1]["X-Cache"] == "HIT"
    head = await deferToThread(raw_request, server.base_url, "HEAD", f"/api{url}")
    assert (head[0], head[1]["Content-Length"], head[2]) == (200, str(len(at_once[2])), b"")
    assert delivery.immediate_hits == 2
    etag = at_once[1]["ETag"]
    again = await server.client.request("GET", url, headers={"If-None-Match": etag})
    assert (again.code, again.body, again.header("ETag")) == (304, b"", etag)
    await delivery.views.flush()
    # Every GET answered 200 counted a view, whichever way it was answered (not HEAD, 304).
    assert views_in_db(server, image_id) == 3


@pytest_twisted.ensureDeferred
async def test_what_cannot_be_answered_at_once_goes_to_the_route(server, admin):
    image_id = await upload(admin, image_bytes("JPEG", (400, 300)))
    await server.imagehost.delivery.rendered_ahead(image_id)
    bad = await server.client.get(f"/image/{image_id}.png?w=0")
    assert bad.code == 400 and bad.json()["error"]["title"] == "BadRequest"
    missing = await server.client.get(f"/image/{image_id}.png?w=51")
    assert missing.header("X-Cache") == "MISS"
    original = await server.client.get(f"/image/{image_id}.jpg")
    assert original.code == 200 and original.header("X-Cache") is None
    unknown = await server.client.get(f"/image/{image_id}.txt")
    assert unknown.code == 404
    assert server.imagehost.delivery.immediate_hits == 0
