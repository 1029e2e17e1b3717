"""Prometheus metrics (official client library), one registry per installation."""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map

from imagehost.service import Imagehost
from imagehost.service.errors import Forbidden, Unauthorized

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_IMAGE_ROUTE = "/image/<string:name>"
# Label values come from fixed sets, so no client can grow the exposition: any other
# method is "other", as is any path that matches no route.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER = "other"
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    """Request counts and latencies by route, plus gauges and counters read from services."""

    def __init__(self, imagehost: Imagehost, routes: Map, *more_routes: Map,
                 allowed_networks: Sequence[str] = (), bearer_token: str = ""):
        self.access = MetricsAccess(allowed_networks, bearer_token)
        self.registry = CollectorRegistry()
        self._routes = [m.bind("metrics") for m in (routes, *more_routes)]
        self.requests = Counter("imagehost_http_requests", "HTTP requests answered.",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("imagehost_http_request_duration_seconds",
                                 "Time from request head to the end of the response.",
                                 ["route"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        queue = Gauge("imagehost_cpu_pool_jobs", "Jobs running or waiting in the CPU pool.",
                      registry=self.registry)
        queue.set_function(lambda: imagehost.cpu_jobs)
        self.registry.register(_ServiceCounters(imagehost))
        self._series: dict[tuple[str, str, int], tuple] = {}

    def observe(self, method: str, path: str, status: int, seconds: float) -> None:
        method = method if method in _METHODS else OTHER
        route = self.route_of(method, path)
        key = (route, method, status)
        series = self._series.get(key)
        if series is None:  # looking labels up was a tenth of this call (bounded keys)
            series = self._series[key] = (self.requests.labels(route, method, str(status)),
                                          self.latency.labels(route))
        series[0].inc()
        series[1].observe(seconds)

    def route_of(self, method: str, path: str) -> str:
        """The route template a path matched (bounded label values), or ``other``."""
        # The hottest path (embedded images) is labelled without a second routing pass.
        if path.startswith("/image/") and "/" not in path[7:]:
            return _IMAGE_ROUTE
        for routes in self._routes:
            try:
                rule, _ = routes.match(path, method=method, return_rule=True)
            except HTTPException:
                continue
            except Exception:  # werkzeug redirects and odd paths: still one bounded label
                return OTHER
            return rule.rule
        return OTHER

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class MetricsAccess:
    """Who may read ``/metrics`` (``[metrics]``): clients in ``allowed_networks`` and/or
    holders of ``bearer_token``; with neither configured, anyone."""

    def __init__(self, allowed_networks: Sequence[str], bearer_token: str):
        self._networks = [ipaddress.ip_network(n, strict=False) for n in allowed_networks]
        self._token = bearer_token.encode()

    def check(self, client: str, authorization: bytes | None) -> None:
        """Forbidden for a client outside the networks, Unauthorized without the token."""
        if self._networks and not self._allowed(client):
            raise Forbidden("Metrics are not available to this address.")
        if self._token:
            scheme, _, token = (authorization or b"").partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(),
                                                                      self._token):
                raise Unauthorized("Metrics need the configured bearer token.")

    def _allowed(self, client: str) -> bool:
        try:
            address = ipaddress.ip_address(client)
        except ValueError:  # a Unix-socket peer has no address
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in self._networks)


class _ServiceCounters(Collector):
    """Counters the services keep themselves (cache hits, uploads, bytes stored)."""

    def __init__(self, imagehost: Imagehost):
        self._imagehost = imagehost

    def collect(self) -> Iterable[CounterMetricFamily]:
        sources: list[tuple[str, str, Callable[[], float]]] = [
            ("imagehost_uploads", "Images accepted and stored.",
             lambda: self._imagehost.images.uploads),
            ("imagehost_stored_bytes", "Bytes of originals stored by this process.",
             lambda: self._imagehost.images.stored_bytes),
        ]
        delivery = self._imagehost.delivery
        sources += [
            ("imagehost_variant_cache_hits", "Variants served from the cache.",
             lambda: delivery.hits),
            ("imagehost_variant_cache_misses", "Variants that had to be rendered.",
             lambda: delivery.misses),
        ]
        for name, documentation, read in sources:
            yield CounterMetricFamily(name, documentation, value=read())
