"""Which address a request comes from, behind trusted proxies or not."""

import pytest
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.web.test.requesthelper import DummyRequest

from imagehost.web.clients import ClientAddresses

TRUSTED = ClientAddresses(["127.0.0.1", "10.0.0.0/8"])


def request(peer, *forwarded_for: str) -> DummyRequest:
    r = DummyRequest([b""])
    r.client = peer
    for value in forwarded_for:
        r.requestHeaders.addRawHeader(b"x-forwarded-for", value.encode())
    return r


def tcp(host: str):
    return (IPv6Address if ":" in host else IPv4Address)("TCP", host, 40000)


@pytest.mark.parametrize("peer, forwarded_for, client", [
    ("127.0.0.1", ["203.0.113.7"], "203.0.113.7"),
    # A client's own entries sit left of what the trusted hops appended.
    ("127.0.0.1", ["198.51.100.9, 203.0.113.7, 10.1.2.3"], "203.0.113.7"),
    ("127.0.0.1", ["198.51.100.9", "203.0.113.7"], "203.0.113.7"),  # several header lines
    ("::ffff:127.0.0.1", ["203.0.113.7"], "203.0.113.7"),  # IPv4-mapped proxy address
    ("127.0.0.1", ["2001:db8::1"], "2001:db8::1"),
    ("127.0.0.1", ["10.0.0.5"], "10.0.0.5"),  # only proxies: the leftmost of them
    ("127.0.0.1", ["unknown"], "127.0.0.1"),  # nothing believable: the proxy itself
    ("127.0.0.1", [], "127.0.0.1"),
    ("203.0.113.7", ["198.51.100.9"], "203.0.113.7"),  # not a proxy: header ignored
])
def test_the_client_is_the_first_untrusted_hop_from_the_right(peer, forwarded_for, client):
    assert TRUSTED.of(request(tcp(peer), *forwarded_for)) == client


def test_without_trusted_proxies_the_header_is_never_read():
    assert ClientAddresses([]).of(request(tcp("127.0.0.1"), "203.0.113.7")) == "127.0.0.1"


def test_a_unix_socket_peer_is_local():
    assert TRUSTED.of(request(UNIXAddress(None), "203.0.113.7")) == "local"
