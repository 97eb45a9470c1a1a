"""Tracing set-up, span status mapping and the trace context carriers, without a network."""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from gateway.tracing import http_server_span
from services.common import tracing
from services.common.tracing import TracingConfigError, TracingSettings
from services.common.tracing_grpc import (
    client_interceptors,
    client_span_status,
    rpc_attributes,
    server_interceptors,
    server_span_status,
)

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
SPAN_ID = 0xB7AD6B7169203331
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

SERVER_ERRORS = {
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DATA_LOSS,
}


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Turn tracing on for one test with an in-memory exporter, without the global provider."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    monkeypatch.setattr(tracing, "_provider", provider)
    yield memory
    provider.shutdown()


def remote_context() -> trace.Span:
    context = trace.SpanContext(
        TRACE_ID, SPAN_ID, is_remote=True, trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED)
    )
    return trace.NonRecordingSpan(context)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}, TracingSettings("otlp")),
        (
            {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"},
            TracingSettings("otlp"),
        ),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            },
            TracingSettings("otlp", "http/protobuf"),
        ),
        ({"OTEL_TRACES_EXPORTER": "console"}, TracingSettings("console")),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, TracingSettings("otlp")),
        (
            {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"},
            None,
        ),
        (
            {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"},
            None,
        ),
    ],
)
def test_settings_from_env(environ: dict[str, str], expected: TracingSettings | None) -> None:
    assert TracingSettings.from_env(environ) == expected


@pytest.mark.parametrize(
    "environ",
    [
        {"OTEL_TRACES_EXPORTER": "jaeger"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_PROTOCOL": "tcp"},
    ],
)
def test_settings_reject_unsupported(environ: dict[str, str]) -> None:
    with pytest.raises(TracingConfigError, match="must be one of"):
        TracingSettings.from_env(environ)


def test_configure_unset_is_noop() -> None:
    assert tracing.configure_tracing("shipment", "shipment-primary-1", "primary", {}) is False

    assert not tracing.enabled()
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    assert server_interceptors() == []
    assert client_interceptors() == []
    assert tracing.message_headers("envios.tasks", "task") == ""
    with tracing.consumer_span("envios.tasks", "task", "t1", {"traceparent": TRACEPARENT}) as span:
        assert span is trace.INVALID_SPAN
    with http_server_span({"method": "GET", "path": "/"}, []) as http_span:
        assert http_span is None


@pytest.mark.parametrize("code", list(grpc.StatusCode))
def test_status_server_side(code: grpc.StatusCode) -> None:
    expected = StatusCode.ERROR if code in SERVER_ERRORS else StatusCode.UNSET
    assert server_span_status(code) is expected


@pytest.mark.parametrize("code", list(grpc.StatusCode))
def test_status_client_side(code: grpc.StatusCode) -> None:
    expected = StatusCode.UNSET if code is grpc.StatusCode.OK else StatusCode.ERROR
    assert client_span_status(code) is expected


def test_rpc_attributes_split_path() -> None:
    assert rpc_attributes(b"/envios.task.v1.TaskService/SubmitTask") == {
        "rpc.system": "grpc",
        "rpc.service": "envios.task.v1.TaskService",
        "rpc.method": "SubmitTask",
    }


def test_metadata_inject_replaces_incoming() -> None:
    metadata = [("traceparent", "00-old-old-01"), ("x-request-id", "r1")]
    context = trace.set_span_in_context(remote_context())

    injected = tracing.inject_pairs(metadata, context)

    assert ("x-request-id", "r1") in injected
    assert [value for key, value in injected if key == "traceparent"] == [TRACEPARENT]


def test_metadata_extract_reads_traceparent() -> None:
    context = tracing.extract_pairs([("traceparent", TRACEPARENT), ("other", b"\x00")])

    span_context = trace.get_current_span(context).get_span_context()
    assert span_context.trace_id == TRACE_ID
    assert span_context.span_id == SPAN_ID
    assert span_context.is_remote


def test_metadata_extract_without_trace() -> None:
    context = tracing.extract_pairs(None)

    assert not trace.get_current_span(context).get_span_context().is_valid


def test_amqp_headers_accept_bytes() -> None:
    context = tracing.extract_headers({"traceparent": TRACEPARENT.encode(), "x-death": [{}]})

    assert trace.get_current_span(context).get_span_context().trace_id == TRACE_ID


def test_amqp_headers_carry_trace(exporter: InMemorySpanExporter) -> None:
    with tracing.tracer().start_as_current_span("submit"):
        stored = tracing.message_headers("envios.tasks", "task")
    headers = tracing.stored_headers(stored)
    assert headers is not None
    with tracing.consumer_span("envios.tasks", "task", "t1", headers):
        pass

    produce, submit, consume = exporter.get_finished_spans()
    assert submit.name == "submit"
    assert produce.name == "send envios.tasks"
    assert produce.kind is SpanKind.PRODUCER
    assert consume.name == "process envios.tasks"
    assert consume.kind is SpanKind.CONSUMER
    assert produce.parent is not None
    assert consume.parent is not None
    assert submit.context is not None
    assert produce.context is not None
    assert produce.parent.span_id == submit.context.span_id
    assert consume.parent.span_id == produce.context.span_id
    assert consume.context is not None
    assert consume.context.trace_id == submit.context.trace_id
    assert consume.attributes is not None
    assert consume.attributes["messaging.message.id"] == "t1"


def test_amqp_headers_empty_without_trace(exporter: InMemorySpanExporter) -> None:
    assert tracing.message_headers("envios.tasks", "task") == ""
    assert exporter.get_finished_spans() == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", None),
        (None, None),
        ("not json", None),
        ("[1]", None),
        (json.dumps({"traceparent": TRACEPARENT}), {"traceparent": TRACEPARENT}),
    ],
)
def test_stored_headers_decode(text: str | None, expected: dict[str, str] | None) -> None:
    assert tracing.stored_headers(text) == expected


def test_http_span_continues_caller(exporter: InMemorySpanExporter) -> None:
    scope = {"method": "PATCH", "path": "/shippings/a", "scheme": "http", "http_version": "1.1"}

    with http_server_span(scope, [("traceparent", TRACEPARENT)]) as span:
        assert span is not None

    (finished,) = exporter.get_finished_spans()
    assert finished.kind is SpanKind.SERVER
    assert finished.parent is not None
    assert finished.parent.span_id == SPAN_ID
    assert finished.context is not None
    assert finished.context.trace_id == TRACE_ID
