"""The seed's ``fileName`` is ``{id}.{ext}``; the client's name is ``originalName``. Migration
0005 rewrites the rows of a database created at the previous head, on SQLite and
PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path

import pytest_twisted
import sqlalchemy as sa

from imagehost.db import HEAD_REVISION, create_engine, current_revision, upgrade
from tests.conftest import image_bytes

PREVIOUS_HEAD = "0004"
CREATED = datetime(2024, 1, 15, 10, 30)  # naive: the columns hold UTC without offset


def old_rows() -> dict[str, tuple[str, str]]:
    """id -> (file_name as the previous head stored it, mime type)."""
    named, unnamed, shouting = (str(uuid.uuid4()) for _ in range(3))
    return {named: ("cat.png", "image/png"),
            unnamed: (f"{unnamed}.jpg", "image/jpeg"),  # an upload without a file name
            shouting: ("Holiday 2023.JPG", "image/webp")}


def create_at_previous_head(url: str, rows: dict[str, tuple[str, str]]) -> None:
    engine = create_engine(url)
    upgrade(engine, PREVIOUS_HEAD)
    with engine.begin() as conn:
        images = sa.Table("images", sa.MetaData(), autoload_with=conn)
        for image_id, (file_name, mime_type) in rows.items():
            conn.execute(images.insert().values(
                id=image_id, owner_id=None, file_name=file_name, description="",
                is_public=True, created_at=CREATED, updated_at=None, sort_updated_at=CREATED,
                views=0, size=10, mime_type=mime_type, width=1, height=1, sha256="0" * 64))
    engine.dispose()


def expected_names(rows: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
    ext = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
    return {image_id: (f"{image_id}.{ext[mime]}",
                       "" if name == f"{image_id}.{ext[mime]}" else name)
            for image_id, (name, mime) in rows.items()}


def downgrade(engine: sa.Engine, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    import imagehost.db

    config = Config()
    migrations = Path(imagehost.db.__file__).parent / "migrations"
    config.set_main_option("script_location", str(migrations))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, revision)


def test_migration_0005_moves_client_names_to_original_name(tmp_path, database_url):
    url = database_url or f"sqlite:///{tmp_path / 'old.db'}"
    rows = old_rows()
    create_at_previous_head(url, rows)
    engine = create_engine(url)
    upgrade(engine)
    assert current_revision(engine) == HEAD_REVISION
    with engine.connect() as conn:
        found = {r.id: (r.file_name, r.original_name) for r in conn.execute(sa.text(
            "SELECT id, file_name, original_name FROM images"))}
    assert found == expected_names(rows)
    downgrade(engine, PREVIOUS_HEAD)  # and back: the client's names return to file_name
    with engine.connect() as conn:
        query = sa.text("SELECT id, file_name FROM images")
        back = {r.id: r.file_name for r in conn.execute(query)}
    engine.dispose()
    assert back == {image_id: name for image_id, (name, _) in rows.items()}


@pytest_twisted.ensureDeferred
async def test_a_daemon_started_on_a_database_at_the_previous_head_serves_the_new_names(
        tmp_path, database_url, make_server):
    url = database_url or f"sqlite:///{tmp_path / 'data' / 'imagehost.db'}"
    (tmp_path / "data").mkdir()
    rows = old_rows()
    create_at_previous_head(url, rows)
    server = await make_server({"database": {"url": database_url}} if database_url else {})
    admin = await server.admin()
    expected = expected_names(rows)
    for image_id, (file_name, original_name) in expected.items():
        detail = (await admin.get(f"/api/image/{image_id}/detail")).json()
        assert (detail["fileName"], detail["originalName"]) == (file_name, original_name or None)
    feed = (await admin.get("/api/images/1")).json()["data"]
    assert {item["id"]: (item["attributes"]["fileName"], item["attributes"]["originalName"])
            for item in feed} == {i: (f, o or None) for i, (f, o) in expected.items()}
    assert (await server.client.get("/health")).code == 200


@pytest_twisted.ensureDeferred
async def test_uploads_get_id_and_ext_as_file_name_everywhere_the_seed_shows_it(server, admin):
    png = await admin.upload("/api/upload", image_bytes("PNG"), filename="holiday.jpg",
                             fields={"isPublic": "true"})
    image_id = png.json()["id"]
    unnamed = (await admin.upload("/api/upload", image_bytes(), filename="")).json()["id"]
    detail = (await admin.get(f"/api/image/{image_id}/detail")).json()
    assert (detail["fileName"], detail["originalName"]) == (f"{image_id}.png", "holiday.jpg")
    assert detail["url"] == f"/image/{image_id}.png"
    history = (await admin.get("/api/images/history/1")).json()["data"]
    feed = (await admin.get("/api/images/1")).json()["data"]
    by_id = (await admin.get(f"/api/images?uuid[]={image_id}&uuid[]={unnamed}")).json()
    for listing in (history, feed, by_id):
        names = {item["id"]: (item["attributes"]["fileName"], item["attributes"]["originalName"])
                 for item in listing}
        assert names[image_id] == (f"{image_id}.png", "holiday.jpg")
    assert {i["id"]: i["attributes"]["originalName"] for i in history}[unnamed] is None
    # searchBy=fileName finds the client's name and the stored one.
    for term in ("holiday", image_id[:13], f"{image_id}.png"):
        found = (await admin.get(f"/api/images/1?searchBy=fileName&searchTerm={term}")).json()
        assert [item["id"] for item in found["data"]] == [image_id], term


@pytest_twisted.ensureDeferred
async def test_the_image_page_names_the_clients_file(server):
    from tests.web_support import PageClient

    browser = PageClient(server.base_url)
    await browser.login()
    uploaded = await browser.upload(image_bytes(), filename="beach day.jpg")
    image_id = uploaded.header("location").removeprefix("/i/")
    page = (await browser.get(f"/i/{image_id}")).body.decode()
    assert "<h1>beach day.jpg</h1>" in page
    assert "<dt>File</dt><dd>beach day.jpg</dd>" in page
    assert 'alt="beach day.jpg"' in page
