"""gRPC tracing interceptors on a real ``grpc.aio`` server and channel over loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from services.common.errors import ErrorMappingInterceptor, FailedPrecondition
from services.common.tracing_grpc import TracingServerInterceptor, client_interceptors
from tests.integration.task_harness import eventually

SERVICE = "test.Traced"


async def ok(request: bytes, context: Any) -> bytes:
    return b"ok:" + request


async def precondition(request: bytes, context: Any) -> bytes:
    raise FailedPrecondition(
        "cannot go back", reason="INVALID_TRANSITION", metadata={"current_status": "shipped"}
    )


async def crash(request: bytes, context: Any) -> bytes:
    raise RuntimeError("unexpected")


async def count(request: bytes, context: Any) -> AsyncIterator[bytes]:
    for index in range(3):
        yield str(index).encode()


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    yield memory
    memory.shutdown()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    return tracer_provider


@pytest.fixture
async def channel(provider: TracerProvider) -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server(
        interceptors=[TracingServerInterceptor(provider), ErrorMappingInterceptor()]
    )
    handlers = {
        "Ok": grpc.unary_unary_rpc_method_handler(ok),
        "Precondition": grpc.unary_unary_rpc_method_handler(precondition),
        "Crash": grpc.unary_unary_rpc_method_handler(crash),
        "Count": grpc.unary_stream_rpc_method_handler(count),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    client = grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", interceptors=client_interceptors(provider)
    )
    yield client
    await client.close()
    await server.stop(None)


async def spans_by_kind(exporter: InMemorySpanExporter) -> dict[SpanKind, ReadableSpan]:
    """Wait up to 5 s for the client and server span; a stream's client span ends last."""

    async def both_ended() -> bool:
        return len(exporter.get_finished_spans()) >= 2

    await eventually(both_ended, timeout_s=5.0)
    spans = exporter.get_finished_spans()
    assert len(spans) == 2, [span.name for span in spans]
    return {span.kind: span for span in spans}


async def test_tracing_unary_ok_links_spans(
    channel: grpc.aio.Channel, exporter: InMemorySpanExporter
) -> None:
    response = await channel.unary_unary(f"/{SERVICE}/Ok")(
        b"x", metadata=(("traceparent", "junk"),)
    )

    assert response == b"ok:x"
    spans = await spans_by_kind(exporter)
    client, server = spans[SpanKind.CLIENT], spans[SpanKind.SERVER]
    assert client.context is not None
    assert server.context is not None
    assert server.parent is not None
    assert server.parent.span_id == client.context.span_id
    assert server.context.trace_id == client.context.trace_id
    assert server.name == f"{SERVICE}/Ok"
    assert server.attributes is not None
    assert server.attributes["rpc.system"] == "grpc"
    assert server.attributes["rpc.service"] == SERVICE
    assert server.attributes["rpc.method"] == "Ok"
    assert server.attributes["rpc.grpc.status_code"] == 0
    assert server.status.status_code is StatusCode.UNSET
    assert client.status.status_code is StatusCode.UNSET


async def test_tracing_abort_keeps_error_info(
    channel: grpc.aio.Channel, exporter: InMemorySpanExporter
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await channel.unary_unary(f"/{SERVICE}/Precondition")(b"x")

    error = raised.value
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    status = rpc_status.from_call(error)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.reason == "INVALID_TRANSITION"
    assert info.metadata["current_status"] == "shipped"
    spans = await spans_by_kind(exporter)
    server, client = spans[SpanKind.SERVER], spans[SpanKind.CLIENT]
    assert server.attributes is not None
    assert client.attributes is not None
    assert server.attributes["rpc.grpc.status_code"] == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert server.status.status_code is StatusCode.UNSET
    assert client.status.status_code is StatusCode.ERROR


async def test_tracing_internal_is_server_error(
    channel: grpc.aio.Channel, exporter: InMemorySpanExporter
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await channel.unary_unary(f"/{SERVICE}/Crash")(b"x")

    assert raised.value.code() is grpc.StatusCode.INTERNAL
    spans = await spans_by_kind(exporter)
    server = spans[SpanKind.SERVER]
    assert server.attributes is not None
    assert server.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INTERNAL.value[0]
    assert server.status.status_code is StatusCode.ERROR
    assert spans[SpanKind.CLIENT].status.status_code is StatusCode.ERROR


async def test_tracing_stream_spans_end(
    channel: grpc.aio.Channel, exporter: InMemorySpanExporter
) -> None:
    call = channel.unary_stream(f"/{SERVICE}/Count")(b"")
    received = [message async for message in call]
    assert await call.code() is grpc.StatusCode.OK

    assert received == [b"0", b"1", b"2"]
    spans = await spans_by_kind(exporter)
    server, client = spans[SpanKind.SERVER], spans[SpanKind.CLIENT]
    assert server.parent is not None
    assert client.context is not None
    assert server.parent.span_id == client.context.span_id
    assert client.attributes is not None
    assert client.attributes["rpc.grpc.status_code"] == 0
