"""Operator mistakes end the real twistd daemon at once: one line naming the problem,
exit status 1, no traceback, no pid file, never a daemon that runs without serving.
The CLI reports the same mistakes the same way."""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest
import pytest_twisted

from imagehost.config import load_config
from tests.test_cli import Cli, _run_cli_process
from tests.test_daemon import REPO, TWISTD, free_port, stop_cleanly, wait_for_health


def run_twistd(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """``twistd -n imagehost ARGS`` in ``tmp_path`` (which holds its pid file)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEHOST_")}
    environment.update(PYTHONPATH=str(REPO), **env)
    arguments = list(args)
    if "--data-dir" not in arguments:
        arguments += ["--data-dir", str(tmp_path / "data")]
    return subprocess.run(TWISTD + ["-n", "--pidfile", "twistd.pid", "imagehost", *arguments],
                          cwd=tmp_path, env=environment, capture_output=True, text=True,
                          timeout=60, check=False)


def assert_one_line_and_exit_1(done: subprocess.CompletedProcess, tmp_path: Path,
                               pattern: str) -> None:
    output = (done.stdout + done.stderr).strip()
    assert done.returncode == 1, output
    assert "Traceback" not in output
    assert len(output.splitlines()) == 1, output
    assert re.fullmatch(pattern, output), output
    assert not (tmp_path / "twistd.pid").exists()


def test_a_port_in_use_ends_the_daemon_naming_the_endpoint(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        free = free_port()
        done = run_twistd(tmp_path, "--listen", f"tcp:{free}:interface=127.0.0.1",
                          "--listen", f"tcp:{port}:interface=127.0.0.1")
    assert_one_line_and_exit_1(done, tmp_path, re.escape(
        f"imagehost: cannot listen on tcp:{port}:interface=127.0.0.1: Address already in use"))
    # The endpoint that did listen was closed again: nothing keeps serving.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", free))


@pytest.mark.parametrize("listen, message", [
    ("tcp:{port}:interface=999.1.1.1",
     "cannot listen on tcp:{port}:interface=999.1.1.1: Name or service not known"),
    ("ssl:{port}:privateKey=missing-key.pem:certKey=missing-cert.pem",
     "cannot listen on ssl:{port}:privateKey=missing-key.pem:certKey=missing-cert.pem: "
     "privateKey missing-key.pem: No such file or directory"),
    ("ssl:{port}:privateKey=garbage.pem",
     "cannot listen on ssl:{port}:privateKey=garbage.pem: "
     "not a PEM key and certificate (privateKey garbage.pem)"),
])
def test_endpoints_that_cannot_listen_end_the_daemon(tmp_path, listen, message):
    (tmp_path / "garbage.pem").write_text("not a key\n")
    port = free_port()
    done = run_twistd(tmp_path, "--listen", listen.format(port=port))
    assert_one_line_and_exit_1(done, tmp_path,
                               re.escape("imagehost: " + message.format(port=port)))


def test_missing_tls_files_named_in_the_config_file_end_the_daemon(tmp_path):
    (tmp_path / "tls.ini").write_text("[server]\nlisten = ssl:8443:privateKey=/no/key.pem\n")
    done = run_twistd(tmp_path, "--config", "tls.ini")
    assert_one_line_and_exit_1(done, tmp_path, re.escape(
        "imagehost: cannot listen on ssl:8443:privateKey=/no/key.pem: "
        "privateKey /no/key.pem: No such file or directory"))


def test_a_data_directory_that_cannot_be_created_or_written_ends_the_daemon(tmp_path):
    (tmp_path / "a-file").write_text("")
    inside_a_file = run_twistd(tmp_path, "--data-dir", str(tmp_path / "a-file" / "data"))
    assert_one_line_and_exit_1(inside_a_file, tmp_path, re.escape(
        f"imagehost: the data directory {tmp_path / 'a-file' / 'data'} cannot be created "
        "or written: Not a directory"))
    # The tests run as root, whom permissions do not stop; /proc refuses even root.
    read_only = run_twistd(tmp_path, "--data-dir", "/proc/self")
    assert_one_line_and_exit_1(read_only, tmp_path, re.escape(
        "imagehost: the data directory /proc/self cannot be created or written: ") + ".+")


@pytest.mark.parametrize("content", ["just some words\n", "\x00\x01\x02 binary"])
def test_a_config_file_that_is_not_an_ini_file_ends_the_daemon(tmp_path, content):
    (tmp_path / "notes.txt").write_text(content)
    done = run_twistd(tmp_path, "--config", "notes.txt")
    assert_one_line_and_exit_1(done, tmp_path, re.escape(
        "imagehost: config file notes.txt is not an ini file: File contains no section "
        "headers (line 1)"))


def test_an_environment_variable_naming_no_setting_ends_the_daemon(tmp_path):
    done = run_twistd(tmp_path, IMAGEHOST_ADMIN_PASWORD="change-me-please")
    assert_one_line_and_exit_1(done, tmp_path, re.escape(
        "imagehost: environment variable IMAGEHOST_ADMIN_PASWORD names no setting; "
        "did you mean IMAGEHOST_ADMIN_PASSWORD?"))


@pytest.mark.parametrize("env, message", [
    ({"IMAGEHOST_ADMIN_PASSWORD": "x"},
     "IMAGEHOST_ADMIN_PASSWORD ([admin] password): This value is too short. It should "
     "have 8 characters or more."),
    ({"IMAGEHOST_ADMIN_PASSWORD": "long-enough", "IMAGEHOST_ADMIN_EMAIL": "nobody"},
     "IMAGEHOST_ADMIN_EMAIL ([admin] email): This value is not a valid email address."),
])
def test_the_bootstrap_admin_obeys_the_rules_of_user_create(tmp_path, env, message):
    done = run_twistd(tmp_path, IMAGEHOST_ADMIN_USERNAME="admin", **env)
    assert_one_line_and_exit_1(done, tmp_path, re.escape(
        f"imagehost: the first administrator cannot be created: {message}"))


def test_no_users_logs_the_command_that_creates_an_administrator(tmp_path):
    port = free_port()
    data_dir = tmp_path / "data"
    log = tmp_path / "twistd.log"
    with log.open("wb") as out:
        daemon = subprocess.Popen(
            TWISTD + ["-n", "--pidfile=", "imagehost", "--listen",
                      f"tcp:{port}:interface=127.0.0.1", "--data-dir", str(data_dir)],
            cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=out,
            stderr=subprocess.STDOUT)
        try:
            wait_for_health(f"http://127.0.0.1:{port}")
            text = log.read_text()
            command = re.search(r"Create an administrator with: (imagehost .*)$", text,
                                re.MULTILINE).group(1)
            assert command == (f"imagehost --data-dir {data_dir} user create admin "
                               "--email admin@example.com --admin")
            # The command does what it says, on the running daemon's installation.
            argv = shlex.split(command)[1:] + ["--password", "a-good-password"]
            proc = _run_cli_process(*argv)
            assert proc.wait(60) == 0, proc.stderr.read()
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/api/auth/login", method="POST",
                data=b'{"username": "admin", "password": "a-good-password"}')
            with urllib.request.urlopen(request, timeout=5) as response:
                assert response.status == 200
        finally:
            stop_cleanly(daemon, log)


def test_a_daemon_with_users_does_not_warn(tmp_path):
    port = free_port()
    log = tmp_path / "twistd.log"
    env = dict(os.environ, PYTHONPATH=str(REPO), IMAGEHOST_ADMIN_USERNAME="admin",
               IMAGEHOST_ADMIN_PASSWORD="change-me-please")
    with log.open("wb") as out:
        daemon = subprocess.Popen(
            TWISTD + ["-n", "--pidfile=", "imagehost", "--listen",
                      f"tcp:{port}:interface=127.0.0.1", "--data-dir", str(tmp_path / "d")],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for_health(f"http://127.0.0.1:{port}")
        finally:
            text = stop_cleanly(daemon, log)
    assert "Created administrator admin" in text
    assert "No user exists yet" not in text


# -- configuration ----------------------------------------------------------------------


@pytest.mark.parametrize("name, hint", [
    ("IMAGEHOST_DATABSE_URL", "; did you mean IMAGEHOST_DATABASE_URL?"),
    ("IMAGEHOST_IMAGE_MAXSIZE", "; did you mean IMAGEHOST_IMAGE_MAX_SIZE?"),
    ("IMAGEHOST_XYZZY", ""),
])
def test_unknown_imagehost_environment_variables_are_refused(name, hint):
    from imagehost.config import ConfigError

    with pytest.raises(ConfigError) as refused:
        load_config(None, environ={name: "1"})
    assert str(refused.value) == f"environment variable {name} names no setting{hint}"


def test_the_cli_and_test_variables_are_not_settings_and_are_allowed():
    config = load_config(None, environ={
        "IMAGEHOST_URL": "http://x", "IMAGEHOST_API_KEY": "sk_x", "IMAGEHOST_DEBUG": "1",
        "IMAGEHOST_TEST_PG_BINDIR": "/usr/lib/postgresql/15/bin", "IMAGEHOST_IMAGE_MAX_SIZE": "5",
        "OTHER": "ignored"})
    assert config.get("image", "max_size") == 5


def test_an_unknown_ini_key_suggests_the_nearest(tmp_path):
    from imagehost.config import ConfigError

    (tmp_path / "a.ini").write_text("[server]\nlisten_on = tcp:1\n")
    with pytest.raises(ConfigError, match=re.escape(
            "unknown key [server] listen_on; did you mean [server] listen?")):
        load_config(tmp_path / "a.ini", environ={})


# -- the CLI ------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_the_cli_reports_the_same_mistakes_in_one_line_with_exit_1(tmp_path):
    (tmp_path / "notes.txt").write_text("just some words\n")
    (tmp_path / "a-file").write_text("")
    not_ini = await Cli(["--config", str(tmp_path / "notes.txt")]).fails("init")
    assert not_ini == (f"config file {tmp_path / 'notes.txt'} is not an ini file: "
                       "File contains no section headers (line 1)")
    data_dir = tmp_path / "a-file" / "data"
    unwritable = await Cli(["--data-dir", str(data_dir)]).fails("user", "list")
    assert unwritable == (f"the data directory {data_dir} cannot be created or written: "
                          "Not a directory")
    misspelt = await Cli(["--data-dir", str(tmp_path / "d")],
                         env={"IMAGEHOST_ADMIN_PASWORD": "x"}).fails("init")
    assert misspelt == ("environment variable IMAGEHOST_ADMIN_PASWORD names no setting; "
                        "did you mean IMAGEHOST_ADMIN_PASSWORD?")
    short = await Cli(["--data-dir", str(tmp_path / "d")], env={
        "IMAGEHOST_ADMIN_USERNAME": "admin", "IMAGEHOST_ADMIN_PASSWORD": "x"}).fails("init")
    assert short.startswith("the first administrator cannot be created: "
                            "IMAGEHOST_ADMIN_PASSWORD ([admin] password): This value is too short.")



def test_a_database_newer_than_this_imagehost_ends_the_daemon(tmp_path):
    # What an older imagehost finds after a newer one migrated the database: the daemon
    # migrates in a child process, which says why it could not.
    import sqlalchemy as sa

    (tmp_path / "data").mkdir()
    url = f"sqlite:///{tmp_path / 'data' / 'imagehost.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)"))
        conn.execute(sa.text("INSERT INTO alembic_version VALUES ('9999')"))
    engine.dispose()
    done = run_twistd(tmp_path)
    assert_one_line_and_exit_1(done, tmp_path, re.escape(
        f"imagehost: cannot migrate the database {url}: CommandError: ") + ".*'9999'.*")
