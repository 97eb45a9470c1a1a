"""Prometheus metrics of the gateway's HTTP requests, recorded by an ASGI middleware.

The ``route`` label is the path template of the binding that served the request (for
example ``/shippings/{shipping_id}``), never the raw path, so its values stay few. Other
requests get ``healthz``, ``openapi``, ``page`` (the tracking page and its static files)
or ``unmatched``. Requests rejected by the concurrency limit have code 429.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from gateway.routes import ROUTE_SCOPE_KEY, LookupStatus
from services.common.metrics import LATENCY_BUCKETS_S

if TYPE_CHECKING:
    from gateway.app import GatewayApp

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

UNMATCHED = "unmatched"


class HttpMetrics:
    """The gateway's HTTP metrics in one registry."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.requests = Counter(
            "envios_http_requests",
            "HTTP requests answered, by method, route template and status code",
            ["method", "route", "code"],
            registry=registry,
        )
        self.duration = Histogram(
            "envios_http_request_duration_seconds",
            "Time from the request's arrival to the end of its response",
            ["method", "route"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.in_flight = Gauge(
            "envios_http_requests_in_flight", "HTTP requests being served now", registry=registry
        )


_default_metrics: HttpMetrics | None = None


def default_http_metrics() -> HttpMetrics:
    """Return the ``HttpMetrics`` of the default registry, created on first use."""
    global _default_metrics
    if _default_metrics is None:
        _default_metrics = HttpMetrics(REGISTRY)
    return _default_metrics


def route_label(app: GatewayApp, scope: Scope) -> str:
    """Return the ``route`` label of a served request: its binding's template, or a fixed name."""
    method, path = scope["method"], scope["path"]
    if method in ("GET", "HEAD"):
        if path == "/healthz":
            return "healthz"
        if path == "/openapi.json":
            return "openapi"
    if app.page.handles(scope):
        return "page"
    # The exchange stores the template of the binding it called, which covers the
    # POST-to-GET fallback, method overrides and every path unescaping mode. A request
    # refused before routing (429, 431) is looked up here.
    route = scope.get(ROUTE_SCOPE_KEY)
    if isinstance(route, str):
        return route
    match = app.router.lookup(method, path)
    if match.status is LookupStatus.FOUND and match.route is not None:
        return match.route.template.source
    return UNMATCHED


class MetricsMiddleware:
    """ASGI middleware that records ``HttpMetrics`` of every HTTP request to ``app``."""

    def __init__(self, app: GatewayApp, metrics: HttpMetrics | None = None) -> None:
        self.app = app
        self.metrics = metrics if metrics is not None else default_http_metrics()
        self._series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500  # reported when the application fails before it starts a response

        async def send_recording(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_recording)
        finally:
            self.metrics.in_flight.dec()
            self._record(scope, status, time.perf_counter() - began)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        key = (scope["method"], route_label(self.app, scope), status)
        series = self._series.get(key)
        if series is None:
            method, route, _ = key
            series = (
                self.metrics.requests.labels(method, route, str(status)),
                self.metrics.duration.labels(method, route),
            )
            if len(self._series) < MAX_CACHED_SERIES:
                self._series[key] = series
        requests, duration = series
        requests.inc()
        duration.observe(seconds)


MAX_CACHED_SERIES = 1024
"""(method, route, status) label sets whose counter and histogram a middleware keeps."""
