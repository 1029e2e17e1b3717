"""The HTTP site: request body limits, access log, and tracking of in-flight requests."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web import server
from twisted.web.http import HTTPChannel

from imagehost.web.clients import ClientAddresses

_log = Logger(namespace="imagehost.access")


@dataclass(frozen=True)
class SiteLimits:
    """What a client may send: body and header sizes, URI length, and how slowly."""

    max_body_size: int = 64 * 1000 * 1000
    max_header_size: int = 16384
    max_uri_length: int = 8192
    header_timeout: float = 10.0
    idle_timeout: float = 60.0


def _error_json(title: str, message: str) -> bytes:
    return json.dumps({"error": {"title": title, "message": message}}).encode()


def _raw_response(status: bytes, body: bytes) -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\n"
            b"Content-Type: application/json\r\n"
            b"X-Content-Type-Options: nosniff\r\n"
            b"Connection: close\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def _too_large_response(limit: int) -> bytes:
    return _raw_response(b"413 Payload Too Large", _error_json(
        "PayloadTooLarge", f"The request body is larger than the limit of {limit} bytes."))


class ImagehostChannel(HTTPChannel):
    """An HTTP channel that gives a client ``header_timeout`` seconds to send a request's
    head, however slowly it trickles in (the idle timeout alone resets on every byte)."""

    _header_deadline = None
    _reading_body = False

    def dataReceived(self, data: bytes) -> None:
        if self._header_deadline is None and not self._reading_body and not self._handlingRequest:
            self._header_deadline = self.callLater(
                self.site.limits.header_timeout, self._header_timed_out)
        super().dataReceived(data)

    def allHeadersReceived(self) -> None:
        self._cancel_header_deadline()
        self._reading_body = True
        super().allHeadersReceived()

    def allContentReceived(self) -> None:
        self._reading_body = False
        super().allContentReceived()

    def connectionLost(self, reason) -> None:
        self._cancel_header_deadline()
        super().connectionLost(reason)

    def _cancel_header_deadline(self) -> None:
        if self._header_deadline is not None and self._header_deadline.active():
            self._header_deadline.cancel()
        self._header_deadline = None

    def _header_timed_out(self) -> None:
        self._header_deadline = None
        self.transport.write(_raw_response(b"408 Request Timeout", _error_json(
            "RequestTimeout", "The request head was not received in time.")))
        self.transport.loseConnection()


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
        return self.channel.site.limits.max_body_size

    def process(self):
        if len(self.uri) > self.channel.site.limits.max_uri_length:
            self.setResponseCode(414)
            self.setHeader(b"Content-Type", b"application/json")
            self.setHeader(b"X-Content-Type-Options", b"nosniff")
            self.write(_error_json("URITooLong", "The request URI is too long."))
            self.finish()
            return
        super().process()

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
        # The request line is known (the channel holds it) even though requestReceived
        # never runs for a refused request; keep it for the access log.
        self.method = getattr(self.channel, "_command", self.method)
        self.uri = getattr(self.channel, "_path", self.uri)
        self.path = self.uri.split(b"?", 1)[0]
        if getattr(self, "content", None) is not None:
            self.content.close()
        self.code = 413
        transport = self.channel.transport
        transport.write(_too_large_response(self._limit))
        transport.loseWriteConnection()
        # Give the client a moment to read the answer, then drop the connection.
        self.channel.callLater(2, transport.abortConnection)
        self.channel.site.log(self)


class ImagehostSite(server.Site):
    """A Site that caps request bodies, logs each request, and can wait for in-flight ones."""

    requestFactory = LimitedRequest
    protocol = ImagehostChannel

    def __init__(self, resource, reactor, limits: SiteLimits, metrics, access_log: AccessLog,
                 client_addresses: ClientAddresses):
        super().__init__(resource, parsePOSTFormSubmission=False, timeout=limits.idle_timeout,
                         reactor=reactor)
        self.limits = limits
        self.metrics = metrics
        self.access_log = access_log
        self.client_addresses = client_addresses
        self.in_flight: set[server.Request] = set()
        self._idle_waiters: list[Deferred] = []

    def buildProtocol(self, addr):
        channel = super().buildProtocol(addr)
        channel.totalHeadersSize = self.limits.max_header_size
        return channel

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
        """One access-log line per request (with latency), and the request metrics."""
        elapsed = time.monotonic() - getattr(request, "started", time.monotonic())
        self.metrics.observe(request.method.decode("ascii", "replace"),
                             request.path.decode("utf-8", "replace"), request.code, elapsed)
        self.access_log.record(request, elapsed, self.client_addresses.of(request))


_ACCESS_FORMAT = '{client} "{method} {uri}" {code} {length} {elapsed_ms:.1f}ms "{agent}"'


class AccessLog:
    """Where access-log lines go: Twisted's logger (``""``, the default), nowhere
    (``"off"``), or a file path. A file is written in batches once a second, by
    ``write_off_reactor`` (the I/O pool): the logger's per-event formatting costs a fifth
    of a cached image hit, and a slow disk must not stall the reactor."""

    def __init__(self, destination: str, clock,
                 write_off_reactor: Callable[..., Deferred]):
        self._destination = destination
        self._clock = clock
        self._write_off_reactor = write_off_reactor
        self._lines: list[str] = []
        self._file = None
        self._flusher = None
        self._writing: Deferred | None = None
        self._stamp = (0, "")

    def start(self) -> None:
        if self._destination not in ("", "off"):
            self._file = open(self._destination, "a", encoding="utf-8")  # noqa: SIM115
            self._flusher = LoopingCall(self.flush)
            self._flusher.clock = self._clock
            self._flusher.start(1.0, now=False)

    async def stop(self) -> None:
        """Write what is pending and close the file (call before the I/O pool stops)."""
        if self._flusher is not None and self._flusher.running:
            self._flusher.stop()
        if self._writing is not None:
            await self._writing
        await self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None

    def record(self, request, elapsed: float, client: str) -> None:
        if self._destination == "off":
            return
        fields = {
            "client": client,
            "method": request.method.decode("ascii", "replace"),
            "uri": request.uri.decode("ascii", "replace")[:500],
            "code": request.code, "length": request.sentLength, "elapsed_ms": elapsed * 1000,
            "agent": (request.getHeader(b"user-agent") or b"-").decode("ascii", "replace")[:200],
        }
        if self._file is None:
            _log.info(_ACCESS_FORMAT, **fields)
        else:
            self._lines.append(f"{self._now()} {_ACCESS_FORMAT.format(**fields)}\n")

    def _now(self) -> str:
        second = int(time.time())
        if self._stamp[0] != second:
            self._stamp = (second, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second)))
        return self._stamp[1]

    def flush(self) -> Deferred:
        """Hand the pending lines to an I/O thread; one write at a time, so lines keep
        their order (while one is running, lines wait for the next tick)."""
        if self._file is None or not self._lines or self._writing is not None:
            return succeed(None)
        lines, self._lines = self._lines, []
        self._writing = self._write_off_reactor(_append, self._file, "".join(lines))
        self._writing.addErrback(lambda f: _log.failure("Cannot write the access log", f))
        self._writing.addBoth(self._written)
        return self._writing

    def _written(self, _result) -> None:
        self._writing = None


def _append(file, text: str) -> None:
    file.write(text)
    file.flush()
