"""Scale-out: two daemons on one PostgreSQL database and one S3 bucket.

S3 is moto's server mode: a real S3-protocol HTTP server on 127.0.0.1, reached with a
custom endpoint and path-style addressing as MinIO or Ceph would be. Each daemon has its
own data directory (its own variant cache) and both share one JWT secret file.
"""

from __future__ import annotations

import io
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_twisted
import sqlalchemy as sa
from PIL import Image

from tests import cli_support  # noqa: F401  (registers imagehost_cli)
from tests.conftest import Client, Server, image_bytes, start_server
from tests.test_cli import local_cli

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

REVALIDATE_AFTER = 1.0
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing",
               "region_name": "us-east-1"}


@pytest.fixture(scope="session")
def s3_endpoint():
    """An S3-protocol server (moto) for the session; yields its endpoint URL."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def s3_client(endpoint: str):
    from botocore.config import Config

    return boto3.session.Session().client("s3", endpoint_url=endpoint, **CREDENTIALS,
                                          config=Config(s3={"addressing_style": "path"}))


@pytest.fixture
def bucket(s3_endpoint) -> str:
    name = f"imagehost-{uuid.uuid4().hex[:12]}"
    s3_client(s3_endpoint).create_bucket(Bucket=name)
    return name


def keys(endpoint: str, bucket: str, prefix: str = "") -> set[str]:
    listed = s3_client(endpoint).list_objects_v2(Bucket=bucket, Prefix=prefix)
    return {obj["Key"] for obj in listed.get("Contents", ())}


def s3_sections(endpoint: str, bucket: str) -> dict[str, dict[str, str]]:
    return {"storage": {"backend": "s3", "s3_bucket": bucket, "s3_endpoint_url": endpoint,
                        "s3_region": "us-east-1", "s3_access_key": "testing",
                        "s3_secret_key": "testing", "s3_path_style": "true"}}


@dataclass
class Pair:
    """Two daemons of one installation."""

    a: Server
    b: Server
    database_url: str
    endpoint: str
    bucket: str

    @property
    def daemons(self) -> tuple[Server, Server]:
        return self.a, self.b


@pytest_twisted.async_yield_fixture
async def pair(tmp_path, reactor, postgres, s3_endpoint, bucket):
    with postgres.database() as url:
        sections = {**s3_sections(s3_endpoint, bucket),
                    "database": {"url": url},
                    "auth": {"secret_file": str(tmp_path / "shared-secret.key")},
                    "cache": {"revalidate_after": str(REVALIDATE_AFTER)}}
        servers = []
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            servers.append(await start_server(tmp_path / name, reactor, sections))
        yield Pair(*servers, url, s3_endpoint, bucket)
        for server in servers:
            if server.service.running:
                await server.service.stopService()


async def upload(client: Client, data: bytes, path: str = "/api/upload", **kwargs) -> str:
    response = await client.upload(path, data, **kwargs)
    assert response.code == 201, response.body
    return response.json()["id"]


async def sleep(reactor, seconds: float) -> None:
    from twisted.internet.task import deferLater

    await deferLater(reactor, seconds, lambda: None)


async def eventually(reactor, condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await sleep(reactor, 0.05)


def width_of(data: bytes) -> int:
    return Image.open(io.BytesIO(data)).width


# -- one library, two daemons ------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_upload_on_one_daemon_then_list_render_edit_delete_on_the_other(pair, reactor):
    a_admin = await pair.a.admin()
    # One shared secret: a token issued by A is good on B.
    b_admin = pair.b.client.with_token(a_admin.token)
    original = image_bytes("JPEG", (640, 480))
    image_id = await upload(a_admin, original, fields={"description": "from a"})

    # The original is in the bucket, not in either data directory.
    assert keys(pair.endpoint, pair.bucket, "originals/") == {
        f"originals/{image_id[0:2]}/{image_id[2:4]}/{image_id}.jpg"}
    for daemon in pair.daemons:
        assert not (daemon.data_dir / "originals").exists() or not any(
            (daemon.data_dir / "originals").rglob("*.jpg"))

    detail = await b_admin.get(f"/api/image/{image_id}/detail")
    assert detail.code == 200 and detail.json()["description"] == "from a"
    history = await b_admin.get("/api/images/history/1")
    assert [item["id"] for item in history.json()["data"]] == [image_id]

    served = await pair.b.client.get(f"/image/{image_id}.jpg")
    assert (served.code, served.body) == (200, original)

    # A rendered the thumbnail after the upload and shared it: B serves it from the bucket.
    await pair.a.imagehost.delivery.rendered_ahead(image_id)
    assert pair.a.imagehost.delivery.eager_renders == 1
    await eventually(reactor, lambda: keys(pair.endpoint, pair.bucket,
                                           f"variants/{image_id}/") == {
        f"variants/{image_id}/r1-300x300-c-q85.jpg"})
    thumbnail = await pair.b.client.get(f"/image/{image_id}_thumbnail.jpg")
    assert (thumbnail.code, thumbnail.header("X-Cache")) == (200, "SHARED")

    # B renders and shares the variant; A takes it from the bucket without rendering.
    url = f"/image/{image_id}.webp?w=100"
    on_b = await pair.b.client.get(url)
    assert (on_b.code, on_b.header("X-Cache")) == (200, "MISS")
    assert width_of(on_b.body) == 100
    # Sharing does not hold up the answer: the object arrives in the bucket just after.
    await eventually(reactor, lambda: len(
        keys(pair.endpoint, pair.bucket, f"variants/{image_id}/")) == 2)
    on_a = await pair.a.client.get(url)
    assert (on_a.code, on_a.header("X-Cache"), on_a.body) == (200, "SHARED", on_b.body)
    assert (pair.a.imagehost.delivery.renders, pair.a.imagehost.delivery.shared_hits) == (0, 1)
    assert (await pair.a.client.get(url)).header("X-Cache") == "HIT"

    edited = await b_admin.post_json(f"/api/image/{image_id}", {"description": "by b"},
                                     method="PATCH")
    assert edited.code == 204, edited.body
    detail = await a_admin.get(f"/api/image/{image_id}/detail")
    assert detail.json()["description"] == "by b"

    deleted = await b_admin.request("DELETE", f"/api/image/{image_id}")
    assert deleted.code == 204, deleted.body
    assert keys(pair.endpoint, pair.bucket) == set()
    assert (await pair.a.client.get(f"/image/{image_id}.jpg")).code == 404
    assert (await pair.a.client.get(f"/image/{image_id}.png?w=30")).code == 404
    assert (await a_admin.get(f"/api/image/{image_id}/detail")).code == 404


@pytest_twisted.ensureDeferred
async def test_delete_through_one_daemon_reaches_the_others_cached_variant_in_bound(
        pair, reactor):
    a_admin = await pair.a.admin()
    image_id = await upload(a_admin, image_bytes("PNG", (300, 200)))
    url = f"/image/{image_id}_thumbnail.jpg"
    assert (await pair.b.client.get(url)).header("X-Cache") == "MISS"
    assert (await pair.b.client.get(url)).header("X-Cache") == "HIT"
    await pair.b.imagehost.delivery.written()
    assert any(pair.b.imagehost.storage.variants_dir(image_id).iterdir())

    deleted_at = time.monotonic()
    deleted = await a_admin.request("DELETE", f"/api/image/{image_id}")
    assert deleted.code == 204, deleted.body
    # Anything that is not a hit in B's own cache asks the database: 404 at once.
    assert (await pair.b.client.get(f"/image/{image_id}.png")).code == 404
    assert (await pair.b.client.get(f"/image/{image_id}.jpg?w=10")).code == 404
    # B's cached variant is answered for at most revalidate_after seconds: a request
    # sent later gets a 404, however late a busy machine delivers the answer.
    while True:
        sent = time.monotonic()
        if (await pair.b.client.get(url)).code != 200:
            break
        assert sent - deleted_at < REVALIDATE_AFTER + 0.1
        await sleep(reactor, 0.05)
    assert (await pair.b.client.get(url)).code == 404


@pytest_twisted.ensureDeferred
async def test_revoking_or_expiring_a_share_on_one_daemon_ends_it_on_the_other_at_once(pair):
    from tests.test_shares import expire

    a_admin = await pair.a.admin()
    image_id = await upload(a_admin, image_bytes("PNG", (60, 40)),
                            fields={"isPublic": "false"})
    codes = []
    for _ in range(2):
        created = await a_admin.post_json("/api/shares", {"imageId": image_id})
        assert created.code == 201, created.body
        codes.append(created.json()["code"])
    revoked, expiring = codes
    for code in codes:  # B has served (and cached) both
        assert (await pair.b.client.get(f"/s/{code}")).code == 200
        assert (await pair.b.client.get(f"/s/{code}/image.png")).code == 200

    assert (await a_admin.request("DELETE", f"/api/share/{revoked}")).code == 204
    await expire(pair.a, expiring)
    assert (await pair.b.client.get(f"/s/{revoked}")).code == 404
    assert (await pair.b.client.get(f"/s/{revoked}/image.png")).code == 404
    assert (await pair.b.client.get(f"/s/{expiring}")).code == 410
    assert (await pair.b.client.get(f"/s/{expiring}/image.png")).code == 410


@pytest_twisted.ensureDeferred
async def test_an_expired_image_is_404_on_the_other_daemon_at_once(pair, reactor):
    from datetime import UTC, datetime

    from imagehost.db.images import image_by_id

    a_admin = await pair.a.admin()
    image_id = await upload(a_admin, image_bytes("PNG", (60, 40)), fields={"expiresIn": "4"})
    expiry = (await pair.a.db.run(image_by_id, image_id)).expires_at
    url = f"/image/{image_id}_thumbnail.jpg"
    assert (await pair.b.client.get(url)).code == 200
    assert (await pair.b.client.get(url)).header("X-Cache") == "HIT"  # remembered on B
    while datetime.now(UTC) < expiry:
        await sleep(reactor, 0.1)
    # No revalidation bound: B checks the expiry it remembered itself.
    assert (await pair.b.client.get(url)).code == 404
    assert (await pair.b.client.get(f"/image/{image_id}.png")).code == 404
    swept = await pair.b.imagehost.expired.sweep()
    assert swept == [image_id]
    assert keys(pair.endpoint, pair.bucket, "originals/") == set()


@pytest_twisted.ensureDeferred
async def test_guest_toggle_from_the_cli_reaches_both_daemons(pair):
    cmd = local_cli(pair.a)
    for daemon in pair.daemons:
        assert (await daemon.client.upload("/api/guest/upload", image_bytes())).code == 403
    assert await cmd.json("guest", "enable") == {"allowGuestUploads": True}
    for daemon in pair.daemons:
        await upload(daemon.client, image_bytes(), path="/api/guest/upload")
    await cmd.ok("guest", "disable")
    for daemon in pair.daemons:
        assert (await daemon.client.upload("/api/guest/upload", image_bytes())).code == 403


@pytest_twisted.ensureDeferred
async def test_views_counted_by_both_daemons_add_up(pair):
    a_admin = await pair.a.admin()
    image_id = await upload(a_admin, image_bytes("JPEG", (200, 100)))
    for daemon, times in ((pair.a, 3), (pair.b, 4)):
        for i in range(times):
            assert (await daemon.client.get(f"/image/{image_id}.jpg?w={50 + i}")).code == 200
    for daemon in pair.daemons:
        await daemon.service.stopService()
    engine = sa.create_engine(pair.database_url)
    try:
        with engine.connect() as conn:
            views = conn.execute(sa.text("SELECT views FROM images WHERE id = :id"),
                                 {"id": image_id}).scalar_one()
    finally:
        engine.dispose()
    assert views == 7


@pytest_twisted.ensureDeferred
async def test_cli_import_into_postgresql_and_s3_is_served_by_both(pair, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    files = {"red.jpg": image_bytes("JPEG", (120, 80)),
             "blue.png": image_bytes("PNG", (90, 60), color=(0, 0, 255)),
             "zz-copy.jpg": image_bytes("JPEG", (120, 80)),
             "notes.txt": b"not an image"}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    summary = await local_cli(pair.b).json("import", folder, "--user", "admin", "--public",
                                           code=3)  # notes.txt is rejected
    assert (summary["imported"], len(summary["duplicates"]), len(summary["rejected"])) == (
        2, 1, 1)

    originals = keys(pair.endpoint, pair.bucket, "originals/")
    assert {Path(key).suffix for key in originals} == {".jpg", ".png"}
    a_admin = await pair.a.admin()
    feed = (await a_admin.get("/api/images/1")).json()
    assert sorted(item["attributes"]["originalName"] for item in feed["data"]) == [
        "blue.png", "red.jpg"]
    for item in feed["data"]:
        name = item["attributes"]["originalName"]
        ext = Path(name).suffix
        assert item["attributes"]["fileName"] == f"{item['id']}{ext}"
        for daemon in pair.daemons:
            served = await daemon.client.get(f"/image/{item['id']}{ext}")
            assert (served.code, served.body) == (200, files[name])


@pytest_twisted.ensureDeferred
async def test_gc_removes_objects_no_record_accounts_for_from_the_bucket(pair, reactor):
    image_id = await upload(await pair.a.admin(), image_bytes("PNG", (300, 200)))
    assert (await pair.b.client.get(f"/image/{image_id}.jpg?w=100")).code == 200
    # B's render and A's thumbnail rendered ahead, both shared: nothing lands any more.
    await pair.a.imagehost.delivery.rendered_ahead(image_id)
    await eventually(reactor, lambda: len(keys(pair.endpoint, pair.bucket,
                                               f"variants/{image_id}/")) == 2)
    # An upload whose record never landed, and a variant shared while its image was
    # being deleted.
    crashed, deleted = "c3" + "0" * 34, "d4" + "0" * 34
    garbage = {f"originals/c3/00/{crashed}.png": b"x" * 10, f"variants/{deleted}/w100": b"y" * 7}
    for key, body in garbage.items():
        s3_client(pair.endpoint).put_object(Bucket=pair.bucket, Key=key, Body=body)
    before = keys(pair.endpoint, pair.bucket)

    # Objects in the bucket cannot be backdated: the grace period is tested on local disk.
    report = await local_cli(pair.a).json("gc", "--older-than", "0")
    assert report["imageIds"] == [crashed, deleted]
    assert (report["originals"], report["originalBytes"]) == (1, 10)
    assert (report["variantImages"], report["variantBytes"]) == (1, 7)
    assert keys(pair.endpoint, pair.bucket) == before - set(garbage)
    for daemon in pair.daemons:
        assert (await daemon.client.get(f"/image/{image_id}.png")).code == 200


# -- failures of the object store --------------------------------------------------------


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("where", ["missing bucket", "unreachable endpoint"])
@pytest_twisted.ensureDeferred
async def test_store_failures_answer_503_with_a_sentence(where, tmp_path, reactor,
                                                          s3_endpoint):
    if where == "missing bucket":
        sections, reason = s3_sections(s3_endpoint, "no-such-bucket"), "NoSuchBucket"
    else:
        sections = s3_sections(f"http://127.0.0.1:{closed_port()}", "any-bucket")
        reason = "cannot be reached"
    server = await start_server(tmp_path, reactor, sections)
    try:
        admin = await server.admin()
        response = await admin.upload("/api/upload", image_bytes())
        assert response.code == 503, response.body
        error = response.json()["error"]
        assert error["title"] == "StorageUnavailable"
        assert error["message"].startswith("The image store ") and reason in error["message"]
        assert response.header("Retry-After") == "5"
        assert (await server.client.get("/health")).code == 503
        assert (await admin.get("/api/images/history/1")).json()["data"] == []
    finally:
        await server.service.stopService()


@pytest_twisted.ensureDeferred
async def test_custom_prefixes_and_a_lost_original(tmp_path, reactor, s3_endpoint, bucket):
    sections = s3_sections(s3_endpoint, bucket)
    sections["storage"].update(originals_prefix="site1/o/", variants_prefix="site1/v/")
    server = await start_server(tmp_path, reactor, sections)
    try:
        admin = await server.admin()
        assert (await server.client.get("/health")).code == 200
        image_id = await upload(admin, image_bytes("PNG", (80, 60)))
        assert (await server.client.get(f"/image/{image_id}.webp?w=40")).code == 200
        assert {key.split("/")[1] for key in keys(s3_endpoint, bucket)} == {"o", "v"}
        assert all(key.startswith("site1/") for key in keys(s3_endpoint, bucket))
        # An original gone from the bucket (but still recorded) is a 404, not a 500.
        s3_client(s3_endpoint).delete_object(
            Bucket=bucket, Key=f"site1/o/{image_id[0:2]}/{image_id[2:4]}/{image_id}.png")
        assert (await server.client.get(f"/image/{image_id}.png")).code == 404
        assert (await server.client.get(f"/image/{image_id}.jpg?w=20")).code == 404
    finally:
        await server.service.stopService()


# -- the sample deployment ---------------------------------------------------------------

REPO = Path(__file__).resolve().parent.parent


def test_sample_scaleout_config_is_valid_and_matches_the_nginx_front():
    import re

    from imagehost.config import load_config

    config = load_config(REPO / "etc" / "imagehost-scaleout.ini", environ={})
    assert config.get("storage", "backend") == "s3"
    assert config.database_url.startswith("postgresql+psycopg://")
    assert config.secret_file == Path("/etc/imagehost/secret.key")
    nginx = (REPO / "etc" / "nginx" / "imagehost.conf").read_text()
    body_size = re.search(r"^\s*client_max_body_size (\d+);", nginx, re.M)
    assert body_size and int(body_size[1]) == config.get("server", "max_body_size")
    # nginx connects from the same host and names the client: the daemons believe it.
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in nginx
    assert config.get("server", "trusted_proxies") == ["127.0.0.1"]
    unit = (REPO / "etc" / "systemd" / "imagehost@.service").read_text()
    assert "--listen tcp:%i" in unit and "--data-dir /var/lib/imagehost/%i" in unit
    ports = set(re.findall(r"server 127\.0\.0\.1:(\d+)", nginx))
    target = (REPO / "etc" / "systemd" / "imagehost.target").read_text()
    assert ports == set(re.findall(r"imagehost@(\d+)\.service", target))
