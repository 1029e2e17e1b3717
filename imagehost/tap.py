"""The twistd plugin's tap module: options, and the twistd service tree of the daemon.

What the daemon is made of is built by ``imagehost.assembly``; this module parses the
command line, turns operator mistakes into one line, and adds the listeners and the
``--workers`` processes.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from twisted.application import service
from twisted.python import usage

from imagehost import footprint
from imagehost.config import HANDOFF_ENDPOINTS, Config, ConfigError, load_config, parse_workers
from imagehost.db import MigrationFailed, printable_url

# Nothing here imports the reactor, Twisted's endpoints or PyJWT before postOptions has
# read the configuration: they would load the TLS libraries (imagehost.footprint).


class Options(usage.Options):
    """``twistd imagehost`` options."""

    synopsis = "[--listen ENDPOINT ...] [--data-dir DIR] [--config FILE]"
    optParameters = [
        ["data-dir", "d", None, "Data directory (default ./data, or [server] data_dir)."],
        ["config", "c", None, "Configuration file (ini); see etc/imagehost.ini."],
        ["workers", "w", None, "Processes serving the listening sockets: a number, or auto "
         "(the default, or [server] workers): one per core. tcp and unix endpoints only "
         "when above 1."],
    ]

    def __init__(self):
        super().__init__()
        self["listen"] = []

    def opt_listen(self, endpoint: str) -> None:
        """Listen on a Twisted endpoint, e.g. tcp:8080 (repeatable; default tcp:8080)."""
        self["listen"].append(endpoint)  # checked in postOptions

    opt_l = opt_listen

    def postOptions(self) -> None:
        if self["config"] and not Path(self["config"]).is_file():
            raise usage.UsageError(f"--config {self['config']}: no such file")
        try:
            self.config = options_config(self)
        except ConfigError as e:
            # A mistake in the file or the environment, not in the command line: one
            # line, without twistd's usage text.
            raise operator_mistake(str(e)) from e
        footprint.leave_out_tls(self.config)
        for endpoint in self["listen"]:
            check_endpoint(endpoint)
        footprint.run_lean()  # the options are good: start again without docstrings


def check_endpoint(endpoint: str) -> None:
    """UsageError for a ``--listen`` that is no endpoint; one line for one that cannot be
    built (ssl: also loads the key and certificate)."""
    from twisted.internet import endpoints

    from imagehost.daemon import endpoint_problem

    try:
        # Built only, to check it; makeService builds it again with the reactor.
        endpoints.serverFromString(None, endpoint)
    except (ValueError, KeyError) as e:
        raise usage.UsageError(f"--listen {endpoint!r} is not a valid endpoint: {e}") from e
    except Exception as e:
        raise operator_mistake(f"cannot listen on {endpoint}: "
                               f"{endpoint_problem(endpoint, e)}") from e


def operator_mistake(message: str) -> SystemExit:
    """What ends twistd on an operator mistake: ``message`` on stderr, exit status 1."""
    return SystemExit(f"imagehost: {message}")


def options_config(options) -> Config:
    workers = options.get("workers")
    if workers is not None:
        try:
            workers = parse_workers(workers)
        except ValueError as e:
            raise usage.UsageError(f"--workers {workers!r} is neither a number nor auto") from e
    config = load_config(options["config"], overrides={
        ("server", "data_dir"): options["data-dir"],
        ("server", "listen"): options["listen"] or None,
        ("server", "workers"): workers,
    })
    if config.processes() < 1:
        raise ConfigError("the number of workers must be at least 1")
    if config.processes() > 1 and not all(
            d.split(":", 1)[0] in HANDOFF_ENDPOINTS for d in config.server.listen):
        raise ConfigError("--workers above 1 needs tcp, tcp6 or unix endpoints "
                          "(terminate TLS in front, e.g. nginx)")
    return config


def installation_problem(config: Config, error: Exception) -> str:
    """One line for a failure of ``prepare_installation``."""
    from imagehost.daemon import os_problem

    if isinstance(error, OSError):
        return os_problem(error)
    if isinstance(error, sa.exc.OperationalError):
        url = printable_url(config.database_url)
        reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
        return f"cannot use the database {url}: {reason}"
    return str(error)


def makeService(options, reactor=None) -> service.MultiService:
    """Build the whole daemon from parsed ``Options`` (an ``imagehost.daemon.Daemon``),
    already listening.

    Operator mistakes (a data directory that cannot be written, a port in use, missing
    TLS files, a bad admin password) end twistd with one line and exit status 1.
    """
    twistd_runs_us = reactor is None  # tests pass their reactor, and migrate in-process
    if twistd_runs_us:
        from twisted.internet import reactor
    from imagehost.assembly import build_daemon, prepare_installation, warn_if_no_users
    from imagehost.daemon import CannotListen
    from imagehost.processes import WorkerProcesses

    config = options.config
    try:
        # Migrating in a child when twistd runs us: Alembic is not kept in the daemon.
        secret = prepare_installation(config, migrate_apart=twistd_runs_us)
        warn_if_no_users(config, options["config"])
    except (ConfigError, OSError, sa.exc.OperationalError, MigrationFailed) as e:
        raise operator_mistake(installation_problem(config, e)) from e
    daemon = build_daemon(config, reactor, secret)
    try:
        daemon.listen(reactor, config.server.listen)
    except CannotListen as e:
        raise operator_mistake(str(e)) from e
    if config.processes() > 1:
        arguments = ["--data-dir", str(config.data_dir.absolute())]
        if options["config"]:
            arguments += ["--config", str(Path(options["config"]).absolute())]
        WorkerProcesses(reactor, config.processes() - 1, daemon.listeners, daemon.site,
                        arguments, config.server.shutdown_timeout).setServiceParent(daemon)
    if twistd_runs_us:  # not in a test's process: its heap is the test run's
        reactor.callWhenRunning(footprint.freeze_startup_heap, "imagehost twistd")
    return daemon
