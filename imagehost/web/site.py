"""The HTTP site: request body limits, access log, and tracking of in-flight requests."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web import server
from twisted.web.http import HTTPChannel

from imagehost.web.clients import ClientAddresses, addressed_host

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


_JSON_HEADERS = ((b"Content-Type", [b"application/json"]),
                 (b"X-Content-Type-Options", [b"nosniff"]))


def _raw_response(status: bytes, body: bytes,
                  headers: Iterable[tuple[bytes, Sequence[bytes]]] = _JSON_HEADERS) -> bytes:
    head = b"".join(name + b": " + value + b"\r\n" for name, values in headers
                    for value in values)
    return (b"HTTP/1.1 " + status + b"\r\n" + head + b"Connection: close\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


_URI_TOO_LONG = (b"414 URI Too Long", "URITooLong", "The request URI is too long.")
_HEADERS_TOO_LARGE = (b"431 Request Header Fields Too Large", "RequestHeaderFieldsTooLarge",
                      "The request's header fields are too large.")


def _too_large_response(limit: int) -> bytes:
    return _raw_response(b"413 Payload Too Large", _error_json(
        "PayloadTooLarge", f"The request body is larger than the limit of {limit} bytes."))


class ImagehostChannel(HTTPChannel):
    """An HTTP channel that gives a client ``header_timeout`` seconds to send a request's
    head, however slowly it trickles in (the idle timeout alone resets on every byte),
    and answers a head over its limits with 414 or 431 and the JSON envelope where
    Twisted would drop the connection without a word (or send a bare 400)."""

    _header_deadline = None
    _reading_body = False
    _head_started = False  # the request line of the current head has arrived
    _head_size = 0
    _refused_head = False

    def dataReceived(self, data: bytes) -> None:
        if self._refused_head:
            return  # the answer is out; the rest of this connection is not read
        if self._header_deadline is None and not self._reading_body and not self._handlingRequest:
            self._header_deadline = self.callLater(
                self.site.limits.header_timeout, self._header_timed_out)
        super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        if self._refused_head:
            return
        limits = self.site.limits
        if not self._head_started:
            self._head_started = bool(line)  # (Twisted skips one empty line before a request)
            target = line.split(b" ")[1:2]
            if target and len(target[0]) > limits.max_uri_length:
                self._refuse_head(*_URI_TOO_LONG)
                return
        else:
            self._head_size += len(line) + 2
            if self._head_size > limits.max_header_size:
                self._refuse_head(*_HEADERS_TOO_LARGE)
                return
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        """A line longer than ``MAX_LENGTH`` with no end in sight."""
        self._refuse_head(*(_HEADERS_TOO_LARGE if self._head_started else _URI_TOO_LONG))

    def _respondToBadRequestAndDisconnect(self) -> None:
        # Twisted's answer to a malformed head (bad request line, bad header, too many
        # headers): the same 400, with the envelope.
        self._refuse_head(b"400 Bad Request", "BadRequest", "The request head is malformed.")

    def _refuse_head(self, status: bytes, title: str, message: str) -> None:
        self._refused_head = True
        self.clearLineBuffer()  # nothing more of this connection is parsed
        self._cancel_header_deadline()
        self.transport.write(_raw_response(status, _error_json(title, message)))
        # Let the client read the answer before the connection goes, as for a 413.
        self.transport.loseWriteConnection()
        self.callLater(2, self.transport.abortConnection)

    def allHeadersReceived(self) -> None:
        self._cancel_header_deadline()
        self._reading_body = True
        self._head_started = False
        self._head_size = 0
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
        refusal = self._refusal()
        if refusal is not None:
            code, title, message = refusal
            self.setResponseCode(code)
            self.setHeader(b"Content-Type", b"application/json")
            self.setHeader(b"X-Content-Type-Options", b"nosniff")
            body = _error_json(title, message)
            self.setHeader(b"Content-Length", b"%d" % len(body))
            self.write(body)
            self.finish()
            return
        super().process()

    def _refusal(self) -> tuple[int, str, str] | None:
        """Why this request's target is refused before routing, if it is."""
        if len(self.uri) > self.channel.site.limits.max_uri_length:
            return 414, "URITooLong", "The request URI is too long."
        # werkzeug strips leading slashes, so "//x" would be served as "/x": an empty
        # segment names nothing here.
        if b"//" in self.path:
            return 404, "NotFound", "No such resource."
        path = unquote_to_bytes(self.path)
        try:
            path.decode("utf-8")
        except UnicodeDecodeError:
            return 400, "BadRequest", "The request path is not valid UTF-8."
        if b"\0" in path:  # names nothing; and PostgreSQL refuses NUL in a lookup (500)
            return 404, "NotFound", "No such resource."
        try:
            host = addressed_host(self)  # RFC 9112 3.2: an invalid Host is a 400 (werkzeug: 500)
        except ValueError:
            return 400, "BadRequest", "The Host header does not name a host."
        if host is None and self.clientproto == b"HTTP/1.1":
            # RFC 9112 3.2: HTTP/1.1 requires Host (only HTTP/1.0 may leave it out).
            return 400, "BadRequest", "An HTTP/1.1 request must carry a Host header."
        return None

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
        transport.write(self._too_large_answer())
        transport.loseWriteConnection()
        # Give the client a moment to read the answer, then drop the connection.
        self.channel.callLater(2, transport.abortConnection)
        self.channel.site.log(self)

    def _too_large_answer(self) -> bytes:
        """The API's JSON 413, or the HTML page the root resource has for a browser's form
        (``SiteRoot.too_large_page``: the page without JavaScript posts the file itself)."""
        page_for = getattr(self.channel.site.resource, "too_large_page", None)
        page = page_for(self, self._limit) if page_for is not None else None
        if page is None:
            return _too_large_response(self._limit)
        return _raw_response(b"413 Payload Too Large", page,
                             self.responseHeaders.getAllRawHeaders())


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
        # The channel answers heads over these limits itself (414/431); Twisted's own
        # line limit only has to stop a line that never ends.
        channel.totalHeadersSize = self.limits.max_header_size + self.limits.max_uri_length
        channel.MAX_LENGTH = max(self.limits.max_header_size, self.limits.max_uri_length) + 64
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
    (``"off"``), or a file path. Either way lines are collected and written once a
    second: to the logger as one event holding that second's lines (twistd writes and
    flushes its log file once per event, which was a fifth of the cost of a cached image
    hit, bench/README.md), to a file by ``write_off_reactor`` (the I/O pool), so that a
    slow disk cannot stall the reactor."""

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
        if self._destination == "off":
            return
        if self._destination:
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
        if self._file is None:  # the logger stamps the event with its own time
            self._lines.append(_ACCESS_FORMAT.format(**fields))
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
        if not self._lines or self._writing is not None:
            return succeed(None)
        lines, self._lines = self._lines, []
        if self._file is None:
            # One event: twistd's log shows the first line after the time, the others
            # below it, indented by a tab.
            _log.info("{lines}", lines="\n".join(lines))
            return succeed(None)
        self._writing = self._write_off_reactor(_append, self._file, "".join(lines))
        self._writing.addErrback(lambda f: _log.failure("Cannot write the access log", f))
        self._writing.addBoth(self._written)
        return self._writing

    def _written(self, _result) -> None:
        self._writing = None


def _append(file, text: str) -> None:
    file.write(text)
    file.flush()
