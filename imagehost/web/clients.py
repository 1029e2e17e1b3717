"""Which address a request comes from (the peer, or what a trusted proxy says it is),
and which host name it was sent to."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from twisted.web.iweb import IRequest

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# Underscores are not in DNS host names, but container and service names (Docker
# Compose's "image_host") carry them in Host headers on internal networks.
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
# A Host header (RFC 9110 7.2): a DNS name or IPv4 address, or an IPv6 one in brackets;
# an optional port. Nothing else may end up in an absolute URL we write.
_HOST = re.compile(rf"(?P<name>{_LABEL}(?:\.{_LABEL})*\.?|\[(?P<ipv6>[0-9A-Fa-f:.]+)\])"
                   r"(?::(?P<port>[0-9]{1,5}))?")


class ClientAddresses:
    """Believes ``X-Forwarded-For`` only as far as the hops are trusted proxies.

    Walking the header from the right (each proxy appends the address it saw), the
    client is the first address that is not a trusted proxy. Anything a client writes
    into the header itself sits left of that, so it cannot choose its own address.
    """

    def __init__(self, trusted_proxies: Iterable[str]):
        self._trusted = [ipaddress.ip_network(n, strict=False) for n in trusted_proxies]

    def of(self, request: IRequest) -> str:
        """The client's address for rate limits and the access log."""
        peer = getattr(request.getClientAddress(), "host", None)
        if peer is None:
            return "local"
        if not self._trusted or not self._is_trusted(_parse(peer)):
            return peer
        client = peer
        for hop in reversed(_forwarded_for(request)):
            address = _parse(hop)
            if address is None:  # not written by a proxy we trust: stop here
                break
            client = str(address)
            if not self._is_trusted(address):
                break
        return client

    def via_https(self, request: IRequest) -> bool:
        """Whether the browser reached us over TLS: directly, or through a trusted proxy
        that says so with ``X-Forwarded-Proto: https``."""
        if request.isSecure():
            return True
        peer = getattr(request.getClientAddress(), "host", None)
        if peer is None or not self._is_trusted(_parse(peer)):
            return False
        proto = request.getHeader(b"x-forwarded-proto") or b""
        return proto.split(b",")[0].strip().lower() == b"https"

    def _is_trusted(self, address: _Address | None) -> bool:
        if address is None:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in self._trusted)


def _forwarded_for(request: IRequest) -> list[str]:
    values = request.requestHeaders.getRawHeaders(b"x-forwarded-for", [])
    return [hop.strip() for value in values for hop in value.decode("latin-1").split(",")]


def _parse(text: str) -> _Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def addressed_host(request: IRequest) -> str | None:
    """The ``host[:port]`` the request's ``Host`` header names, checked: None when there is
    none (HTTP/1.0), ValueError when it is not a host name or IP address with an optional
    port, or when there are several."""
    return checked_host(request.requestHeaders.getRawHeaders(b"host"))


def checked_host(headers: list[bytes] | None) -> str | None:
    """``addressed_host`` of a request whose ``Host`` header values are ``headers`` (None:
    no such header)."""
    if headers is None:
        return None
    if len(headers) > 1:
        raise ValueError("more than one Host header")
    text = headers[0].decode("latin-1")
    match = _HOST.fullmatch(text)
    if match is None or len(match["name"]) > 253:
        raise ValueError(f"not a host name: {text!r}")
    if match["port"] is not None and not 0 < int(match["port"]) < 65536:
        raise ValueError(f"not a port: {match['port']!r}")
    if match["ipv6"] is not None:
        ipaddress.IPv6Address(match["ipv6"])  # ValueError for one that is not
    return text
