"""The twistd services of one daemon process: the installation's lifecycle and its listeners.

``imagehost.assembly.build_daemon`` builds them; ``imagehost.tap.makeService`` adds the
listeners and, with ``--workers``, the worker processes.
"""

from __future__ import annotations

import os
import re

from twisted.application import service
from twisted.internet import endpoints
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.error import CannotListenError
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from imagehost.service import Imagehost
from imagehost.web.site import ImagehostSite

_log = Logger()


class ImagehostService(service.Service):
    """Starts the pools; on stop, lets in-flight requests finish, then stops them."""

    def __init__(self, imagehost: Imagehost, site: ImagehostSite, reactor,
                 shutdown_timeout: float, sweep_interval: float = 0.0):
        self.imagehost = imagehost
        self._sweep_interval = sweep_interval
        self._sweeper: LoopingCall | None = None
        self._sweeping: Deferred | None = None
        self.site = site
        self._reactor = reactor
        self._shutdown_timeout = shutdown_timeout
        self.delivery_started: Deferred | None = None

    def startService(self) -> None:
        super().startService()
        self.site.access_log.start()
        self.imagehost.start()
        # View flushing and the variant cache scan (the scan runs off the reactor).
        self.delivery_started = Deferred.fromCoroutine(self.imagehost.delivery.start())
        self.delivery_started.addErrback(
            lambda f: _log.failure("Cannot start image delivery", f))
        if self._sweep_interval > 0:
            self._sweeper = LoopingCall(self._sweep_expired)
            self._sweeper.clock = self._reactor
            self._sweeper.start(self._sweep_interval, now=False)

    def _sweep_expired(self) -> Deferred:
        """Delete expired images (a failure is logged; the next sweep tries again)."""
        d = Deferred.fromCoroutine(self.imagehost.expired.sweep())
        d.addCallback(lambda ids: ids and _log.info("Deleted {n} expired images", n=len(ids)))
        d.addErrback(lambda f: _log.failure("Sweeping expired images failed", f))
        self._sweeping = d
        return d

    async def _stop(self) -> None:
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        if self._sweeping is not None and not self._sweeping.called:
            await self._sweeping  # it needs the pools, which stop below
        idle = self.site.when_idle()
        idle.addTimeout(self._shutdown_timeout, self._reactor)
        try:
            await idle
        except Exception:
            _log.warn("Stopping with {n} requests still in flight", n=len(self.site.in_flight))
        # Pending view counts need the DB pool, so before it stops.
        await self.delivery_started
        await self.imagehost.delivery.stop()
        await self.site.access_log.stop()  # its last lines go through the I/O pool
        self.imagehost.stop()

    def stopService(self) -> Deferred:
        super().stopService()
        return Deferred.fromCoroutine(self._stop())


class CannotListen(Exception):
    """An endpoint cannot be listened on; the message names it and says why."""


class ListeningService(service.Service):
    """Listens on one endpoint string from ``listen()`` on; ``listening`` fires with the
    port.

    Not Twisted's ``StreamServerEndpointService``, on purpose: that one listens in
    ``privilegedStartService``, after twistd has daemonized and written its pid file.
    ``listen()`` binds while ``makeService`` runs, so a port in use ends twistd at once
    with one line, and the daemon never runs without its listeners.
    """

    def __init__(self, reactor, description: str, factory):
        self._reactor = reactor
        self.description = description
        self.factory = factory
        self.port = None
        self.listening: Deferred = Deferred()

    def listen(self) -> None:
        """Start listening; CannotListen if the endpoint refuses at once.

        Twisted's own endpoints (tcp, ssl, unix, systemd) bind synchronously, so a port in
        use or a bad interface is known here.
        """
        try:
            endpoint = endpoints.serverFromString(self._reactor, self.description)
        except Exception as e:  # missing or unreadable TLS files, for example
            raise CannotListen(f"cannot listen on {self.description}: "
                               f"{endpoint_problem(self.description, e)}") from e
        outcome: list = []
        d = endpoint.listen(self.factory)
        d.addBoth(lambda result: outcome.append(result) or result)
        if outcome and isinstance(outcome[0], Failure):
            d.addErrback(lambda _: None)
            raise CannotListen(f"cannot listen on {self.description}: "
                               f"{listen_problem(outcome[0].value)}")
        d.addCallbacks(self._listened, self._failed)

    def _listened(self, port) -> None:
        self.port = port
        _log.info("imagehost listening on {description}", description=self.description)
        self.listening.callback(port)

    def _failed(self, failure) -> None:
        # Only an endpoint that binds asynchronously gets here.
        _log.error("imagehost: cannot listen on {description}: {reason}; stopping",
                   description=self.description, reason=listen_problem(failure.value))
        self.listening.errback(failure)
        self._reactor.callWhenRunning(self._reactor.stop)

    def stopService(self):
        super().stopService()
        if self.port is not None:
            return self.port.stopListening()


def listen_problem(error: BaseException) -> str:
    """``Address already in use`` rather than Twisted's whole exception text."""
    if isinstance(error, CannotListenError):
        error = error.socketError
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


_ENDPOINT_FILE_OPTIONS = ("privateKey", "certKey", "extraCertChain", "dhParameters",
                          "caCertsDir")


def endpoint_problem(description: str, error: Exception) -> str:
    """Why an endpoint string could not be built, naming the file when one is missing
    (Twisted's ssl parser raises FileNotFoundError without the file's name)."""
    files = {option: value for option, value in _options(description).items()
             if option in _ENDPOINT_FILE_OPTIONS}
    if isinstance(error, OSError):
        for option, path in files.items():
            if not os.access(path, os.R_OK):
                return f"{option} {path}: {os.strerror(error.errno or 2)}"
        return os_problem(error)
    if type(error).__module__.startswith("OpenSSL"):
        named = ", ".join(f"{option} {path}" for option, path in files.items())
        return f"not a PEM key and certificate ({named})"
    return str(error) or type(error).__name__


def os_problem(error: OSError) -> str:
    """``Permission denied: /srv/secret.key``"""
    return f"{error.strerror or error}: {error.filename or ''}".rstrip(": ")


def _options(description: str) -> dict[str, str]:
    """The ``name=value`` options of an endpoint string, for naming files in a message
    (Twisted's parser is private; an escaped colon in a file name is not split here,
    which at worst leaves the file unnamed)."""
    parts = re.split(r"(?<!\\):", description)[1:]
    return dict(part.replace("\\:", ":").split("=", 1) for part in parts if "=" in part)


class Daemon(service.MultiService):
    """The service tree of one daemon process, with what a caller may need from it."""

    def __init__(self, imagehost: Imagehost, site: ImagehostSite, lifecycle: ImagehostService):
        super().__init__()
        self.imagehost = imagehost
        self.site = site
        self.lifecycle = lifecycle
        lifecycle.setServiceParent(self)
        self.listeners: list[ListeningService] = []

    def listen(self, reactor, descriptions: list[str]) -> None:
        """Listen on Twisted endpoint strings now; CannotListen (and nothing left
        listening) if one of them refuses."""
        for description in descriptions:
            listener = ListeningService(reactor, description, self.site)
            try:
                listener.listen()
            except CannotListen:
                for started in self.listeners:
                    if started.port is not None:
                        started.port.stopListening()
                raise
            listener.setServiceParent(self)
            self.listeners.append(listener)

    def listening(self) -> Deferred:
        """Fires with every listening port, in the order the listeners were added."""
        return gatherResults([listener.listening for listener in self.listeners])
