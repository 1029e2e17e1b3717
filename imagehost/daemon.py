"""The twistd services of one daemon process: the installation's lifecycle and its listeners.

``imagehost.assembly.build_daemon`` builds them; ``imagehost.tap.makeService`` adds the
listeners and, with ``--workers``, the worker processes.
"""

from __future__ import annotations

from twisted.application import service
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import endpoints
from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger

from imagehost.service import Imagehost
from imagehost.web.site import ImagehostSite

_log = Logger()


class ImagehostService(service.Service):
    """Starts the pools; on stop, lets in-flight requests finish, then stops them."""

    def __init__(self, imagehost: Imagehost, site: ImagehostSite, reactor,
                 shutdown_timeout: float):
        self.imagehost = imagehost
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

    async def _stop(self) -> None:
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


class ListeningEndpoint:
    """An ``IStreamServerEndpoint`` that says when it listens: ``listening`` fires with the
    port. If listening fails, the daemon stops (twistd would otherwise run deaf)."""

    def __init__(self, reactor, description: str):
        self._reactor = reactor
        self.description = description
        self._endpoint = endpoints.serverFromString(reactor, description)
        self.listening: Deferred = Deferred()

    def listen(self, factory) -> Deferred:
        d = self._endpoint.listen(factory)
        d.addCallbacks(self._listened, self._failed)
        return d

    def _listened(self, port):
        _log.info("imagehost listening on {description}", description=self.description)
        self.listening.callback(port)
        return port

    def _failed(self, failure) -> None:
        _log.failure("Cannot listen on {description}", failure, description=self.description)
        self.listening.errback(failure)
        if self._reactor.running:
            self._reactor.stop()
        else:
            self._reactor.callWhenRunning(self._reactor.stop)
        # Handled here: StreamServerEndpointService would log it a second time.


class Daemon(service.MultiService):
    """The service tree of one daemon process, with what a caller may need from it."""

    def __init__(self, imagehost: Imagehost, site: ImagehostSite, lifecycle: ImagehostService):
        super().__init__()
        self.imagehost = imagehost
        self.site = site
        self.lifecycle = lifecycle
        lifecycle.setServiceParent(self)
        self.endpoints: list[ListeningEndpoint] = []

    def listen(self, reactor, description: str) -> ListeningEndpoint:
        """Add a listener on a Twisted endpoint string (it listens when started)."""
        endpoint = ListeningEndpoint(reactor, description)
        StreamServerEndpointService(endpoint, self.site).setServiceParent(self)
        self.endpoints.append(endpoint)
        return endpoint

    def listening(self) -> Deferred:
        """Fires with every listening port, in the order the listeners were added."""
        return gatherResults([endpoint.listening for endpoint in self.endpoints])
