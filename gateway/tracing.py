"""HTTP server spans of the gateway, following the OpenTelemetry HTTP conventions.

Each request gets a SERVER span that continues the caller's W3C trace context (Envoy's
span when Envoy traces). Its name is ``METHOD /route/{template}`` once routing found a
binding, and just the method before that. Only 5xx responses mark it as an error. The
gRPC client span of the upstream call (see ``services.common.tracing_grpc``) becomes its
child, because the span is current while the exchange runs.

When tracing is off, ``http_server_span`` yields None and costs one check per request.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from services.common import tracing


@contextmanager
def http_server_span(
    scope: MutableMapping[str, Any], headers: Sequence[tuple[str, str]]
) -> Iterator[trace.Span | None]:
    """Run the body in a SERVER span for the ASGI request ``scope``, or yield None when
    tracing is off.

    ``headers`` are the lower-case request headers.
    """
    if not tracing.enabled():
        yield None
        return
    method = scope["method"]
    attributes = {
        "http.request.method": method,
        "url.path": scope["path"],
        "url.scheme": scope.get("scheme", "http"),
        "network.protocol.version": scope.get("http_version", "1.1"),
    }
    with tracing.tracer().start_as_current_span(
        method,
        context=tracing.extract_pairs(headers),
        kind=SpanKind.SERVER,
        attributes=attributes,
    ) as span:
        yield span


def name_route(span: trace.Span | None, method: str, route: str) -> None:
    """Name the span after the matched route template, as in ``PATCH /shippings/{shipment.id}``."""
    if span is not None:
        span.update_name(f"{method} {route}")
        span.set_attribute("http.route", route)


def record_response(span: trace.Span | None, status: int) -> None:
    """Set the response status; a 5xx marks the server span as an error."""
    if span is None:
        return
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))
