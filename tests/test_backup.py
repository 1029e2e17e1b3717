"""``imagehost backup`` while a daemon serves uploads, and ``imagehost restore`` from it."""

from __future__ import annotations

import json
import sqlite3

import pytest_twisted

from tests import cli_support  # noqa: F401  (registers imagehost_cli)
from tests.conftest import image_bytes, start_server
from tests.test_cli import Cli, local_cli
from tests.test_scaleout import bucket, keys, s3_endpoint, s3_sections, upload

__all__ = ["bucket", "s3_endpoint"]  # fixtures used here

UPLOADERS = 4  # the "4 clients upload continuously"


class Uploaders:
    """Clients uploading distinct images without pause until stopped."""

    def __init__(self, admin):
        self.admin = admin
        self.acknowledged: dict[str, bytes] = {}  # id -> the bytes sent
        self.running = True
        self._sent = 0

    async def run(self, lane: int) -> None:
        while self.running:
            self._sent += 1
            data = image_bytes("PNG", (40, 30), color=(lane * 60, self._sent % 256,
                                                      self._sent // 256))
            self.acknowledged[await upload(self.admin, data)] = data

    def start(self):
        from twisted.internet.defer import Deferred, gatherResults

        return gatherResults([Deferred.fromCoroutine(self.run(lane))
                              for lane in range(UPLOADERS)])


def records(database_file) -> set[str]:
    with sqlite3.connect(database_file) as conn:
        return {row[0] for row in conn.execute("SELECT id FROM images")}


@pytest_twisted.ensureDeferred
async def test_backup_during_uploads_restores_every_acknowledged_image_byte_exact(
        tmp_path, reactor):
    from tests.test_scaleout import eventually

    (tmp_path / "live").mkdir()
    live = await start_server(tmp_path / "live", reactor)
    dest = tmp_path / "backup"
    try:
        uploaders = Uploaders(await live.admin())
        running = uploaders.start()
        await eventually(reactor, lambda: len(uploaders.acknowledged) >= 2 * UPLOADERS, 30)
        before = dict(uploaders.acknowledged)
        first = await local_cli(live).json("backup", dest)
        during = len(uploaders.acknowledged)
        uploaders.running = False
        await running
        assert during > len(before), "the uploads went on while the backup ran"
        assert first["database"] == "imagehost.db" and first["unchanged"] == 0
        assert first["copied"] == first["originals"] >= len(before)
        assert (first["missing"], first["corrupt"]) == ([], [])
        manifest = json.loads((dest / "manifest.json").read_text())
        backed_up = records(dest / "imagehost.db")
        assert set(before) <= backed_up == set(manifest["originals"])
        assert (dest / "secret.key").stat().st_mode & 0o777 == 0o600
        assert (dest / "url-signing.key").stat().st_mode & 0o777 == 0o600
        assert manifest["urlSigningSecret"] == "url-signing.key"

        # A second backup into the same folder copies only the new originals.
        second = await local_cli(live).json("backup", dest)
        assert second["unchanged"] == len(backed_up)
        assert second["copied"] == len(uploaders.acknowledged) - len(backed_up) > 0
        after = await local_cli(live).ok("backup", dest)
        assert f"0 copied (0 B), {len(uploaders.acknowledged)} unchanged" in " ".join(
            after.stdout.split())
    finally:
        await live.service.stopService()

    (tmp_path / "restored").mkdir()
    restored_dir = tmp_path / "restored" / "data"
    report = await Cli([]).json("restore", dest, "--data-dir", restored_dir)
    assert report["originals"] == len(uploaders.acknowledged)
    restored = await start_server(tmp_path / "restored", reactor)
    try:
        for image_id, data in uploaders.acknowledged.items():
            served = await restored.client.get(f"/image/{image_id}.png")
            assert (served.code, served.body) == (200, data), image_id
        # Every record has its file, and nothing else is stored.
        assert (await local_cli(restored).json("verify", "--older-than", "0"))["clean"]
        assert records(restored_dir / "imagehost.db") == set(uploaders.acknowledged)
        # The restored secret is the old one: the old installation's tokens are valid.
        assert (restored_dir / "secret.key").read_bytes() == (
            tmp_path / "live" / "data" / "secret.key").read_bytes()
        # So is the URL signing key: signed image URLs made before the backup still work.
        assert (restored_dir / "url-signing.key").read_bytes() == (
            tmp_path / "live" / "data" / "url-signing.key").read_bytes()
    finally:
        await restored.service.stopService()


@pytest_twisted.ensureDeferred
async def test_restore_refuses_a_used_directory_and_a_damaged_backup(tmp_path, reactor):
    (tmp_path / "live").mkdir()
    server = await start_server(tmp_path / "live", reactor)
    try:
        await refusals(server, tmp_path)
    finally:
        await server.service.stopService()


async def refusals(server, tmp_path) -> None:
    image_id = await upload(await server.admin(), image_bytes("PNG"))
    dest = tmp_path / "backup"
    await local_cli(server).json("backup", dest)
    cli = Cli([])
    assert "is not empty" in await cli.fails("restore", dest, "--data-dir", server.data_dir)
    assert "not an imagehost backup" in await cli.fails(
        "restore", tmp_path / "nothing", "--data-dir", tmp_path / "new")
    assert "--data-dir" in await cli.fails("restore", dest, code=2)
    original = dest / f"originals/{image_id[0:2]}/{image_id[2:4]}/{image_id}.png"
    original.write_bytes(original.read_bytes() + b"!")
    error = await cli.fails("restore", dest, "--data-dir", tmp_path / "new")
    assert image_id in error and "does not match its sha256" in error
    assert list((tmp_path / "new").iterdir()) == []
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file").write_text("x")
    assert "neither empty nor an imagehost backup" in await local_cli(server).fails(
        "backup", tmp_path / "junk")


@pytest_twisted.ensureDeferred
async def test_backup_of_postgresql_uses_pg_dump_and_restores_with_psql(
        tmp_path, reactor, postgres):
    dest = tmp_path / "backup"
    with postgres.database() as url:
        server = await start_server(tmp_path, reactor, {"database": {"url": url}})
        try:
            data = image_bytes("PNG")
            image_id = await upload(await server.admin(), data)
            report = await local_cli(server).json("backup", dest)
            assert (report["database"], report["copied"]) == ("database.sql", 1)
            dump = (dest / "database.sql").read_text()
            assert "CREATE TABLE public.images" in dump and image_id in dump
            error = await local_cli(server, PATH=str(tmp_path / "empty")).fails(
                "backup", dest)
            assert error.startswith("pg_dump is not installed")
            cli = Cli([])
            target = tmp_path / "restored" / "data"
            # Only into an empty PostgreSQL database, said with --database-url.
            assert "not empty: restore into a new one" in await cli.fails(
                "restore", dest, "--data-dir", target, "--database-url", url)
            assert "holds a PostgreSQL dump: name the empty PostgreSQL database" in (
                await cli.fails("restore", dest, "--data-dir", target))
        finally:
            await server.service.stopService()
    with postgres.database() as new_url:
        cli = Cli([])
        assert (await Cli([], {"PATH": str(tmp_path / "empty")}).fails(
            "restore", dest, "--data-dir", target, "--database-url", new_url)
                ).startswith("psql is not installed")
        assert not target.exists() or list(target.iterdir()) == []
        restored_report = await cli.json("restore", dest, "--data-dir", target,
                                         "--database-url", new_url)
        assert restored_report["originals"] == 1
        restored = await start_server(tmp_path / "restored", reactor,
                                      {"database": {"url": new_url}})
        try:
            served = await restored.client.get(f"/image/{image_id}.png")
            assert (served.code, served.body) == (200, data)
            # The old installation's logins and secret work on the restored one.
            assert (await (await restored.admin()).get(f"/api/image/{image_id}/detail")
                    ).code == 200
            assert (await local_cli(restored).json("verify", "--older-than", "0"))["clean"]
        finally:
            await restored.service.stopService()


@pytest_twisted.ensureDeferred
async def test_backup_with_s3_copies_the_database_and_lists_the_objects(
        tmp_path, reactor, s3_endpoint, bucket):
    server = await start_server(tmp_path, reactor, s3_sections(s3_endpoint, bucket))
    try:
        image_id = await upload(await server.admin(), image_bytes("PNG"))
        report = await local_cli(server).json("backup", tmp_path / "backup")
        assert (report["inBucket"], report["copied"], report["originals"]) == (1, 0, 1)
        manifest = json.loads((tmp_path / "backup" / "manifest.json").read_text())
        assert manifest["originalsInBucket"] is True
        assert manifest["originals"][image_id]["path"] is None
        assert len(manifest["originals"][image_id]["sha256"]) == 64
        assert not (tmp_path / "backup" / "originals").exists()
        assert records(tmp_path / "backup" / "imagehost.db") == {image_id}
        assert len(keys(s3_endpoint, bucket, "originals/")) == 1
    finally:
        await server.service.stopService()
