"""Cache hits answered without a database read stay correct when images go away."""

from __future__ import annotations

import pytest_twisted
import sqlalchemy as sa

from tests.conftest import image_bytes


async def upload(client, data: bytes) -> str:
    response = await client.upload("/api/upload", data)
    assert response.code == 201, response.body
    return response.json()["id"]


def delete_row(server, image_id: str) -> None:
    """Remove the record as another daemon sharing the database would."""
    engine = sa.create_engine(server.imagehost.db.engine.url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM images WHERE id = :id"), {"id": image_id})
    finally:
        engine.dispose()


@pytest_twisted.ensureDeferred
async def test_hit_without_database_read_after_first_request(server, admin):
    image_id = await upload(admin, image_bytes("JPEG", (400, 300)))
    url = f"/image/{image_id}.webp?w=120"
    first = await server.client.get(url)
    second = await server.client.get(url)
    assert (first.header("X-Cache"), second.header("X-Cache")) == ("MISS", "HIT")
    assert second.body == first.body
    # The record is gone from the database, the variant file is still there: the hit is
    # still served (its bytes are right), but anything else asks the database again.
    delete_row(server, image_id)
    assert (await server.client.get(url)).code == 200
    assert (await server.client.get(f"/image/{image_id}.webp?w=121")).code == 404
    assert (await server.client.get(f"/image/{image_id}.jpg")).code == 404


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
