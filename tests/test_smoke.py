import pytest_twisted

from tests.conftest import image_bytes


@pytest_twisted.ensureDeferred
async def test_health_and_upload(server, admin):
    assert (await server.client.get("/health")).code == 200
    response = await admin.upload("/api/upload", image_bytes())
    assert response.code == 201, response.body
    image_id = response.json()["id"]
    got = await server.client.get(f"/image/{image_id}.jpg")
    assert got.code == 200
    assert got.body == image_bytes()
