"""The ``imagehost`` CLI: local commands on the same installation as a live daemon, and
``remote`` commands against its real listener.

click's CliRunner runs in a worker thread; ``go`` sees the test's running reactor and
runs each command on it, so the daemon and the CLI share one reactor as they would
share one data directory in production.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import sqlalchemy as sa
from click.testing import CliRunner, Result
from PIL import Image

from tests import cli_support  # noqa: F401  (registers imagehost_cli)
from tests.conftest import ADMIN, image_bytes

# isort: split
from imagehost_cli.main import cli

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Cli:
    """Runs ``imagehost`` with fixed global options on a worker thread."""

    global_args: list[str]
    env: dict[str, str] | None = None

    async def __call__(self, *args: Any, input: str | None = None,
                       as_json: bool = False) -> Result:
        from twisted.internet.threads import deferToThread

        argv = ["--json"] * as_json + self.global_args + [str(a) for a in args]
        return await deferToThread(CliRunner().invoke, cli, argv, input=input, env=self.env)

    async def ok(self, *args: Any, input: str | None = None, as_json: bool = False,
                 code: int = 0) -> Result:
        """Run a command that succeeds (or, for an import, exits ``code``)."""
        result = await self(*args, input=input, as_json=as_json)
        assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
        return result

    async def json(self, *args: Any, input: str | None = None, code: int = 0) -> Any:
        result = await self.ok(*args, input=input, as_json=True, code=code)
        return json.loads(result.stdout)

    async def fails(self, *args: Any, code: int = 1, input: str | None = None) -> str:
        """Run a command expected to fail; returns its one-line error."""
        result = await self(*args, input=input)
        assert result.exit_code == code, (result.stdout, result.stderr)
        assert "Traceback" not in result.output
        if code == 1:
            errors = result.stderr.strip().splitlines()
            assert len(errors) == 1 and errors[0].startswith("Error: "), result.stderr
            return errors[0].removeprefix("Error: ")
        return result.stderr


def local_cli(server, **env: str) -> Cli:
    """The CLI on the daemon's own installation (same config file and data dir)."""
    return Cli(["--config", str(server.data_dir.parent / "imagehost.ini"),
                "--data-dir", str(server.data_dir)], env or None)


def remote_cli(server, *auth: str) -> Cli:
    return Cli(["remote", "--url", server.base_url, *auth])


# -- installation ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_init_is_idempotent_and_db_upgrade_reports_the_revision(tmp_path):
    data = tmp_path / "data"
    cmd = Cli(["--data-dir", str(data)])
    upgraded = await cmd.json("db", "upgrade")
    assert upgraded["from"] is None and upgraded["to"]
    first = await cmd.json("init")
    assert first["created"] is True and first["revision"] == upgraded["to"]
    secret = (data / "secret.key").read_bytes()
    second = await cmd.json("init")
    assert second["created"] is False and second["revision"] == upgraded["to"]
    assert (data / "secret.key").read_bytes() == secret
    assert (await cmd.json("db", "upgrade")) == {"from": upgraded["to"], "to": upgraded["to"]}
    assert (data / "originals").is_dir() and (data / "imagehost.db").is_file()
    human = await cmd.ok("init")
    assert "Already initialised" in human.stdout


@pytest_twisted.ensureDeferred
async def test_a_broken_config_file_is_one_line_and_exit_1(tmp_path):
    bad = tmp_path / "bad.ini"
    bad.write_text("[server]\nno_such_key = 1\n")
    error = await Cli(["--config", str(bad), "--data-dir", str(tmp_path)]).fails("init")
    assert "unknown key [server] no_such_key" in error
    missing = await Cli(["--config", str(tmp_path / "nope.ini")])("init")
    assert missing.exit_code == 2


# -- users ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_user_commands_act_on_the_running_daemon(server):
    cmd = local_cli(server)
    created = await cmd.json("user", "create", "alice", "--email", "alice@example.com",
                             "--password", "alice-password")
    assert created["username"] == "alice" and created["roles"] == ["ROLE_USER"]
    prompted = await cmd.json("user", "create", "bob", "--email", "bob@example.com", "--admin",
                              input="bob-password\nbob-password\n")
    assert prompted["roles"] == ["ROLE_USER", "ROLE_ADMIN"]
    users = await cmd.json("user", "list")
    assert [u["username"] for u in users] == ["admin", "alice", "bob"]
    assert all(u["isActive"] for u in users)

    assert (await cmd.fails("user", "create", "alice", "--email", "other@example.com",
                            "--password", "long-enough")) == "username: This value is already used."
    assert (await cmd.fails("user", "create", "carol", "--email", "c@example.com",
                            "--password", "short")) == (
        "password: This value is too short. It should have 8 characters or more.")
    mismatch = await cmd("user", "create", "dave", "--email", "d@example.com",
                         input="one-password\nother-password\none-password\none-password\n")
    assert mismatch.exit_code == 0 and "do not match" in mismatch.output

    client = server.client
    await client.login("alice", "alice-password")
    await cmd.ok("user", "disable", "alice")
    refused = await client.post_json("/api/auth/login",
                                     {"username": "alice", "password": "alice-password"})
    assert refused.code == 401
    listed = {u["username"]: u for u in await cmd.json("user", "list")}
    assert listed["alice"]["isActive"] is False
    await cmd.ok("user", "enable", "alice")
    await cmd.ok("user", "passwd", "alice", input="new-password-1\nnew-password-1\n")
    await client.login("alice", "new-password-1")
    old = await client.post_json("/api/auth/login",
                                 {"username": "alice", "password": "alice-password"})
    assert old.code == 401
    assert (await cmd.fails("user", "disable", "nobody")) == 'No user named "nobody".'


# -- API keys -----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_an_api_key_created_by_the_cli_is_accepted_by_the_daemon(server, tmp_path):
    cmd = local_cli(server, IMAGEHOST_SERVER_PUBLIC_URL=server.base_url)
    sxcu = tmp_path / "admin.sxcu"
    created = await cmd.json("apikey", "create", "admin", "--name", "sharex",
                             "--expires", "30d", "--sharex", sxcu)
    assert set(created) == {"key", "keyId", "name", "expiresAt", "sharexFile"}
    assert created["key"].startswith("sk_") and created["name"] == "sharex"
    assert created["expiresAt"] > "2000"

    # Upload exactly as ShareX would, from the uploader file alone.
    uploader = json.loads(sxcu.read_text())
    assert os.stat(sxcu).st_mode & 0o777 == 0o600
    assert uploader["RequestURL"] == f"{server.base_url}/api/external/upload"
    assert uploader["FileFormName"] == "image" and uploader["Body"] == "MultipartFormData"
    import treq

    response = await treq.request(
        uploader["RequestMethod"], uploader["RequestURL"], headers=uploader["Headers"],
        files={uploader["FileFormName"]: ("a.jpg", "image/jpeg", io.BytesIO(image_bytes()))})
    answer = json.loads(await response.content())
    assert response.code == 201, answer
    url = uploader["URL"].replace("$json:url$", answer["url"])
    got = await treq.get(url)
    assert got.code == 200 and await got.content() == image_bytes()

    keys = await cmd.json("apikey", "list", "admin")
    assert [(k["id"], k["username"], k["isExpired"]) for k in keys] == [
        (created["keyId"], "admin", False)]
    assert keys[0]["lastUsedAt"] is not None
    assert await cmd.json("apikey", "list") == keys

    await cmd.ok("apikey", "revoke", created["keyId"])
    refused = await server.client.upload("/api/external/upload", image_bytes(),
                                         token=created["key"])
    assert refused.code == 401
    assert (await cmd.fails("apikey", "revoke", created["keyId"])) == "No such API key."
    assert (await cmd.fails("apikey", "create", "admin", "--expires", "2001-01-01")) == (
        "expiresAt: This value should be in the future.")
    assert "neither a duration" in await cmd.fails("apikey", "create", "admin",
                                                   "--expires", "soon", code=2)
    human = await cmd.ok("apikey", "create", "admin")
    assert "shown once" in human.stdout and "sk_" in human.stdout


# -- guest uploads and settings -------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_guest_toggle_is_seen_by_the_running_daemon_without_restart(server):
    cmd = local_cli(server)
    assert await cmd.json("guest", "status") == {"allowGuestUploads": False}
    assert (await server.client.upload("/api/guest/upload", image_bytes())).code == 403
    assert await cmd.json("guest", "enable") == {"allowGuestUploads": True}
    assert (await server.client.upload("/api/guest/upload", image_bytes())).code == 201
    human = await cmd.ok("guest", "disable")
    assert "Guest uploads are disabled" in human.stdout
    assert (await server.client.upload("/api/guest/upload", image_bytes())).code == 403
    assert (await cmd("guest", "maybe")).exit_code == 2


@pytest_twisted.ensureDeferred
async def test_settings_show_and_set_are_validated_like_the_admin_api(server):
    cmd = local_cli(server)
    shown = await cmd.json("settings", "show")
    assert shown["image"]["maxSize"] == 15_000_000
    assert shown["access"] == {"allowGuestUploads": False, "allowRegistration": False}
    assert await cmd.json("settings", "set", "image.maxSize", "1000") == {
        "key": "image.maxSize", "value": 1000}
    assert await cmd.json("settings", "set", "image.allowedMimeTypes", '["image/png"]') == {
        "key": "image.allowedMimeTypes", "value": ["image/png"]}
    public = (await server.client.get("/api/settings/public")).json()["data"]
    assert public["image"] == {"maxSize": 1000, "allowedMimeTypes": ["image/png"]}

    assert (await cmd.fails("settings", "set", "image.maxSize", "big")) == (
        "image.maxSize: This value should be an integer between 1 and 64000000.")
    assert (await cmd.fails("settings", "set", "access.allowGuestUploads", "yes")) == (
        "access.allowGuestUploads: This value should be of type bool.")
    assert (await cmd.fails("settings", "set", "image.colour", "1")) == (
        "image.colour is not a setting; the settings are access.allowGuestUploads, "
        "access.allowRegistration, image.maxSize, image.allowedMimeTypes, quota.userBytes, "
        "quota.userImages, quota.guestBytes, quota.guestImages, "
        "expiry.guestDefault, expiry.guestMax, expiry.userDefault, expiry.userMax, "
        "expiry.adminDefault, expiry.adminMax.")
    assert await cmd.json("settings", "set", "expiry.guestMax", "86400") == {
        "key": "expiry.guestMax", "value": 86400}
    assert (await cmd.fails("settings", "set", "expiry.guestMax", "0")).startswith(
        "expiry.guestMax: This value should be null or a number of seconds")
    assert "CATEGORY.NAME" in await cmd.fails("settings", "set", "maxSize", "1", code=2)
    assert (await cmd.json("settings", "show"))["image"]["maxSize"] == 1000


# -- bulk import ----------------------------------------------------------------------


def noise(fmt: str, size: tuple[int, int], seed: int, **save) -> bytes:
    """A real image that does not compress well (so its size is predictable-ish)."""
    image = Image.effect_noise(size, 40 + seed).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save)
    return buffer.getvalue()


def import_folder(root: Path) -> dict[str, bytes]:
    """Valid images, two duplicates, a truncated JPEG, a PDF named .jpg, an oversized PNG."""
    files = {
        "a.jpg": image_bytes("JPEG", color=(255, 0, 0)),
        "b.png": image_bytes("PNG", color=(0, 255, 0)),
        "c.gif": image_bytes("GIF", color=(0, 0, 255)),
        "copy-of-a.jpg": image_bytes("JPEG", color=(255, 0, 0)),
        "fake.jpg": b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n" + b"0" * 500,
        "truncated.jpg": noise("JPEG", (64, 64), 1, quality=60)[:1200],
        "huge.png": noise("PNG", (120, 120), 2),
        "sub/d.webp": image_bytes("WEBP", color=(9, 9, 9)),
        "sub/a-again.jpg": image_bytes("JPEG", color=(255, 0, 0)),
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


def stored_images(where, username: str) -> dict[str, tuple[str, str, bool]]:
    """file name -> (id, mime type, public) of ``username``'s images, read from the DB of
    a running ``Server`` (SQLite or PostgreSQL) or of a data directory's SQLite file."""
    engine = (sa.create_engine(f"sqlite:///{where / 'imagehost.db'}") if isinstance(where, Path)
              else where.db.engine)
    query = sa.text("SELECT i.original_name, i.id, i.mime_type, i.is_public FROM images i "
                    "JOIN users u ON u.id = i.owner_id WHERE u.username = :username")
    with engine.connect() as conn:
        rows = conn.execute(query, {"username": username}).fetchall()
    return {name: (image_id, mime, bool(public)) for name, image_id, mime, public in rows}


def originals_on_disk(data_dir: Path) -> set[str]:
    return {p.stem for p in (data_dir / "originals").rglob("*") if p.is_file()}


@pytest_twisted.ensureDeferred
async def test_import_reports_exact_counts_and_reasons_and_never_imports_twice(
        server, tmp_path):
    folder = tmp_path / "photos"
    files = import_folder(folder)
    assert len(files["truncated.jpg"]) < 10_000 < len(files["huge.png"])
    cmd = local_cli(server)
    await cmd.ok("settings", "set", "image.maxSize", "10000")
    await cmd.ok("user", "create", "dave", "--email", "dave@example.com",
                 "--password", "dave-password")

    dry = await cmd.json("import", folder, "--user", "dave", "--recursive", "--dry-run",
                         code=3)
    assert (dry["imported"], len(dry["duplicates"]), len(dry["rejected"])) == (4, 2, 3)
    assert dry["dryRun"] is True
    assert stored_images(server, "dave") == {}
    assert originals_on_disk(server.data_dir) == set()

    first = await cmd.json("import", folder, "--user", "admin", "--recursive", "--public",
                           "--jobs", "3", code=3)
    huge_mb = f"{len(files['huge.png']) / 1e6:.2f}"
    duplicates = first.pop("duplicates")
    assert first == {
        "imported": 4,
        "skippedFolders": [],
        "rejected": [
            {"path": str(folder / "fake.jpg"),
             "reason": 'The mime type of the file is invalid ("application/pdf"). Allowed '
                       'mime types are "image/jpeg", "image/png", "image/webp", "image/gif", '
                       '"image/heic".'},
            {"path": str(folder / "huge.png"),
             "reason": f"The file is too large ({huge_mb} MB). "
                       "Allowed maximum size is 0.01 MB."},
            {"path": str(folder / "truncated.jpg"), "reason": "The image file is corrupted."},
        ],
    }
    stored = stored_images(server, "admin")
    assert set(stored) == {"a.jpg", "b.png", "c.gif", "d.webp"}
    assert duplicates == [{"path": str(folder / "copy-of-a.jpg"), "imageId": stored["a.jpg"][0]},
                          {"path": str(folder / "sub/a-again.jpg"),
                           "imageId": stored["a.jpg"][0]}]
    assert all(public for _, _, public in stored.values())
    assert originals_on_disk(server.data_dir) == {image_id for image_id, _, _ in stored.values()}
    # The daemon serves what the CLI imported, byte for byte.
    image_id = stored["b.png"][0]
    got = await server.client.get(f"/image/{image_id}.png")
    assert got.code == 200 and got.body == files["b.png"]

    again = await cmd.json("import", folder, "--user", "admin", "--recursive", code=3)
    assert (again["imported"], len(again["duplicates"]), again["rejected"]) == (
        0, 6, first["rejected"])
    assert stored_images(server, "admin") == stored

    flat = await cmd.ok("import", folder, "--user", "dave", "--jobs", "1", code=3)
    assert "Import summary" in flat.stdout and "corrupted" in flat.stdout
    assert "Importing" in flat.stderr
    assert set(stored_images(server, "dave")) == {"a.jpg", "b.png", "c.gif"}
    assert (await cmd.fails("import", folder, "--user", "nobody")) == 'No user named "nobody".'
    assert (await cmd("import", tmp_path / "missing", "--user", "admin")).exit_code == 2


@pytest_twisted.ensureDeferred
async def test_cancelled_import_leaves_no_original_without_its_record(server, tmp_path):
    from imagehost.service.importer import IMPORTED, SKIPPED, Importer, find_files

    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(12):
        (folder / f"{i:02}.jpg").write_bytes(noise("JPEG", (400, 300), i, quality=95))
    host = server.imagehost
    owner = await host.accounts.user_named(ADMIN[0])
    importer = Importer(host, owner, jobs=3, on_outcome=lambda outcome: importer.cancel())
    summary = await importer.run(find_files([folder], recursive=False))

    statuses = [o.status for o in summary.outcomes]
    assert summary.cancelled and set(statuses) <= {IMPORTED, SKIPPED}
    assert 1 <= statuses.count(IMPORTED) < 12 and SKIPPED in statuses
    records = {image_id for image_id, _, _ in stored_images(server, "admin").values()}
    assert len(records) == statuses.count(IMPORTED)
    assert originals_on_disk(server.data_dir) == records


def _run_cli_process(*args: str, **popen) -> subprocess.Popen:
    """The CLI as an operator runs it: its own process, reactor and signal handlers."""
    code = "import tests.cli_support; from imagehost_cli.main import main; main()"
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], cwd=REPO, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **popen)


def test_ctrl_c_stops_an_import_cleanly(tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    photo = noise("JPEG", (1000, 800), 1, quality=95)
    for i in range(60):
        # Bytes after the JPEG end marker make every file's hash unique.
        (folder / f"{i:02}.jpg").write_bytes(photo + b"%02d" % i)
    data = tmp_path / "data"
    setup = _run_cli_process("--data-dir", str(data), "user", "create", "erin",
                             "--email", "erin@example.com", "--password", "erin-password")
    assert setup.wait(60) == 0, setup.stderr.read()

    proc = _run_cli_process("--data-dir", str(data), "import", str(folder), "--user", "erin",
                            "--jobs", "2")
    deadline = time.monotonic() + 60
    with sqlite3.connect(data / "imagehost.db") as db:
        while db.execute("SELECT count(*) FROM images").fetchone()[0] < 2:
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
            time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)

    assert proc.returncode == 1, err
    assert "Traceback" not in err
    assert "Error: Interrupted after importing" in err
    assert "Not imported (interrupted)" in out
    imported = int(err.split("Interrupted after importing ")[1].split()[0])
    assert 2 <= imported < 60
    records = {image_id for image_id, _, _ in stored_images(data, "erin").values()}
    assert len(records) == imported
    assert originals_on_disk(data) == records


def test_a_failing_command_in_its_own_process_exits_1_with_one_line(tmp_path):
    proc = _run_cli_process("--data-dir", str(tmp_path / "data"), "user", "passwd", "ghost",
                            "--password", "whatever-1")
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, err) == (1, 'Error: No user named "ghost".\n')
    usage = _run_cli_process("user", "frobnicate")
    assert usage.wait(60) == 2


# -- remote -----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_remote_commands_against_the_live_daemon(server, tmp_path):
    key = (await local_cli(server).json("apikey", "create", "admin"))["key"]
    remote = remote_cli(server, "--api-key", key)
    red, green = tmp_path / "red.jpg", tmp_path / "green.png"
    red.write_bytes(image_bytes("JPEG", size=(80, 60), color=(255, 0, 0)))
    green.write_bytes(image_bytes("PNG", size=(40, 40), color=(0, 255, 0)))

    uploaded = await remote.json("upload", red, green, "--public", "--description", "cli")
    assert [u["path"] for u in uploaded] == [str(red), str(green)]
    red_id, green_id = (u["id"] for u in uploaded)
    assert uploaded[0]["url"] == f"/api/image/{red_id}.jpg"

    detail = await remote.json("detail", red_id)
    assert (detail["id"], detail["isPublic"], detail["description"], detail["width"]) == (
        red_id, True, "cli", 80)
    history = await remote.json("history")
    assert {item["id"] for item in history["data"]} == {red_id, green_id}
    feed = await remote.json("list", "1")
    assert {item["id"] for item in feed["data"]} == {red_id, green_id}

    assert await remote.json("update", red_id, "--description", "renamed", "--private") == {
        "id": red_id, "description": "renamed", "isPublic": False}
    detail = await remote.json("detail", red_id)
    assert (detail["description"], detail["isPublic"]) == ("renamed", False)

    target = tmp_path / "copy.jpg"
    saved = await remote.json("download", red_id, "-o", target)
    assert saved["path"] == str(target) and target.read_bytes() == red.read_bytes()
    small = tmp_path / "small.png"
    await remote.ok("download", red_id, "-o", small, "--width", "40", "--format", "png")
    with Image.open(small) as image:
        assert (image.format, image.size) == ("PNG", (40, 30))

    await remote.ok("delete", green_id)
    assert (await remote.fails("detail", green_id)) == "No such image. (HTTP 404)"
    human = await remote.ok("history")
    assert "Page 1 (1 images)" in human.stdout
    assert red_id[:8] in human.stdout and green_id[:8] not in human.stdout

    by_password = remote_cli(server, "--username", ADMIN[0], "--password", ADMIN[1])
    assert (await by_password.json("detail", red_id))["id"] == red_id


@pytest_twisted.ensureDeferred
async def test_remote_errors_are_one_line_and_exit_1(server, tmp_path):
    image = tmp_path / "a.jpg"
    image.write_bytes(image_bytes())
    bad_key = remote_cli(server, "--api-key", "sk_" + "0" * 64)
    assert (await bad_key.fails("history")) == (
        "Invalid, revoked or expired API key. (HTTP 401)")
    wrong_password = remote_cli(server, "--username", ADMIN[0], "--password", "nope")
    assert (await wrong_password.fails("history")) == "Invalid credentials. (HTTP 401)"

    key = (await local_cli(server).json("apikey", "create", "admin"))["key"]
    remote = remote_cli(server, "--api-key", key)
    pdf = tmp_path / "doc.jpg"
    pdf.write_bytes(b"%PDF-1.4\n" + b"0" * 100)
    result = await remote("upload", image, pdf, as_json=True)
    assert result.exit_code == 1
    outcome = json.loads(result.stdout)
    assert "id" in outcome[0] and outcome[1]["error"].startswith(
        'image: The mime type of the file is invalid ("application/pdf").')
    assert result.stderr.startswith("Error: 1 of 2 uploads failed")

    nowhere = Cli(["remote", "--url", "http://127.0.0.1:9", "--api-key", key])
    assert (await nowhere.fails("history")).startswith("Cannot reach http://127.0.0.1:9")
    assert (await Cli(["remote", "--url", "ftp://x"])("history")).exit_code == 2
    assert (await Cli(["remote"], env={"IMAGEHOST_URL": ""})("history")).exit_code == 2
    assert (await remote("update", "some-id")).exit_code == 2


@pytest_twisted.ensureDeferred
async def test_remote_reads_url_and_key_from_the_environment(server, tmp_path):
    key = (await local_cli(server).json("apikey", "create", "admin"))["key"]
    env = Cli(["remote"], env={"IMAGEHOST_URL": server.base_url, "IMAGEHOST_API_KEY": key})
    assert (await env.json("history"))["data"] == []


@pytest.mark.parametrize("argv", [["--help"], ["remote", "--help"], ["import", "--help"]])
def test_help_works_without_a_reactor(argv):
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 0 and "Usage:" in result.output


def test_the_installed_console_script_runs_the_cli(tmp_path):
    """``pip install`` (not editable) ships cli/ as imagehost_cli and an ``imagehost`` script."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--target", str(target), str(REPO)],
                   check=True, cwd=tmp_path)
    assert not (target / "cli").exists()
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, str(target / "bin" / "imagehost"), "--json",
                           "--data-dir", str(tmp_path / "data"), "init"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["created"] is True


# -- gc ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_gc_removes_only_old_originals_that_nothing_accounts_for(server):
    from imagehost.storage import LocalStorage

    storage = LocalStorage(server.data_dir)
    admin = await server.admin()
    kept, preserved = [
        (await admin.upload("/api/upload", image_bytes("PNG", color=c))).json()["id"]
        for c in ((1, 2, 3), (4, 5, 6))]
    deleted = await admin.post_json(f"/api/image/{preserved}", {"preserveOnDisk": True},
                                    method="DELETE")
    assert deleted.code == 204
    # What a crash between storing an upload and recording it leaves behind: one long
    # ago, one a moment ago (an upload that is still being recorded looks the same).
    crashed, in_flight = "a1" + "0" * 34, "b2" + "0" * 34
    for image_id in (crashed, in_flight):
        storage.put_original(image_id, "png", image_bytes("PNG"))
    an_hour_ago = time.time() - 3700
    for image_id in (kept, preserved, crashed):
        os.utime(storage.original_path(image_id, "png"), (an_hour_ago, an_hour_ago))
    cli = local_cli(server)

    report = await cli.json("gc", "--dry-run")
    assert (report["dryRun"], report["imageIds"], report["originals"]) == (True, [crashed], 1)
    assert report["originalBytes"] == len(image_bytes("PNG"))
    assert storage.original_path(crashed, "png").exists()

    assert (await cli.json("gc"))["imageIds"] == [crashed]
    assert not storage.original_path(crashed, "png").exists()
    for image_id in (kept, preserved, in_flight):
        assert storage.original_path(image_id, "png").exists()
    assert (await server.client.get(f"/image/{kept}.png")).code == 200
    assert (await cli.json("gc"))["originals"] == 0
    assert (await cli.json("gc", "--older-than", "0"))["imageIds"] == [in_flight]
    line = (await cli.ok("gc")).stdout
    assert line.startswith("Removed 0 originals without a record (0 B)")
    assert "--older-than" in await cli.fails("gc", "--older-than", "-1", code=2)


@pytest_twisted.ensureDeferred
async def test_gc_removes_cached_variants_of_images_without_a_record(server):
    admin = await server.admin()
    kept = (await admin.upload("/api/upload", image_bytes("PNG"))).json()["id"]
    assert (await server.client.get(f"/image/{kept}.jpg?w=10")).code == 200
    await server.imagehost.delivery.written()
    # What a daemon stopped before it removed a deleted image's variants leaves behind.
    cache = server.data_dir / "cache"
    left, young = cache / "c3" / ("c3" + "0" * 34), cache / "d4" / ("d4" + "0" * 34)
    for folder in (left, young):
        folder.mkdir(parents=True)
        (folder / "r1-10x10.jpg").write_bytes(image_bytes("JPEG"))
    an_hour_ago = time.time() - 3700
    for path in (*cache.rglob("*.jpg"), *cache.rglob("*.png")):
        os.utime(path, (an_hour_ago, an_hour_ago))
    os.utime(young / "r1-10x10.jpg")
    cli = local_cli(server)
    report = await cli.json("gc")
    assert report["imageIds"] == [left.name]
    assert [f["path"] for f in report["files"]] == [f"cache/c3/{left.name}/r1-10x10.jpg"]
    assert not left.exists() and (young / "r1-10x10.jpg").exists()
    assert [p for p in (cache / kept[:2] / kept).iterdir()]  # a recorded image's stay
    hit = await server.client.get(f"/image/{kept}.jpg?w=10")
    assert (hit.code, hit.header("X-Cache")) == (200, "HIT")


@pytest_twisted.ensureDeferred
async def test_a_delete_marks_the_image_so_no_render_under_way_caches_it(server):
    admin = await server.admin()
    image_id = (await admin.upload("/api/upload", image_bytes("PNG"))).json()["id"]
    cache = server.imagehost.delivery.cache
    assert not cache.is_deleted(image_id)
    deleted = await admin.post_json(f"/api/image/{image_id}", {}, method="DELETE")
    assert deleted.code == 204
    assert cache.is_deleted(image_id)

