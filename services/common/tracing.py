"""OpenTelemetry set-up and W3C trace context carriers for gRPC metadata and AMQP headers.

Every process ``main`` calls ``configure_tracing`` once. Tracing is on only when the
standard ``OTEL_*`` variables select an exporter (an OTLP endpoint, or
``OTEL_TRACES_EXPORTER``). Otherwise no tracer provider is installed, so the API stays a
no-op, no exporter thread starts and nothing is sent. The exporters read the rest of their
settings (endpoint, headers, timeout, batch delays) from the same variables themselves.

Context travels as W3C ``traceparent`` / ``tracestate`` (the propagators named by
``OTEL_PROPAGATORS``, W3C trace context and baggage by default): in gRPC metadata, and in
the headers of RabbitMQ messages written through the outbox.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

logger = logging.getLogger(__name__)

TRACER_NAME = "envios"
"""Instrumentation scope of every span envios creates."""

TRACE_KEYS = frozenset({"traceparent", "tracestate", "baggage"})
"""Metadata and header keys written by the default propagators; injection replaces them."""

EXPORTERS = ("otlp", "console", "none")
"""Values of ``OTEL_TRACES_EXPORTER`` that envios supports."""

PROTOCOLS = ("grpc", "http/protobuf")
"""Values of ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`` that envios supports."""

_provider: TracerProvider | None = None


class TracingConfigError(ValueError):
    """An ``OTEL_*`` variable names an exporter or protocol envios does not support."""


@dataclass(frozen=True)
class TracingSettings:
    """Exporter and OTLP transport selected by the ``OTEL_*`` variables."""

    exporter: str
    """``otlp`` or ``console``."""
    protocol: str = "grpc"
    """OTLP transport: ``grpc`` (port 4317 by default) or ``http/protobuf`` (port 4318)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> TracingSettings | None:
        """Return the settings, or None when the variables select no exporter.

        Raises:
            TracingConfigError: an unsupported exporter or protocol; the message names it.
        """
        if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return None
        exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
        endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        if not exporter:
            exporter = "otlp" if endpoint else "none"
        if exporter not in EXPORTERS:
            raise TracingConfigError(
                f"OTEL_TRACES_EXPORTER must be one of {', '.join(EXPORTERS)}, got {exporter!r}"
            )
        if exporter == "none":
            return None
        protocol = (
            environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or "grpc"
        )
        if protocol not in PROTOCOLS:
            raise TracingConfigError(
                f"OTEL_EXPORTER_OTLP_PROTOCOL must be one of {', '.join(PROTOCOLS)}, "
                f"got {protocol!r}"
            )
        return cls(exporter=exporter, protocol=protocol)


def configure_tracing(
    service: str, replica: str, site: str = "", environ: Mapping[str, str] | None = None
) -> bool:
    """Install the global tracer provider when the ``OTEL_*`` variables select an exporter.

    The resource has ``service.name`` (``OTEL_SERVICE_NAME`` overrides ``service``),
    ``service.namespace`` ``envios``, ``service.instance.id`` (the replica) and
    ``envios.site``; ``OTEL_RESOURCE_ATTRIBUTES`` adds more. Returns True when tracing is
    on. Call it once per process, from ``main``.

    Raises:
        TracingConfigError: an unsupported exporter or protocol is configured.
    """
    global _provider
    environ = os.environ if environ is None else environ
    settings = TracingSettings.from_env(environ)
    if settings is None:
        return False
    attributes: dict[str, str] = {"service.namespace": "envios", "service.instance.id": replica}
    if not environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = service
    if site:
        attributes["envios.site"] = site
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(_exporter(settings)))
    trace.set_tracer_provider(provider)
    _provider = provider
    logger.info(
        "tracing on: %s exporter (%s) for %s %s",
        settings.exporter,
        settings.protocol,
        service,
        replica,
    )
    return True


def start_tracing(service: str, replica: str, site: str = "") -> None:
    """Run ``configure_tracing`` from ``os.environ`` in a ``main``; exit with status 2 when
    the ``OTEL_*`` variables are invalid."""
    try:
        configure_tracing(service, replica, site)
    except TracingConfigError as error:
        logger.error("%s cannot start: %s", replica, error)
        raise SystemExit(2) from error


def _exporter(settings: TracingSettings) -> SpanExporter:
    if settings.exporter == "console":
        return ConsoleSpanExporter()
    # Imported here so that a process without tracing never loads the exporter packages.
    if settings.protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpExporter,
        )

        return HttpExporter()
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def enabled() -> bool:
    """Tell whether ``configure_tracing`` installed a tracer provider in this process."""
    return _provider is not None


def shutdown_tracing() -> None:
    """Export the spans still buffered and stop the exporter; safe to call more than once."""
    global _provider
    if _provider is not None:
        _provider.shutdown()
        _provider = None


def tracer(provider: trace.TracerProvider | None = None) -> trace.Tracer:
    """Return the envios tracer of ``provider``, by default the one ``configure_tracing``
    installed (or the global no-op one)."""
    return trace.get_tracer(TRACER_NAME, tracer_provider=provider or _provider)


def inject_pairs(
    pairs: Iterable[tuple[str, Any]], context: otel_context.Context | None = None
) -> list[tuple[str, Any]]:
    """Return ``pairs`` (gRPC metadata) with the trace keys of ``context`` replacing any there.

    ``context`` defaults to the current one. Keys from an incoming request are dropped, so
    a call never carries two ``traceparent`` values.
    """
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=context)
    kept = [(key, value) for key, value in pairs if key not in TRACE_KEYS]
    return kept + list(carrier.items())


def extract_pairs(pairs: Iterable[tuple[str, Any]] | None) -> otel_context.Context:
    """Return the context that the trace keys of ``pairs`` (gRPC metadata) carry."""
    carrier = {
        key: value for key, value in pairs or () if key in TRACE_KEYS and isinstance(value, str)
    }
    return propagate.extract(carrier)


def extract_headers(headers: Mapping[str, Any] | None) -> otel_context.Context:
    """Return the context carried by AMQP message headers (values may be bytes)."""
    carrier: dict[str, str] = {}
    for key, value in (headers or {}).items():
        if key in TRACE_KEYS:
            carrier[key] = (
                value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
            )
    return propagate.extract(carrier)


def message_headers(exchange: str, routing_key: str) -> str:
    """Record a PRODUCER span for a message written to the outbox; return its headers as JSON.

    The relay publishes the stored headers with the message, so the consumer continues
    this trace even when the message goes out much later or from another process. Returns
    ``""`` when tracing is off or no trace is current.
    """
    if not enabled() or not trace.get_current_span().get_span_context().is_valid:
        return ""
    attributes = {
        "messaging.system": "rabbitmq",
        "messaging.operation.type": "send",
        "messaging.destination.name": exchange,
        "messaging.rabbitmq.destination.routing_key": routing_key,
    }
    with tracer().start_as_current_span(
        f"send {exchange}", kind=trace.SpanKind.PRODUCER, attributes=attributes
    ):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
    return json.dumps(carrier, sort_keys=True)


def stored_headers(text: str | None) -> dict[str, str] | None:
    """Decode headers stored by ``message_headers``; None when empty or invalid."""
    if not text:
        return None
    try:
        headers = json.loads(text)
    except ValueError:
        logger.warning("ignoring outbox headers that are not JSON: %r", text[:200])
        return None
    return headers if isinstance(headers, dict) else None


@contextmanager
def consumer_span(
    exchange: str, routing_key: str, message_id: str, headers: Mapping[str, Any] | None
) -> Iterator[trace.Span]:
    """Run the body in a CONSUMER span that continues the trace of the message's headers.

    Yields the invalid span, and creates nothing, when tracing is off.
    """
    if not enabled():
        yield trace.INVALID_SPAN
        return
    attributes = {
        "messaging.system": "rabbitmq",
        "messaging.operation.type": "process",
        "messaging.destination.name": exchange,
        "messaging.rabbitmq.destination.routing_key": routing_key,
        "messaging.message.id": message_id,
    }
    with tracer().start_as_current_span(
        f"process {exchange}",
        context=extract_headers(headers),
        kind=trace.SpanKind.CONSUMER,
        attributes=attributes,
    ) as span:
        yield span
