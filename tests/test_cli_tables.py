"""What a first-time operator reads at 80 columns: whole ids, one time format, the next
page, which files an import skipped and why, the paths ``gc`` removes."""

from __future__ import annotations

import json
import os
import re
import time

import pytest_twisted

from tests import cli_support  # noqa: F401  (registers imagehost_cli)
from tests.conftest import image_bytes
from tests.test_cli import Cli, local_cli, remote_cli

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
NARROW = {"COLUMNS": "80"}


def narrow(cli: Cli) -> Cli:
    return Cli(cli.global_args, {**(cli.env or {}), **NARROW})


def lines_fit(text: str, width: int = 80) -> None:
    assert all(len(line) <= width for line in text.splitlines()), text


@pytest_twisted.ensureDeferred
async def test_id_columns_are_never_cut_at_80_columns(server):
    cmd = narrow(local_cli(server))
    await cmd.ok("user", "create", "a-rather-long-username-for-a-table",
                 "--email", "someone.with.a.long.address@example.com", "--password", "pw-pw-pw-pw")
    await cmd.ok("apikey", "create", "a-rather-long-username-for-a-table",
                 "--name", "a key with a long descriptive name")
    users = await cmd.json("user", "list")
    keys = await cmd.json("apikey", "list")
    users_table = (await cmd.ok("user", "list")).stdout
    keys_table = (await cmd.ok("apikey", "list")).stdout
    for table, rows in ((users_table, users), (keys_table, keys)):
        lines_fit(table)
        assert set(UUID.findall(table)) == {row["id"] for row in rows}, table
    # One time format in every table: UTC, to the minute (folded at 80 columns).
    wide = Cli(cmd.global_args, {"COLUMNS": "200"})
    assert re.search(r" \d{4}-\d\d-\d\d \d\d:\d\d ", (await wide.ok("user", "list")).stdout)


@pytest_twisted.ensureDeferred
async def test_remote_listings_show_whole_ids_one_date_format_and_the_next_page(
        server, tmp_path):
    key = (await local_cli(server).json("apikey", "create", "admin"))["key"]
    remote = narrow(remote_cli(server, "--api-key", key))
    files = []
    for n in range(3):
        path = tmp_path / f"holiday-picture-number-{n}-with-a-long-name.png"
        path.write_bytes(image_bytes("PNG", color=(n, 2, 3)))
        files.append(path)
    uploaded = (await remote.ok("upload", *files, "--public")).stdout
    lines_fit(uploaded)
    ids = set(UUID.findall(uploaded))
    assert len(ids) == 3

    first = (await remote.ok("list", "--limit", "2")).stdout
    lines_fit(first)
    assert len(set(UUID.findall(first)) & ids) == 2
    assert len(re.findall(r" \d{4}-\d\d-\d\d \d\d:\d\d ?\n", first)) == 2, first  # whole times
    assert (f"Page 1 of 2. Next page: imagehost remote --url {server.base_url} list 2 "
            "--limit 2") in " ".join(first.split())
    last = (await remote.ok("list", "2", "--limit", "2")).stdout
    assert "Page 2 of 2: the last page." in last
    history = (await remote.ok("history", "--limit", "2")).stdout
    assert (f"Next page: imagehost remote --url {server.base_url} history 2 --limit 2"
            in " ".join(history.split()))
    # The feed's and the history's own formattedDate differ; the tables show one format.
    wide = Cli(remote.global_args, {"COLUMNS": "200"})
    feed_dates = re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d",
                            (await wide.ok("list", "--limit", "2")).stdout)
    history_dates = re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d",
                               (await wide.ok("history", "--limit", "2")).stdout)
    assert len(feed_dates) == 2 and feed_dates == history_dates
    wide_feed = (await wide.ok("list")).stdout
    assert all(path.name in wide_feed for path in files)  # the client's name: originalName


@pytest_twisted.ensureDeferred
async def test_a_bad_api_key_is_reported_as_an_invalid_api_key(server):
    malformed = await remote_cli(server, "--api-key", "not-a-key").fails("history")
    assert malformed == "Invalid API key: API keys are sk_ followed by 64 hex digits."
    unknown = await remote_cli(server, "--api-key", "sk_" + "1" * 64).fails("list")
    assert unknown == "Invalid, revoked or expired API key. (HTTP 401)"


@pytest_twisted.ensureDeferred
async def test_import_lists_duplicates_and_skipped_folders_and_exits_3_on_rejects(
        server, tmp_path):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.png").write_bytes(image_bytes("PNG", color=(1, 1, 1)))
    (folder / "copy-of-a.png").write_bytes(image_bytes("PNG", color=(1, 1, 1)))
    (folder / "notes.jpg").write_bytes(b"%PDF-1.4\n" + b"0" * 100)
    (folder / "sub" / "b.png").write_bytes(image_bytes("PNG", color=(2, 2, 2)))
    cmd = narrow(local_cli(server))

    result = await cmd("import", folder, "--user", "admin")
    assert result.exit_code == 3, (result.stdout, result.stderr)
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: 1 of 3 files were rejected (listed above); the others were handled.")
    lines_fit(result.stdout)
    out = " ".join(result.stdout.split())
    assert "Skipped 1 sub-folders (use --recursive to import them):" in out
    imported_id = UUID.search(result.stdout).group(0)  # whole, at 80 columns
    wide = await Cli(cmd.global_args, {"COLUMNS": "300"})("import", folder, "--user", "admin")
    assert wide.exit_code == 3
    assert any(str(folder / "a.png") in line and imported_id in line
               for line in wide.stdout.splitlines()), wide.stdout
    assert f"Skipped 1 sub-folders (use --recursive to import them): {folder / 'sub'}" \
        in wide.stdout

    again = await cmd("--json", "import", folder, "--user", "admin", "--recursive")
    assert again.exit_code == 3
    summary = json.loads(again.stdout)
    assert summary["imported"] == 1 and summary["skippedFolders"] == []
    assert summary["duplicates"] == [
        {"path": str(folder / "a.png"), "imageId": imported_id},
        {"path": str(folder / "copy-of-a.png"), "imageId": imported_id}]
    assert [r["path"] for r in summary["rejected"]] == [str(folder / "notes.jpg")]

    clean = await cmd("import", folder / "a.png", "--user", "admin")
    assert clean.exit_code == 0, clean.stderr


@pytest_twisted.ensureDeferred
async def test_gc_shows_the_paths_it_would_remove_and_did(server):
    from imagehost.storage import LocalStorage

    storage = LocalStorage(server.data_dir)
    crashed = "c3" + "0" * 34
    storage.put_original(crashed, "png", image_bytes("PNG"))
    an_hour_ago = time.time() - 3700
    os.utime(storage.original_path(crashed, "png"), (an_hour_ago, an_hour_ago))
    relative = f"originals/c3/00/{crashed}.png"
    cmd = narrow(local_cli(server))

    dry = (await cmd.ok("gc", "--dry-run")).stdout
    lines_fit(dry)
    assert f"Would remove from {server.data_dir.absolute()}" in " ".join(dry.split())
    assert relative in dry and crashed in dry
    assert storage.original_path(crashed, "png").exists()
    done = (await cmd.ok("gc")).stdout
    assert relative in done and " ".join(done.split()).startswith("Removed from")
    assert not storage.original_path(crashed, "png").exists()
    report = await cmd.json("gc")
    assert report["files"] == []
