"""HEIC/HEIF uploads (what phones send) through pillow-heif, over the real daemon: accepted,
probed with the same limits, served as browser formats, the original downloadable."""

from __future__ import annotations

import io

import pillow_heif
import pytest
import pytest_twisted
from PIL import Image

from tests.conftest import image_bytes
from tests.test_delivery_features import daemon, decoded, upload  # noqa: F401 - the fixture


def heic_bytes(size: tuple[int, int] = (320, 240), color=(30, 140, 200)) -> bytes:
    """A real HEIC file, encoded by the plugin (libheif with x265)."""
    im = Image.new("RGB", size, color)
    buffer = io.BytesIO()
    pillow_heif.from_pillow(im).save(buffer, format="HEIF", quality=90)
    return buffer.getvalue()


@pytest_twisted.ensureDeferred
async def test_a_heic_upload_is_served_as_browser_formats(daemon):  # noqa: F811
    server = await daemon()
    admin = await server.admin()
    client = server.client
    original = heic_bytes()
    assert original[4:12] == b"ftypheic"
    image_id = await upload(admin, original)

    detail = (await admin.get(f"/api/image/{image_id}/detail")).json()
    assert (detail["mimeType"], detail["width"], detail["height"]) == ("image/heic", 320, 240)
    assert detail["fileName"] == f"{image_id}.heic"
    assert detail["url"] == f"/image/{image_id}.jpg"  # what a browser can display
    shown = await client.get(detail["url"])
    assert shown.header("Content-Type") == "image/jpeg"
    assert decoded(shown.body).size == (320, 240)
    red, green, blue = decoded(shown.body).convert("RGB").getpixel((160, 120))
    assert abs(red - 30) < 12 and abs(green - 140) < 12 and abs(blue - 200) < 12

    for ext, mime in (("webp", "image/webp"), ("avif", "image/avif"), ("png", "image/png")):
        variant = await client.get(f"/image/{image_id}.{ext}?w=100")
        assert variant.code == 200 and variant.header("Content-Type") == mime, ext
        assert decoded(variant.body).size == (100, 75)
    thumbnail = await client.get(f"/image/{image_id}_thumbnail.jpg")
    assert decoded(thumbnail.body).size == (240, 240)
    auto = await client.get(f"/image/{image_id}.auto", headers={"Accept": "*/*"})
    assert auto.header("Content-Type") == "image/jpeg"  # JPEG for HEIC, not the original

    # The original's bytes stay downloadable, and only as themselves.
    download = await client.get(f"/image/{image_id}.heic")
    assert download.body == original and download.header("Content-Type") == "image/heic"
    assert (await client.get(f"/image/{image_id}.heic?w=100")).code == 400
    made = (await admin.get(f"/api/image/{image_id}/url?format=heic")).json()["url"]
    assert made == f"/image/{image_id}.heic"
    jpeg_id = await upload(admin, image_bytes())
    assert (await client.get(f"/image/{jpeg_id}.heic")).code == 404


@pytest_twisted.ensureDeferred
async def test_heic_uploads_obey_the_same_limits(daemon):  # noqa: F811
    server = await daemon({"image": {"max_pixels": "10000"}})
    admin = await server.admin()
    too_big = await admin.upload("/api/upload", heic_bytes((200, 100)))
    assert too_big.code == 422
    [violation] = too_big.json()["error"]["violations"]
    assert violation["message"] == ("The image has too many pixels (20000 pixels). "
                                    "Maximum amount expected is 10000 pixels.")
    truncated = await admin.upload("/api/upload", heic_bytes((80, 60))[:-200])
    assert truncated.code == 422
    assert truncated.json()["error"]["violations"][0]["message"] in (
        "The image file is corrupted.",)


@pytest_twisted.ensureDeferred
async def test_an_operator_can_refuse_heic(daemon):  # noqa: F811
    server = await daemon({"image": {"allowed_mime_types": "image/jpeg, image/png"}})
    admin = await server.admin()
    refused = await admin.upload("/api/upload", heic_bytes((40, 30)))
    assert refused.code == 422
    message = refused.json()["error"]["violations"][0]["message"]
    assert message.startswith('The mime type of the file is invalid ("image/heic").')


@pytest.mark.parametrize("size", [(64, 48)])
def test_the_probe_reads_heic_with_the_plugin(size):
    from imagehost.imaging.probe import SourceLimits, probe

    info = probe(heic_bytes(size), SourceLimits())
    assert (info.format, info.mime_type, info.ext, info.width, info.height) == (
        "HEIF", "image/heic", "heic", *size)
    assert info.placeholder is not None


def test_the_plugin_loads_only_when_a_heif_file_turns_up():
    import subprocess
    import sys

    script = (
        "import sys, io\n"
        "from imagehost.imaging.probe import SourceLimits, probe\n"
        "from imagehost.imaging import render\n"
        "from PIL import Image\n"
        "png = io.BytesIO(); Image.new('RGB', (8, 8)).save(png, 'PNG')\n"
        "probe(png.getvalue(), SourceLimits())\n"
        "print('pillow_heif' in sys.modules)\n"
        "probe(sys.stdin.buffer.read(), SourceLimits())\n"
        "print('pillow_heif' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], input=heic_bytes((16, 16)),
                          capture_output=True, check=True)
    assert done.stdout.split() == [b"False", b"True"]
