"""The HTTP site: request body limits, access log, and tracking of in-flight requests."""

from __future__ import annotations

import json
import time

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.web import server

_log = Logger(namespace="imagehost.access")


def _too_large_response(limit: int) -> bytes:
    body = json.dumps({"error": {
        "title": "PayloadTooLarge",
        "message": f"The request body is larger than the limit of {limit} bytes.",
    }}).encode()
    return (b"HTTP/1.1 413 Payload Too Large\r\n"
            b"Content-Type: application/json\r\n"
            b"X-Content-Type-Options: nosniff\r\n"
            b"Connection: close\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


class LimitedRequest(server.Request):
    """A request that refuses a body over the site's cap while it arrives (413).

    ``Content-Length`` is checked before any body byte is read; chunked bodies are
    counted chunk by chunk. The refusal is written straight to the transport and the
    rest of the body is discarded, never stored.
    """

    _received = 0
    _refused = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.started = time.monotonic()

    @property
    def _limit(self) -> int:
        return self.channel.site.max_body_size

    def gotLength(self, length):
        if length is not None and length > self._limit:
            # Stop Twisted from inviting the body with "100 Continue".
            self.requestHeaders.removeHeader(b"expect")
            self._refuse()
        super().gotLength(None if self._refused else length)

    def handleContentChunk(self, data):
        if self._refused:
            return
        self._received += len(data)
        if self._received > self._limit:
            self._refuse()
            return
        super().handleContentChunk(data)

    def requestReceived(self, command, path, version):
        if self._refused:
            return
        super().requestReceived(command, path, version)

    def _refuse(self) -> None:
        self._refused = True
        if getattr(self, "content", None) is not None:
            self.content.close()
        self.code = 413
        transport = self.channel.transport
        transport.write(_too_large_response(self._limit))
        transport.loseWriteConnection()
        # Give the client a moment to read the answer, then drop the connection.
        self.channel.site.reactor.callLater(2, transport.abortConnection)
        self.channel.site.log(self)


class ImagehostSite(server.Site):
    """A Site that caps request bodies, logs each request, and can wait for in-flight ones."""

    requestFactory = LimitedRequest

    def __init__(self, resource, reactor, max_body_size: int):
        super().__init__(resource, parsePOSTFormSubmission=False)
        self.reactor = reactor
        self.max_body_size = max_body_size
        self.in_flight: set[server.Request] = set()
        self._idle_waiters: list[Deferred] = []

    def getResourceFor(self, request):
        self.in_flight.add(request)
        request.notifyFinish().addBoth(self._finished, request)
        return super().getResourceFor(request)

    def _finished(self, _result, request) -> None:
        self.in_flight.discard(request)
        if not self.in_flight:
            waiters, self._idle_waiters = self._idle_waiters, []
            for d in waiters:
                d.callback(None)

    def when_idle(self) -> Deferred:
        """Fires once no request is in flight."""
        if not self.in_flight:
            return succeed(None)
        d: Deferred = Deferred()
        self._idle_waiters.append(d)
        return d

    def log(self, request) -> None:
        elapsed_ms = (time.monotonic() - getattr(request, "started", time.monotonic())) * 1000
        _log.info(
            '{client} "{method} {uri}" {code} {length} {elapsed_ms:.1f}ms "{agent}"',
            client=request.getClientAddress().host if request.getClientAddress() else "-",
            method=request.method.decode("ascii", "replace"),
            uri=request.uri.decode("ascii", "replace")[:500],
            code=request.code,
            length=request.sentLength,
            elapsed_ms=elapsed_ms,
            agent=(request.getHeader(b"user-agent") or b"-").decode("ascii", "replace")[:200],
        )
