"""Configuration precedence, the documented example file, and the twistd options."""

import os

import pytest
from twisted.python import usage

from imagehost.config import KEYS, ConfigError, load_config
from imagehost.tap import Options
from tests.conftest import write_ini

EXAMPLE = "etc/imagehost.ini"


def test_example_file_documents_every_key_with_its_default():
    documented = load_config(EXAMPLE, environ={})
    defaults = load_config(None, environ={})
    for key in KEYS:
        assert documented.get(key.section, key.name) == defaults.get(key.section, key.name), key
    text = open(EXAMPLE).read()
    for key in KEYS:
        assert f"\n{key.name} =" in text, f"[{key.section}] {key.name} is not documented"


def test_precedence_defaults_file_environment_overrides(tmp_path):
    ini = write_ini(tmp_path / "a.ini", {"image": {"max_size": "1000", "max_pixels": "7"},
                                         "server": {"data_dir": "/from/file"}})
    env = {"IMAGEHOST_IMAGE_MAX_SIZE": "2000", "IMAGEHOST_SERVER_DATA_DIR": "/from/env"}
    config = load_config(ini, environ=env, overrides={("server", "data_dir"): "/from/cli"})
    assert config.get("image", "max_pixels") == 7
    assert config.get("image", "max_size") == 2000
    assert config.get("server", "data_dir") == "/from/cli"
    assert config.get("auth", "access_token_ttl") == 3600


def test_admin_bootstrap_comes_from_the_environment():
    env = {"IMAGEHOST_ADMIN_USERNAME": "root", "IMAGEHOST_ADMIN_PASSWORD": "pw",
           "IMAGEHOST_ADMIN_EMAIL": "root@example.com"}
    config = load_config(None, environ=env)
    assert [config.get("admin", k) for k in ("username", "password", "email")] == [
        "root", "pw", "root@example.com"]


@pytest.mark.parametrize("sections, message", [
    ({"image": {"colour": "red"}}, "unknown key [image] colour"),
    ({"image": {"max_size": "big"}}, "[image] max_size"),
    ({"access": {"allow_guest_uploads": "maybe"}}, "not a boolean"),
    ({"server": {"trusted_proxies": "127.0.0.1, the-proxy"}}, "[server] trusted_proxies"),
])
def test_bad_config_files_are_refused_with_a_sentence(tmp_path, sections, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(write_ini(tmp_path / "bad.ini", sections), environ={})


def test_options_parse_repeated_listen_and_paths(tmp_path):
    ini = write_ini(tmp_path / "c.ini", {})
    options = Options()
    options.parseOptions(["--listen", "tcp:8081", "--listen", "unix:/tmp/imagehost.sock",
                          "--data-dir", str(tmp_path / "d"), "--config", str(ini)])
    assert {k: options[k] for k in ("listen", "data-dir", "config")} == {
        "listen": ["tcp:8081", "unix:/tmp/imagehost.sock"],
        "data-dir": str(tmp_path / "d"),
        "config": str(ini),
    }
    assert options.config.get("server", "listen") == ["tcp:8081", "unix:/tmp/imagehost.sock"]


def test_options_default_to_port_8080_and_data(monkeypatch):
    for key in KEYS:
        monkeypatch.delenv(key.env_var, raising=False)
    options = Options()
    options.parseOptions([])
    assert options.config.get("server", "listen") == ["tcp:8080"]
    assert options.config.get("server", "data_dir") == "./data"
    assert options.config.get("server", "workers") == "auto"
    assert options.config.processes() == (os.cpu_count() or 1)


@pytest.mark.parametrize("argv, processes", [
    (["--workers", "3"], 3),
    (["--workers", "auto"], os.cpu_count() or 1),
])
def test_workers_is_a_number_or_auto(monkeypatch, argv, processes):
    for key in KEYS:
        monkeypatch.delenv(key.env_var, raising=False)
    options = Options()
    options.parseOptions(argv)
    assert options.config.processes() == processes


def test_auto_is_one_process_when_tls_cannot_be_handed_to_workers():
    listen = ["tcp:8080", "ssl:8443:privateKey=key.pem:certKey=cert.pem"]
    config = load_config(environ={}, overrides={("server", "listen"): listen})
    assert (config.server.workers, config.processes()) == ("auto", 1)


def test_workers_that_are_neither_a_number_nor_auto_are_usage_errors():
    with pytest.raises(usage.UsageError, match="neither a number nor auto"):
        Options().parseOptions(["--workers", "many"])
    with pytest.raises(ConfigError, match="number of processes or auto"):
        load_config(environ={"IMAGEHOST_SERVER_WORKERS": "many"})


@pytest.mark.parametrize("argv, message", [
    (["--listen", "nonsense:1"], "not a valid endpoint"),
    (["--config", "/no/such/file.ini"], "no such file"),
])
def test_bad_options_are_usage_errors(argv, message):
    with pytest.raises(usage.UsageError, match=message):
        Options().parseOptions(argv)
