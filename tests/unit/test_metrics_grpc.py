"""gRPC server metrics: counts by code, aborts left intact, limit rejections, /metrics."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry, Counter

from services.common.errors import ErrorMappingInterceptor, NotFound
from services.common.interceptors import ConcurrencyLimitInterceptor
from services.common.metrics import (
    MetricsConfig,
    ServerMetrics,
    ServerMetricsInterceptor,
    serve_metrics,
)

SERVICE = "test.Probe"


async def ok(request: bytes, context: Any) -> bytes:
    return b"ok"


async def missing(request: bytes, context: Any) -> bytes:
    raise NotFound("no such thing", metadata={"id": "42"})


async def crash(request: bytes, context: Any) -> bytes:
    raise RuntimeError("unexpected")


async def slow(request: bytes, context: Any) -> bytes:
    await asyncio.sleep(0.5)
    return b"slow"


async def numbers(request: bytes, context: Any) -> AsyncIterator[bytes]:
    for value in (b"1", b"2"):
        yield value


def probe_handlers() -> grpc.GenericRpcHandler:
    unary = {
        name: grpc.unary_unary_rpc_method_handler(behavior)
        for name, behavior in {"Ok": ok, "Missing": missing, "Crash": crash, "Slow": slow}.items()
    }
    unary["Numbers"] = grpc.unary_stream_rpc_method_handler(numbers)
    return grpc.method_handlers_generic_handler(SERVICE, unary)


@pytest.fixture
async def probe() -> AsyncIterator[tuple[grpc.aio.Channel, CollectorRegistry]]:
    """A server with the production interceptor order and its own metrics registry."""
    registry = CollectorRegistry()
    interceptors = [
        ServerMetricsInterceptor(ServerMetrics(registry)),
        ConcurrencyLimitInterceptor(2),
        ErrorMappingInterceptor(),
    ]
    server = grpc.aio.server(interceptors=interceptors)
    server.add_generic_rpc_handlers((probe_handlers(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel, registry
    await server.stop(None)


def handled(registry: CollectorRegistry, method: str, code: str, kind: str = "unary") -> float:
    labels = {"grpc_service": SERVICE, "grpc_method": method, "grpc_type": kind, "grpc_code": code}
    return registry.get_sample_value("grpc_server_handled_total", labels) or 0.0


async def test_interceptor_counts_ok(probe: tuple[grpc.aio.Channel, CollectorRegistry]) -> None:
    channel, registry = probe
    for _ in range(3):
        assert await channel.unary_unary(f"/{SERVICE}/Ok")(b"") == b"ok"
    labels = {"grpc_service": SERVICE, "grpc_method": "Ok", "grpc_type": "unary"}
    assert registry.get_sample_value("grpc_server_started_total", labels) == 3
    assert handled(registry, "Ok", "OK") == 3
    assert registry.get_sample_value("grpc_server_handling_seconds_count", labels) == 3
    in_flight = {"grpc_service": SERVICE}
    assert registry.get_sample_value("envios_grpc_server_in_flight", in_flight) == 0


async def test_interceptor_keeps_abort_metadata(
    probe: tuple[grpc.aio.Channel, CollectorRegistry],
) -> None:
    channel, registry = probe
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await channel.unary_unary(f"/{SERVICE}/Missing")(b"")
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert raised.value.details() == "no such thing"
    trailing = dict(raised.value.trailing_metadata() or ())
    assert "grpc-status-details-bin" in trailing
    assert handled(registry, "Missing", "NOT_FOUND") == 1
    assert handled(registry, "Missing", "OK") == 0


async def test_interceptor_counts_internal(
    probe: tuple[grpc.aio.Channel, CollectorRegistry],
) -> None:
    channel, registry = probe
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await channel.unary_unary(f"/{SERVICE}/Crash")(b"")
    assert raised.value.code() == grpc.StatusCode.INTERNAL
    assert handled(registry, "Crash", "INTERNAL") == 1


async def test_interceptor_counts_deadline(
    probe: tuple[grpc.aio.Channel, CollectorRegistry],
) -> None:
    channel, registry = probe
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await channel.unary_unary(f"/{SERVICE}/Slow")(b"", timeout=0.1)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    def counted() -> float:
        return handled(registry, "Slow", "DEADLINE_EXCEEDED")

    await wait_for(lambda: counted() == 1)
    assert handled(registry, "Slow", "CANCELLED") == 0


async def test_interceptor_counts_stream(
    probe: tuple[grpc.aio.Channel, CollectorRegistry],
) -> None:
    channel, registry = probe
    call = channel.unary_stream(f"/{SERVICE}/Numbers")(b"")
    assert [message async for message in call] == [b"1", b"2"]
    await wait_for(lambda: handled(registry, "Numbers", "OK", "server_stream") == 1)


async def test_limit_rejection_counted(
    probe: tuple[grpc.aio.Channel, CollectorRegistry],
) -> None:
    channel, registry = probe
    method = channel.unary_unary(f"/{SERVICE}/Slow")
    results = await asyncio.gather(
        *(method(b"", timeout=5) for _ in range(5)), return_exceptions=True
    )
    rejected = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert [r for r in results if r == b"slow"] == [b"slow", b"slow"]
    assert len(rejected) == 3
    assert all(r.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for r in rejected)
    assert handled(registry, "Slow", "RESOURCE_EXHAUSTED") == 3
    assert handled(registry, "Slow", "OK") == 2


async def test_limit_frees_slots(probe: tuple[grpc.aio.Channel, CollectorRegistry]) -> None:
    channel, registry = probe
    method = channel.unary_unary(f"/{SERVICE}/Ok")
    for _ in range(5):
        assert await method(b"") == b"ok"
    assert handled(registry, "Ok", "RESOURCE_EXHAUSTED") == 0


def test_limit_rejects_zero() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ConcurrencyLimitInterceptor(0)


def test_serve_metrics_unites_registries() -> None:
    first, second = CollectorRegistry(), CollectorRegistry()
    Counter("first_events", "test counter", registry=first).inc()
    Counter("second_events", "test counter", registry=second).inc(2)
    server = serve_metrics("127.0.0.1:0", (first, second))
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    finally:
        server.close()
    assert "first_events_total 1.0" in text
    assert "second_events_total 2.0" in text


def test_metrics_config_optional_address() -> None:
    config = MetricsConfig.from_env({"ENVIOS_SITE": "primary"}, "shipment")
    assert config.address == ""
    assert config.replica == "shipment-local"
    assert config.site == "primary"


def test_metrics_config_rejects_bad_address() -> None:
    with pytest.raises(ValueError, match="ENVIOS_METRICS_ADDRESS"):
        MetricsConfig.from_env({"ENVIOS_METRICS_ADDRESS": "nowhere"}, "shipment")


async def wait_for(condition: Any, timeout_s: float = 5.0) -> None:
    """Poll ``condition`` until it holds; the server records a call after the client returns."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not met within the deadline")
        await asyncio.sleep(0.01)
