"""Logging set-up for process entry points: JSON lines in Elastic Common Schema."""

from __future__ import annotations

import logging
import sys

import ecs_logging
from opentelemetry import trace

AUDIT_LOGGER = "envios.audit"
"""Logger of the audit events (state transitions). It logs at INFO whatever the process's
log level, so ``ENVIOS_LOG_LEVEL=WARNING`` quiets the service without losing the audit."""


class TraceContextFilter(logging.Filter):
    """Add ``trace.id`` and ``span.id`` of the current OpenTelemetry span to each record.

    Records logged outside a valid span get no trace fields. With no tracer provider set
    the current span is the invalid one, so the cost is one context lookup per record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            # Dotted attribute names become nested ECS fields in ecs_logging's formatter.
            record.__dict__["trace.id"] = trace.format_trace_id(context.trace_id)
            record.__dict__["span.id"] = trace.format_span_id(context.span_id)
        return True


def ecs_formatter(service: str, replica: str) -> ecs_logging.StdlibFormatter:
    """Return the formatter of every envios process: one ECS JSON object per record,
    with ``service.name`` and ``service.node.name`` set on each."""
    return ecs_logging.StdlibFormatter(
        extra={"service.name": service, "service.node.name": replica}
    )


def configure_logging(level: str, service: str, replica: str) -> None:
    """Send every log record to stderr as one ECS JSON line with the current trace ids.

    Only ``main`` functions call this; library modules just use ``logging.getLogger``.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ecs_formatter(service, replica))
    handler.addFilter(TraceContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger(AUDIT_LOGGER).setLevel(logging.INFO)
    # pika logs every connection step at INFO; keep its warnings and errors.
    logging.getLogger("pika").setLevel(logging.WARNING)
