"""What an image carries beyond its pixels, over the real daemon: a focal point for its
crops, a placeholder (BlurHash, dominant colour), and the CLI's signed URLs (issue 15)."""

from __future__ import annotations

import re
import warnings

import pytest
import pytest_twisted
from PIL import Image

from imagehost.imaging import placeholder as placeholders
from tests.conftest import image_bytes
from tests.test_cli import local_cli, remote_cli
from tests.test_delivery_features import (
    daemon,  # noqa: F401 - the fixture
    decoded,
    signature_of,
    subject_box,
    subject_on_flat_ground,
    upload,
)

SUBJECT = (20, 40, 140, 160)  # left of centre in a 600 x 200 picture


# -- the CLI's URLs --------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_imagehost_url_prints_a_signed_url_the_daemon_serves(daemon):  # noqa: F811
    server = await daemon({"delivery": {"require_signature": "transforms"}})
    admin = await server.admin()
    image_id = await upload(admin, image_bytes("PNG", (200, 100)))
    made = await local_cli(server).json("url", image_id, "--width", "50", "--format", "webp",
                                        "--crop", "true", "--height", "50")
    assert made["path"].startswith(f"/image/{image_id}.webp?crop=true&h=50&w=50&s=")
    assert made["url"] == "http://localhost:8080" + made["path"]
    response = await server.client.get(made["path"])
    assert response.code == 200 and decoded(response.body).size == (50, 50)
    # The API hands out the same signature for the same variant.
    api = (await admin.get(f"/api/image/{image_id}/url?w=50&h=50&crop=true&format=webp"))
    assert signature_of(api.json()["url"]) == signature_of(made["path"])

    plain = await local_cli(server).ok("url", image_id)
    assert plain.stdout.strip() == f"http://localhost:8080/image/{image_id}.png"
    failed = await local_cli(server).fails("url", "00000000-0000-4000-8000-000000000000")
    assert failed == "No such image."
    bad = await local_cli(server).fails("url", image_id, "--dpr", "9")
    assert bad.startswith('"dpr" must be a number from 1 to 4')

    # The remote client downloads through a URL the server signs.
    tokens = await server.client.login()
    saved = await remote_cli(server, "--username", "admin", "--password", "admin-password-1").json(
        "download", image_id, "--width", "40", "--format", "jpg", "-o",
        str(server.data_dir.parent / "small.jpg"))
    assert tokens and saved["contentType"] == "image/jpeg"
    assert decoded((server.data_dir.parent / "small.jpg").read_bytes()).width == 40


# -- focal points ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_stored_focal_point_places_that_images_crops(daemon):  # noqa: F811
    server = await daemon()
    admin = await server.admin()
    client = server.client
    image_id = await upload(admin, subject_on_flat_ground((600, 200), SUBJECT))
    crop = f"/image/{image_id}.png?w=200&h=200&crop=true"

    before = await client.get(crop)
    assert subject_box(before.body) is None
    patched = await admin.post_json(f"/api/image/{image_id}",
                                    {"focalPoint": {"x": 0.1, "y": 0.5}}, method="PATCH")
    assert patched.code == 204, patched.body
    detail = (await admin.get(f"/api/image/{image_id}/detail")).json()
    assert detail["focalPoint"] == {"x": 0.1, "y": 0.5}

    after = await client.get(crop)
    assert subject_box(after.body) == SUBJECT
    assert after.header("ETag") != before.header("ETag")  # a new variant, not a stale one
    thumbnail = await client.get(f"/image/{image_id}_thumbnail.png")
    assert subject_box(thumbnail.body) == SUBJECT
    # What a URL asks for explicitly wins over the stored point.
    explicit = await client.get(f"/image/{image_id}.png?w=200&h=200&fp=0.9,0.5")
    assert subject_box(explicit.body) is None
    fitted = await client.get(f"/image/{image_id}.png?w=300")
    assert decoded(fitted.body).size == (300, 100)  # no crop, nothing to place

    cleared = await admin.post_json(f"/api/image/{image_id}", {"focalPoint": None},
                                    method="PATCH")
    assert cleared.code == 204
    assert (await client.get(crop)).header("ETag") == before.header("ETag")
    assert (await admin.get(f"/api/image/{image_id}/detail")).json()["focalPoint"] is None


@pytest_twisted.ensureDeferred
async def test_focal_point_edits_are_checked_and_for_the_owner(daemon):  # noqa: F811
    server = await daemon()
    admin = await server.admin()
    image_id = await upload(admin, image_bytes("PNG", (60, 40)))
    for bad in ({"x": 1.5, "y": 0.5}, {"x": "0.5", "y": 0.5}, {"x": 0.5}, {"x": True, "y": 0},
                [0.5, 0.5], "middle", {"x": 0.5, "y": -0.1}):
        response = await admin.post_json(f"/api/image/{image_id}", {"focalPoint": bad},
                                         method="PATCH")
        assert response.code == 422, bad
        [violation] = response.json()["error"]["violations"]
        assert violation["property"] == "focalPoint"
    await admin.post_json("/api/settings", {"category": "access",
                                            "settings": {"allowRegistration": True}})
    signup = {"email": "eve@example.com", "username": "eve", "password": "eve-password-1",
              "confirm": "eve-password-1"}
    assert (await server.client.post_json("/api/auth/signup", signup)).code == 201
    eve = server.client.with_token((await server.client.login("eve", "eve-password-1"))
                                   ["access_token"])
    forged = await eve.post_json(f"/api/image/{image_id}", {"focalPoint": {"x": 0, "y": 0}},
                                 method="PATCH")
    assert forged.code in (403, 404)
    assert (await admin.get(f"/api/image/{image_id}/detail")).json()["focalPoint"] is None


# -- placeholders ---------------------------------------------------------------------------


def _placeholder_shape(placeholder) -> None:
    assert re.fullmatch(r"[0-9A-Za-z#$%*+,\-.:;=?@\[\]^_{|}~]{20,64}", placeholder["blurhash"])
    assert re.fullmatch(r"#[0-9a-f]{6}", placeholder["dominantColor"])


def _pattern(width: int, height: int) -> Image.Image:
    """Red across, green down, blue from x times y: every pixel set by a formula."""
    return Image.frombytes("RGB", (width, height), bytes(
        value for y in range(height) for x in range(width)
        for value in (x * 255 // (width - 1), y * 255 // (height - 1), (x * y) % 256)))


@pytest.mark.parametrize(("size", "orientation", "expected"), [
    ((64, 40), 1, "L$HVCt2U$2Scl]axjrf6gZfhfRfk"),
    ((30, 64), 1, "T$HeqB2nwuhkadjsgZfifRi_ayjv"),
    ((64, 40), 6, "T-HVCtqAgZ2UbIfi$2jufRSdfkfk"),  # turned upright: 40 x 64
    ((640, 400), 1, "L$HV9X2Y$5Sgl|azjtf7gIfjfQfj"),  # reduced to 64 x 40 first
])
def test_the_blurhash_of_a_fixed_picture_stays_what_it_was(size, orientation, expected):
    # Pinned from blurhash.encode (blurhash-python 1.2.2) as it was first called: stored
    # placeholders must keep matching the ones new uploads get. And no deprecated Pillow
    # call on the way (blurhash.encode's Image.getdata goes in Pillow 14).
    small = placeholders.sample(_pattern(*size))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        assert placeholders.compute(small, orientation).blurhash == expected


@pytest_twisted.ensureDeferred
async def test_every_upload_has_a_stable_placeholder_in_details_and_lists(daemon):  # noqa: F811
    server = await daemon()
    admin = await server.admin()
    red = image_bytes("PNG", (120, 80), color=(200, 30, 30))
    first = await upload(admin, red, public=True)
    second = await upload(admin, red, public=True)
    blue = await upload(admin, image_bytes("JPEG", (80, 120), color=(20, 40, 220)), public=True)

    details = {i: (await admin.get(f"/api/image/{i}/detail")).json()["placeholder"]
               for i in (first, second, blue)}
    for placeholder in details.values():
        _placeholder_shape(placeholder)
    assert details[first] == details[second]  # same pixels, same placeholder
    assert details[first]["dominantColor"] == "#c81e1e"
    assert details[blue] != details[first]
    red_, green, blue_ = (int(details[blue]["dominantColor"][i:i + 2], 16) for i in (1, 3, 5))
    assert blue_ > 180 and red_ < 60 and green < 80

    feed = (await admin.get("/api/images/1")).json()["data"]
    history = (await admin.get("/api/images/history/1")).json()["data"]
    by_id = (await admin.get(f"/api/images?uuid[]={first}&uuid[]={blue}")).json()
    for items in (feed, history, by_id):
        for item in items:
            assert item["placeholder"] == details[item["id"]]


@pytest_twisted.ensureDeferred
async def test_the_backfill_gives_older_images_their_placeholder(daemon):  # noqa: F811
    server = await daemon()
    admin = await server.admin()
    ids = [await upload(admin, image_bytes("PNG", (90, 60), color=(10, 160, 90))),
           await upload(admin, image_bytes("JPEG", (300, 200), color=(250, 200, 0)))]
    expected = {i: (await admin.get(f"/api/image/{i}/detail")).json()["placeholder"]
                for i in ids}

    def forget_placeholders(conn):
        from imagehost.db.schema import images

        conn.execute(images.update().values(blurhash=None, dominant_color=None))

    await server.db.run(forget_placeholders)
    assert (await admin.get(f"/api/image/{ids[0]}/detail")).json()["placeholder"] is None
    report = await local_cli(server).json("placeholders")
    assert report == {"computed": 2, "failed": []}
    for image_id in ids:
        detail = (await admin.get(f"/api/image/{image_id}/detail")).json()
        assert detail["placeholder"] == expected[image_id]
    again = await local_cli(server).json("placeholders")
    assert again == {"computed": 0, "failed": []}
