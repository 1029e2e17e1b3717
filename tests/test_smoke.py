import pytest
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


def test_a_deprecated_call_from_our_own_code_fails_the_tests():
    # pyproject.toml turns DeprecationWarnings attributed to imagehost or the tests into
    # errors; Pillow attributes its own to the caller.
    from PIL import Image

    with pytest.raises(DeprecationWarning, match="getdata"):
        Image.new("RGB", (1, 1)).getdata()
