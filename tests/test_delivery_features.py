"""Delivery beyond plain resizes, over the real daemon: signed URLs, presets, ``.auto``,
DPR, smart crops and focal points (issue 15)."""

from __future__ import annotations

import html
import io
import re
import shutil

import pytest
import pytest_twisted
from PIL import Image, ImageDraw

from tests.conftest import image_bytes, start_server

CHROME_ACCEPT = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"


@pytest_twisted.async_yield_fixture
async def daemon(tmp_path, reactor, database_url):
    """Start daemons with extra config sections (each in its own folder, on the test's
    database); all are stopped after the test."""
    started = []

    async def start(sections: dict | None = None, name: str = "a"):
        sections = {section: dict(values) for section, values in (sections or {}).items()}
        if database_url:
            sections.setdefault("database", {})["url"] = database_url
        folder = tmp_path / name
        folder.mkdir(exist_ok=True)
        started.append(await start_server(folder, reactor, sections))
        return started[-1]

    yield start
    for running in started:
        if running.service.running:
            await running.service.stopService()


def decoded(body: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(body))
    im.load()
    return im


async def upload(client, data: bytes, public: bool = False) -> str:
    fields = {"isPublic": "true"} if public else None
    response = await client.upload("/api/upload", data, fields=fields)
    assert response.code == 201, response.body
    return response.json()["id"]


async def signed(admin, image_id: str, query: str = "") -> str:
    response = await admin.get(f"/api/image/{image_id}/url{query}")
    assert response.code == 200, response.body
    return response.json()["url"]


def with_signature(url: str, signature: str) -> str:
    return re.sub(r"s=[^&]+", f"s={signature}", url)


def signature_of(url: str) -> str:
    return re.search(r"s=([^&]+)", url)[1]


def assert_forbidden(response, title: str) -> None:
    assert response.code == 403, response.body
    assert response.json()["error"]["title"] == title


# -- signatures ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_transforms_need_a_signature_the_api_hands_out(daemon):
    server = await daemon({"delivery": {"require_signature": "transforms"},
                           "presets": {"small": "w=20"}})
    admin = await server.admin()
    client = server.client
    image_id = await upload(admin, image_bytes("PNG", (200, 100)))
    other_id = await upload(admin, image_bytes("PNG", (200, 100), color=(0, 0, 255)))

    # The seed's plain URLs and the thumbnail need no signature; a preset alone neither.
    for path in (f"/image/{image_id}.png", f"/image/{image_id}.jpg",
                 f"/api/image/{image_id}_thumbnail.png", f"/image/{image_id}.png?p=small"):
        assert (await client.get(path)).code == 200, path
    assert_forbidden(await client.get(f"/image/{image_id}.png?w=50"), "SignatureInvalid")

    url = await signed(admin, image_id, "?w=50&crop=true&h=50")
    assert url.startswith(f"/image/{image_id}.png?crop=true&h=50&w=50&s=")
    response = await client.get(url)
    assert response.code == 200 and decoded(response.body).size == (50, 50)
    # Aliases and parameter order do not matter, cache busters are not signed.
    signature = signature_of(url)
    for same in (f"/image/{image_id}.png?width=50&height=50&crop=true&s={signature}",
                 f"/api/image/{image_id}.png?w=50&h=50&crop=true&v=2&s={signature}"):
        assert (await client.get(same)).code == 200, same

    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    assert_forbidden(await client.get(with_signature(url, flipped)), "SignatureInvalid")
    assert_forbidden(await client.get(url.replace("w=50", "w=51")), "SignatureInvalid")
    assert_forbidden(await client.get(url.replace(".png", ".webp")), "SignatureInvalid")
    assert_forbidden(await client.get(url.replace(image_id, other_id)), "SignatureInvalid")
    assert_forbidden(await client.get(f"{url}&s=other"), "SignatureInvalid")
    # Never a silent fallback: the 403 is the envelope, not the original's bytes.
    refused = await client.get(f"/image/{image_id}.png?w=50&s=")
    assert refused.json()["error"]["message"].startswith("This image URL must be signed")

    # The URL endpoint validates like the image URL and is for the owner or an admin.
    assert (await admin.get(f"/api/image/{image_id}/url?w=0")).code == 400
    assert (await client.get(f"/api/image/{image_id}/url?w=10")).code == 401
    webp = await signed(admin, image_id, "?w=30&format=webp&dpr=2")
    assert webp.startswith(f"/image/{image_id}.webp?dpr=2&w=30&s=")
    rendered = await client.get(webp)
    assert rendered.header("Content-Type") == "image/webp"
    assert decoded(rendered.body).size == (60, 30)


@pytest_twisted.ensureDeferred
async def test_all_mode_signs_every_url_the_api_and_the_pages_give(daemon):
    server = await daemon({"delivery": {"require_signature": "all"}})
    admin = await server.admin()
    client = server.client
    image_id = await upload(admin, image_bytes("PNG", (800, 400)), public=True)

    assert_forbidden(await client.get(f"/image/{image_id}.png"), "SignatureInvalid")
    assert_forbidden(await client.get(f"/image/{image_id}_thumbnail.png"), "SignatureInvalid")
    detail = (await admin.get(f"/api/image/{image_id}/detail")).json()
    assert "?s=" in detail["url"]
    assert (await client.get(detail["url"])).code == 200

    page = (await client.get(f"/i/{image_id}")).body.decode()
    page = html.unescape(html.unescape(page))  # the copy fields' HTML snippet, in JSON
    paths = set(re.findall(r"/image/[\w.-]+(?:\?[\w=.,%-]+(?:&[\w=.,%-]+)*)?", page))
    assert len(paths) >= 3, paths  # the preview's srcset, the original, the copy fields
    for path in paths:
        assert "s=" in path and (await client.get(path)).code == 200, path


@pytest_twisted.ensureDeferred
async def test_a_second_daemon_verifies_the_first_daemons_urls(daemon, tmp_path,
                                                               database_url):
    first = await daemon({"delivery": {"require_signature": "transforms"}}, name="a")
    admin = await first.admin()
    image_id = await upload(admin, image_bytes("PNG", (200, 100)))
    url = await signed(admin, image_id, "?w=40")
    database = {"url": f"sqlite:///{first.data_dir / 'imagehost.db'}"}

    async def other_daemon(name: str, key_file: str):
        sections = {"delivery": {"require_signature": "transforms",
                                 "signing_secret_file": key_file}}
        if not database_url:
            sections["database"] = database
        shutil.copytree(first.data_dir / "originals", tmp_path / name / "data" / "originals")
        return await daemon(sections, name=name)

    shared = await other_daemon("b", str(first.data_dir / "url-signing.key"))
    response = await shared.client.get(url)
    assert response.code == 200, response.body
    assert decoded(response.body).width == 40
    own_key = await other_daemon("c", "")
    assert_forbidden(await own_key.client.get(url), "SignatureInvalid")


# -- presets -------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_presets_only_refuses_every_other_transform(daemon):
    server = await daemon({"delivery": {"presets_only": "true"},
                           "presets": {"card": "w=40,h=20,crop=smart,format=jpg,q=82",
                                       "thumbnail": "w=64,h=32,crop=true"}})
    admin = await server.admin()
    client = server.client
    image_id = await upload(admin, image_bytes("PNG", (200, 100)))

    card = await client.get(f"/image/{image_id}.png?p=card")
    assert card.code == 200 and card.header("Content-Type") == "image/jpeg"
    assert decoded(card.body).size == (40, 20)
    # _thumbnail is the thumbnail preset, as the operator defined it.
    thumbnail = await client.get(f"/image/{image_id}_thumbnail.png")
    assert decoded(thumbnail.body).size == (64, 32)
    assert (await client.get(f"/image/{image_id}.webp")).code == 200  # the extension
    for path in (f"/image/{image_id}.png?w=50", f"/image/{image_id}.png?p=card&q=10",
                 f"/image/{image_id}_thumbnail.png?q=50", f"/image/{image_id}.png?dpr=2"):
        assert_forbidden(await client.get(path), "TransformNotAllowed")
    # Signed or not: the API refuses to make such a URL too.
    assert_forbidden(await admin.get(f"/api/image/{image_id}/url?w=50"), "TransformNotAllowed")
    assert (await signed(admin, image_id, "?p=card")) == f"/image/{image_id}.png?p=card"
    assert (await client.get(f"/image/{image_id}.png?p=nothing")).code == 400


@pytest_twisted.ensureDeferred
async def test_a_preset_sets_what_it_names_and_the_url_may_add_the_rest(daemon):
    server = await daemon({"presets": {"wide": "w=100"}})
    admin = await server.admin()
    image_id = await upload(admin, image_bytes("PNG", (400, 200)))
    client = server.client
    preset = await client.get(f"/image/{image_id}.png?p=wide&w=10&dpr=2")
    plain = await client.get(f"/image/{image_id}.png?w=200")
    assert decoded(preset.body).size == (200, 100)
    assert preset.header("ETag") == plain.header("ETag")  # one variant, one cache file


def test_a_bad_preset_stops_the_daemon_with_one_line(tmp_path, reactor):
    from imagehost.tap import Options, makeService
    from tests.conftest import write_ini

    config = write_ini(tmp_path / "bad.ini", {"presets": {"card": "w=0,h=10"}})
    options = Options()
    options.parseOptions(["--data-dir", str(tmp_path / "data"), "--config", str(config)])
    with pytest.raises(SystemExit) as caught:
        makeService(options, reactor)
    assert str(caught.value) == 'imagehost: [presets] card: "w" must be an integer from 1 to 16384.'


# -- negotiated format ----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_auto_picks_the_format_from_accept_and_varies_on_it(daemon):
    server = await daemon({"delivery": {"auto_avif": "true"}})
    admin = await server.admin()
    client = server.client
    image_id = await upload(admin, image_bytes("PNG", (120, 80)))
    auto = f"/image/{image_id}.auto?w=60"

    expected = {CHROME_ACCEPT: "image/avif",
                "image/webp,*/*": "image/webp",
                "image/avif;q=0,image/webp": "image/webp",
                "image/webp;q=0,image/*,*/*;q=0.8": "image/png",
                "*/*": "image/png",
                "": "image/png"}
    etags = {}
    for accept, content_type in expected.items():
        response = await client.get(auto, headers={"Accept": accept} if accept else {})
        assert response.code == 200, (accept, response.body)
        assert response.header("Content-Type") == content_type, accept
        assert response.header("Vary") == "Accept"
        assert decoded(response.body).width == 60
        etags.setdefault(content_type, set()).add(response.header("ETag"))
    assert all(len(tags) == 1 for tags in etags.values())
    assert len({tag for tags in etags.values() for tag in tags}) == 3  # one per format

    webp = {"Accept": "image/webp"}
    again = await client.get(auto, headers=webp)
    assert again.header("X-Cache") == "HIT"  # each chosen format is its own cached variant
    etag = again.header("ETag")
    not_modified = await client.get(auto, headers={**webp, "If-None-Match": etag})
    assert not_modified.code == 304 and not_modified.header("Vary") == "Accept"
    changed = await client.get(auto, headers={"Accept": "*/*", "If-None-Match": etag})
    assert changed.code == 200 and changed.header("Content-Type") == "image/png"
    # format=auto is the same negotiation; a fixed extension does not vary.
    query_form = await client.get(f"/image/{image_id}.jpg?w=60&format=auto", headers=webp)
    assert query_form.header("ETag") == etag
    fixed = await client.get(f"/image/{image_id}.png?w=60", headers=webp)
    assert fixed.header("Vary") is None and fixed.header("Content-Type") == "image/png"
    # Without a transform and without WebP, .auto is the stored original itself.
    original = await client.get(f"/image/{image_id}.auto", headers={"Accept": "*/*"})
    assert original.body == (await client.get(f"/image/{image_id}.png")).body


@pytest_twisted.ensureDeferred
async def test_auto_without_avif_enabled_serves_webp(daemon):
    server = await daemon()
    admin = await server.admin()
    image_id = await upload(admin, image_bytes("JPEG", (120, 80)))
    response = await server.client.get(f"/image/{image_id}.auto",
                                       headers={"Accept": CHROME_ACCEPT})
    assert response.header("Content-Type") == "image/webp"
    jpeg = await server.client.get(f"/image/{image_id}.auto", headers={"Accept": "*/*"})
    assert jpeg.header("Content-Type") == "image/jpeg"


# -- density ------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_dpr_multiplies_the_size_within_the_maximum(daemon):
    server = await daemon({"image": {"max_dimension": "100"}})
    admin = await server.admin()
    client = server.client
    image_id = await upload(admin, image_bytes("PNG", (400, 300)))

    async def size(query: str) -> tuple[int, int]:
        response = await client.get(f"/image/{image_id}.png?{query}")
        assert response.code == 200, (query, response.body)
        return decoded(response.body).size

    assert await size("w=40&dpr=2") == (80, 60)
    assert await size("w=40&dpr=1.5") == (60, 45)
    assert await size("w=80&dpr=2") == (100, 75)  # bounded by [image] max_dimension
    assert await size("w=20&h=20&crop=true&dpr=4") == (80, 80)
    doubled = await client.get(f"/image/{image_id}.png?w=40&dpr=2")
    plain = await client.get(f"/image/{image_id}.png?w=80")
    assert doubled.header("ETag") == plain.header("ETag")
    for bad in ("dpr=0", "dpr=5", "dpr=4.5", "dpr=x", "dpr=2%0A", "dpr=1.25", "w=101&dpr=1"):
        response = await client.get(f"/image/{image_id}.png?w=40&{bad}")
        assert response.code == 400, bad
        assert "error" in response.json()


# -- smart crops and focal points ---------------------------------------------------------


def subject_on_flat_ground(size: tuple[int, int], box: tuple[int, int, int, int]) -> bytes:
    """A flat grey image with a detailed subject (a checkerboard) inside ``box``."""
    im = Image.new("RGB", size, (128, 128, 128))
    draw = ImageDraw.Draw(im)
    left, top, right, bottom = box
    for y in range(top, bottom, 10):
        for x in range(left, right, 10):
            dark = ((x - left) // 10 + (y - top) // 10) % 2
            draw.rectangle((x, y, min(x + 9, right - 1), min(y + 9, bottom - 1)),
                           fill=(20, 20, 20) if dark else (240, 240, 240))
    buffer = io.BytesIO()
    im.save(buffer, "PNG")
    return buffer.getvalue()


def subject_box(body: bytes) -> tuple[int, int, int, int] | None:
    """Where in a rendered variant the pixels differ from the flat ground."""
    im = decoded(body).convert("L")
    ground = Image.new("L", im.size, 128)
    from PIL import ImageChops

    return ImageChops.difference(im, ground).point(lambda v: 255 if v > 40 else 0).getbbox()


@pytest_twisted.ensureDeferred
async def test_smart_crop_keeps_an_off_centre_subject_a_centre_crop_cuts(daemon):
    server = await daemon()
    admin = await server.admin()
    client = server.client
    wide = await upload(admin, subject_on_flat_ground((600, 200), (20, 40, 140, 160)))
    tall = await upload(admin, subject_on_flat_ground((200, 600), (50, 430, 150, 580)))

    centre = await client.get(f"/image/{wide}.png?w=200&h=200&crop=true")
    assert subject_box(centre.body) is None  # the centre window holds none of it
    for query in ("w=200&h=200&crop=smart", "w=200&h=200&gravity=smart", "w=100&h=100&"
                  "crop=smart"):
        smart = await client.get(f"/image/{wide}.png?{query}")
        scale = decoded(smart.body).width / 200
        left, top, right, bottom = subject_box(smart.body)
        assert (right - left) == pytest.approx(120 * scale, abs=2), query  # all of it
        assert (bottom - top) == pytest.approx(120 * scale, abs=2), query

    centre = await client.get(f"/image/{tall}.png?w=200&h=200&crop=true")
    assert subject_box(centre.body) is None
    smart = await client.get(f"/image/{tall}.png?w=200&h=200&crop=smart")
    left, top, right, bottom = subject_box(smart.body)
    assert (right - left, bottom - top) == (100, 150)
    # A flat image has no preferred window: smart is the centre crop's pixels.
    flat = await upload(admin, image_bytes("PNG", (300, 100)))
    flat_smart = await client.get(f"/image/{flat}.png?w=100&h=100&crop=smart")
    flat_centre = await client.get(f"/image/{flat}.png?w=100&h=100&crop=true")
    assert decoded(flat_smart.body).tobytes() == decoded(flat_centre.body).tobytes()


@pytest_twisted.ensureDeferred
async def test_a_focal_point_places_the_crop_and_keys_the_variant(daemon):
    server = await daemon()
    admin = await server.admin()
    client = server.client
    image_id = await upload(admin, subject_on_flat_ground((600, 200), (20, 40, 140, 160)))

    near = await client.get(f"/image/{image_id}.png?w=200&h=200&fp=0.1,0.5")
    assert subject_box(near.body) == (20, 40, 140, 160)  # window clamped to the left edge
    far = await client.get(f"/image/{image_id}.png?w=200&h=200&fp=0.9,0.5")
    assert subject_box(far.body) is None
    etags = {near.header("ETag"), far.header("ETag")}
    for query in ("w=200&h=200&crop=true", "w=200&h=200&crop=smart"):
        etags.add((await client.get(f"/image/{image_id}.png?{query}")).header("ETag"))
    assert len(etags) == 4
    # fp implies a crop; with one side given that is a square, shrunk to fit the source.
    square = await client.get(f"/image/{image_id}.png?w=300&fp=0.1,0.5")
    assert subject_box(square.body) == (20, 40, 140, 160)


def test_smart_anchor_follows_exif_orientation():
    from imagehost.imaging.orientation import TRANSPOSE_BY_ORIENTATION
    from imagehost.imaging.smartcrop import stored_anchor

    stored = Image.new("L", (40, 20), 0)
    stored.putpixel((30, 5), 255)  # at (0.7625, 0.275) of the stored pixels
    point = ((30 + 0.5) / 40, (5 + 0.5) / 20)
    for orientation, transpose in TRANSPOSE_BY_ORIENTATION.items():
        shown = stored.transpose(transpose)
        x, y = shown.getbbox()[:2]
        display = ((x + 0.5) / shown.width, (y + 0.5) / shown.height)
        assert stored_anchor(display, orientation) == pytest.approx(point), orientation
