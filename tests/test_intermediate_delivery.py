"""A real daemon renders the variants of expensive sources from their intermediate.

The observable: once the intermediate exists, the original on disk is replaced by a
plain red image of the same size. Variants that are clearly smaller than the
intermediate still show the photo (they never open the original); the original itself,
and variants too large for the intermediate, show the red.
"""

from __future__ import annotations

import json

import pytest_twisted
from twisted.internet.defer import ensureDeferred, gatherResults

from tests import cli_support  # noqa: F401  (registers imagehost_cli)
from tests.conftest import image_bytes
from tests.test_cli import local_cli
from tests.test_delivery import upload
from tests.test_imaging_render import decode as decoded
from tests.test_imaging_render import encode as encoded
from tests.test_intermediate import photo_like

RED = (255, 0, 0)


def photo_webp() -> bytes:
    return encoded(photo_like(), "WEBP", quality=80, method=0)


def is_red(body: bytes) -> bool:
    small = decoded(body).convert("RGB").resize((4, 3))
    colours = [small.getpixel((x, y)) for x in range(4) for y in range(3)]
    return all(max(abs(c - r) for c, r in zip(colour, RED, strict=True)) < 8
               for colour in colours)


def intermediate_file(server, image_id: str):
    return server.data_dir / "cache" / image_id[:2] / image_id / "i1-1536"


def redden_original(server, image_id: str) -> bytes:
    """Put a red image where the original is; returns its bytes."""
    path = server.imagehost.storage.local_original(image_id, "webp")
    red = image_bytes("WEBP", size=(2200, 1650), color=RED)
    path.write_bytes(red)
    return red


@pytest_twisted.ensureDeferred
async def test_smaller_variants_come_from_the_intermediate_made_after_the_upload(server):
    admin = await server.admin()
    image_id = await upload(admin, photo_webp())
    await server.imagehost.delivery.rendered_ahead(image_id)  # intermediate, then thumbnail
    assert decoded(intermediate_file(server, image_id).read_bytes()).size == (1536, 1152)
    red = redden_original(server, image_id)

    for path in (f"/image/{image_id}.jpg?w=400", f"/image/{image_id}.webp?w=768&h=768",
                 f"/image/{image_id}.png?w=300&h=200&fp=0.8,0.5",
                 f"/image/{image_id}_thumbnail.webp"):
        response = await server.client.get(path)
        assert response.code == 200, path
        assert not is_red(response.body), f"{path} was rendered from the original"
    larger = await server.client.get(f"/image/{image_id}.jpg?w=1200")
    assert larger.code == 200 and is_red(larger.body)  # not clearly smaller: the original
    smart = await server.client.get(f"/image/{image_id}.jpg?w=300&h=400&crop=smart")
    assert smart.code == 200 and is_red(smart.body)  # smart crops: the original
    original = await server.client.get(f"/image/{image_id}.webp")
    assert (original.code, original.body) == (200, red)  # identity: the stored bytes
    assert server.imagehost.delivery.intermediate_renders == 4  # 3 + the eager thumbnail


@pytest_twisted.ensureDeferred
async def test_the_first_render_makes_a_missing_intermediate_once(make_server):
    server = await make_server({"delivery": {"eager_presets": ""}})
    admin = await server.admin()
    image_id = await upload(admin, photo_webp())
    # Without eager presets the upload's background lane still makes it: wait for that,
    # then remove it, as for an image stored before intermediates.
    await server.imagehost.delivery.rendered_ahead(image_id)
    intermediate = intermediate_file(server, image_id)
    intermediates = server.imagehost.delivery.intermediates
    assert intermediate.exists() and intermediates.made == 1
    intermediate.unlink()

    responses = await gatherResults([
        ensureDeferred(server.client.get(f"/image/{image_id}.jpg?w={width}"))
        for width in (200, 300, 400)])
    assert [r.code for r in responses] == [200, 200, 200]
    assert intermediate.exists() and intermediates.made == 2  # one for the three
    redden_original(server, image_id)
    later = await server.client.get(f"/image/{image_id}.jpg?w=500")
    assert later.code == 200 and not is_red(later.body)


@pytest_twisted.ensureDeferred
async def test_intermediates_can_be_turned_off(make_server):
    server = await make_server({"delivery": {"intermediate_size": "0"}})
    admin = await server.admin()
    image_id = await upload(admin, photo_webp())
    await server.imagehost.delivery.rendered_ahead(image_id)
    variants = intermediate_file(server, image_id).parent
    assert [p.name for p in variants.iterdir()] == ["r1-300x300-c-q85.webp"]  # thumbnail
    redden_original(server, image_id)
    response = await server.client.get(f"/image/{image_id}.jpg?w=400")
    assert response.code == 200 and is_red(response.body)


@pytest_twisted.ensureDeferred
async def test_small_and_jpeg_sources_get_none(make_server):
    server = await make_server()
    admin = await server.admin()
    small = await upload(admin, encoded(photo_like((1200, 900)), "PNG", compress_level=1))
    jpeg = await upload(admin, encoded(photo_like(), "JPEG", quality=80))
    for image_id in (small, jpeg):
        await server.imagehost.delivery.rendered_ahead(image_id)
        assert not intermediate_file(server, image_id).exists()
    assert server.imagehost.delivery.intermediates.made == 0


@pytest_twisted.ensureDeferred
async def test_it_goes_with_the_image_and_is_no_original_to_verify(make_server):
    server = await make_server()
    admin = await server.admin()
    image_id = await upload(admin, photo_webp())
    await server.imagehost.delivery.rendered_ahead(image_id)
    intermediate = intermediate_file(server, image_id)
    assert intermediate.exists()
    report = await local_cli(server).json("verify", "--older-than", "0")
    assert report["clean"], json.dumps(report)
    response = await admin.request("DELETE", f"/api/image/{image_id}")
    assert response.code in (200, 204)
    assert not intermediate.exists()
    gone = await server.client.get(f"/image/{image_id}.jpg?w=400")
    assert gone.code == 404

