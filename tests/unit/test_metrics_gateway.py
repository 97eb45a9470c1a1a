"""Gateway HTTP metrics: route labels by template, status codes, limit rejections."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from gateway.app import GatewayApp
from gateway.config import GatewayConfig
from gateway.metrics import HttpMetrics, MetricsMiddleware, route_label


def scope(method: str, path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [],
    }


async def status_of(app: MetricsMiddleware, method: str, path: str) -> int:
    """Send one request through ``app`` in process and return the response status."""
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await app(scope(method, path), receive, send)
    return int(sent[0]["status"])


@pytest.fixture
def metered() -> tuple[MetricsMiddleware, CollectorRegistry]:
    registry = CollectorRegistry()
    app = GatewayApp(GatewayConfig(max_concurrent_requests=1))
    return MetricsMiddleware(app, HttpMetrics(registry)), registry


def requests(registry: CollectorRegistry, method: str, route: str, code: str) -> float | None:
    labels = {"method": method, "route": route, "code": code}
    return registry.get_sample_value("envios_http_requests_total", labels)


@pytest.mark.parametrize(
    ("method", "path", "route"),
    [
        ("PATCH", "/shippings/sh-1", "/shippings/{shipment.id}"),
        ("GET", "/api/status/shipments/sh-1", "/api/status/shipments/{shipment_id}"),
        ("POST", "/api/tarea-concurrente", "/api/tarea-concurrente"),
        ("POST", "/v1/tasks/t-9:cancel", "/v1/tasks/{id}:cancel"),
        ("GET", "/healthz", "healthz"),
        ("GET", "/openapi.json", "openapi"),
        ("GET", "/track", "page"),
        ("GET", "/no/such/path", "unmatched"),
        ("DELETE", "/shippings/sh-1", "unmatched"),
    ],
)
def test_route_label_cases(method: str, path: str, route: str) -> None:
    app = GatewayApp(GatewayConfig())
    assert route_label(app, scope(method, path)) == route


async def test_middleware_counts_health(
    metered: tuple[MetricsMiddleware, CollectorRegistry],
) -> None:
    app, registry = metered
    assert await status_of(app, "GET", "/healthz") == 200
    assert requests(registry, "GET", "healthz", "200") == 1
    labels = {"method": "GET", "route": "healthz"}
    assert registry.get_sample_value("envios_http_request_duration_seconds_count", labels) == 1
    assert registry.get_sample_value("envios_http_requests_in_flight") == 0


async def test_middleware_counts_unmatched(
    metered: tuple[MetricsMiddleware, CollectorRegistry],
) -> None:
    app, registry = metered
    assert await status_of(app, "GET", "/no/such/path") == 404
    assert requests(registry, "GET", "unmatched", "404") == 1


async def test_middleware_counts_limit_429(
    metered: tuple[MetricsMiddleware, CollectorRegistry],
) -> None:
    app, registry = metered
    app.app.in_flight = 1  # the one allowed request is taken
    assert await status_of(app, "PATCH", "/shippings/sh-1") == 429
    assert requests(registry, "PATCH", "/shippings/{shipment.id}", "429") == 1


async def test_middleware_labels_served_template() -> None:
    """The label is the template the exchange served, also when only the raw path matches."""
    registry = CollectorRegistry()
    config = GatewayConfig(path_unescaping="all-characters", default_timeout_s=0.2)
    app = MetricsMiddleware(GatewayApp(config), HttpMetrics(registry))
    request = {
        **scope("GET", "/api/status/shipments/a/b"),
        "raw_path": b"/api/status/shipments/a%2Fb",
    }
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await app(request, receive, send)

    code = str(sent[0]["status"])
    assert requests(registry, "GET", "/api/status/shipments/{shipment_id}", code) == 1
