"""The twistd plugin's tap module: options, and the twistd service tree of the daemon.

What the daemon is made of is built by ``imagehost.assembly``; this module only parses
the command line and adds the listeners and the ``--workers`` processes.
"""

from __future__ import annotations

from pathlib import Path

from twisted.application import service
from twisted.internet import endpoints
from twisted.python import usage

from imagehost.assembly import build_daemon, prepare_installation
from imagehost.config import Config, ConfigError, load_config
from imagehost.processes import WorkerProcesses


class Options(usage.Options):
    """``twistd imagehost`` options."""

    synopsis = "[--listen ENDPOINT ...] [--data-dir DIR] [--config FILE]"
    optParameters = [
        ["data-dir", "d", None, "Data directory (default ./data, or [server] data_dir)."],
        ["config", "c", None, "Configuration file (ini); see etc/imagehost.ini."],
        ["workers", "w", None, "Processes serving the listening sockets (default 1, or "
         "[server] workers); tcp and unix endpoints only when above 1.", int],
    ]

    def __init__(self):
        super().__init__()
        self["listen"] = []

    def opt_listen(self, endpoint: str) -> None:
        """Listen on a Twisted endpoint, e.g. tcp:8080 (repeatable; default tcp:8080)."""
        try:
            # Parsed only, to check it: makeService builds the endpoint with the reactor.
            endpoints.serverFromString(None, endpoint)
        except (ValueError, KeyError) as e:
            raise usage.UsageError(f"--listen {endpoint!r} is not a valid endpoint: {e}") from e
        self["listen"].append(endpoint)

    opt_l = opt_listen

    def postOptions(self) -> None:
        if self["config"] and not Path(self["config"]).is_file():
            raise usage.UsageError(f"--config {self['config']}: no such file")
        try:
            self.config = options_config(self)
        except ConfigError as e:
            raise usage.UsageError(str(e)) from e


def options_config(options) -> Config:
    config = load_config(options["config"], overrides={
        ("server", "data_dir"): options["data-dir"],
        ("server", "listen"): options["listen"] or None,
        ("server", "workers"): options.get("workers"),
    })
    if config.server.workers < 1:
        raise ConfigError("the number of workers must be at least 1")
    if config.server.workers > 1 and not all(
            d.split(":", 1)[0] in ("tcp", "tcp6", "unix") for d in config.server.listen):
        raise ConfigError("--workers above 1 needs tcp, tcp6 or unix endpoints "
                          "(terminate TLS in front, e.g. nginx)")
    return config


def makeService(options, reactor=None) -> service.MultiService:
    """Build the whole daemon from parsed ``Options`` (an ``imagehost.daemon.Daemon``)."""
    if reactor is None:
        from twisted.internet import reactor
    config = options.config
    daemon = build_daemon(config, reactor, prepare_installation(config))
    for description in config.server.listen:
        daemon.listen(reactor, description)
    if config.server.workers > 1:
        arguments = ["--data-dir", str(config.data_dir.absolute())]
        if options["config"]:
            arguments += ["--config", str(Path(options["config"]).absolute())]
        WorkerProcesses(reactor, config.server.workers - 1, daemon.endpoints, daemon.site,
                        arguments, config.server.shutdown_timeout).setServiceParent(daemon)
    return daemon
