"""Service process lifecycle: health states, graceful drain on SIGTERM, concurrency limit."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ops.topology import free_ports
from services.common.config import ServerConfig
from services.common.server import GrpcServer

SLOW_METHOD = "/test.Slow/Wait"


class SlowApp:
    """A service with one method that takes ``delay_s``, for lifecycle tests."""

    service_name = "test.Slow"

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.started = asyncio.Event()
        self.closed = False

    def register(self, server: grpc.aio.Server) -> None:
        async def wait(request: bytes, context: Any) -> bytes:
            self.started.set()
            await asyncio.sleep(self.delay_s)
            return b"done"

        async def crash(request: bytes, context: Any) -> bytes:
            raise RuntimeError("secret detail")

        handlers = {
            "Wait": grpc.unary_unary_rpc_method_handler(wait),
            "Crash": grpc.unary_unary_rpc_method_handler(crash),
        }
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("test.Slow", handlers),)
        )

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self.closed = True


def server_config(**overrides: Any) -> ServerConfig:
    values: dict[str, Any] = {
        "listen_address": "127.0.0.1:0",
        "site": "primary",
        "replica": "test-1",
        "drain_s": 0.2,
    }
    values.update(overrides)
    return ServerConfig(**values)


@pytest.fixture
async def slow_server() -> AsyncIterator[tuple[GrpcServer, SlowApp]]:
    app = SlowApp(delay_s=1.0)
    server = GrpcServer(server_config(shutdown_grace_s=5.0), app)
    await server.start()
    yield server, app
    await server.stop()


async def health_of(channel: grpc.aio.Channel, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
    return int(response.status)


async def test_serving_after_start(slow_server: tuple[GrpcServer, SlowApp]) -> None:
    server, _ = slow_server
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        assert await health_of(channel, "test.Slow") == health_pb2.HealthCheckResponse.SERVING
        assert await health_of(channel, "") == health_pb2.HealthCheckResponse.SERVING


async def test_stop_lets_slow_call_finish(slow_server: tuple[GrpcServer, SlowApp]) -> None:
    server, app = slow_server
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        call = asyncio.ensure_future(channel.unary_unary(SLOW_METHOD)(b"", timeout=10))
        await asyncio.wait_for(app.started.wait(), 5)
        stopping = asyncio.ensure_future(server.stop())
        await asyncio.sleep(0.05)
        assert await health_of(channel, "test.Slow") == health_pb2.HealthCheckResponse.NOT_SERVING
        assert await call == b"done"
        await stopping
    assert app.closed


async def test_unexpected_error_is_generic_internal(
    slow_server: tuple[GrpcServer, SlowApp], caplog: pytest.LogCaptureFixture
) -> None:
    server, _ = slow_server
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await channel.unary_unary("/test.Slow/Crash")(b"", timeout=5)
    assert raised.value.code() == grpc.StatusCode.INTERNAL
    assert raised.value.details() == "internal error"
    assert "secret detail" in caplog.text


async def test_excess_calls_resource_exhausted() -> None:
    app = SlowApp(delay_s=0.5)
    server = GrpcServer(server_config(max_concurrent_rpcs=2), app)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            method = channel.unary_unary(SLOW_METHOD)
            calls = [method(b"", timeout=5) for _ in range(5)]
            results = await asyncio.gather(*calls, return_exceptions=True)
    finally:
        await server.stop()
    rejected = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert sum(1 for r in results if r == b"done") == 2
    assert len(rejected) == 3
    assert all(r.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for r in rejected)


def test_sigterm_stops_process_cleanly(tmp_path: Path) -> None:
    port = free_ports(1)[0]
    environ = {
        **os.environ,
        "ENVIOS_LISTEN_ADDRESS": f"127.0.0.1:{port}",
        "ENVIOS_DATABASE_URL": f"sqlite:///{tmp_path}/envios.db",
        "REDIS_URL": f"redis://127.0.0.1:{free_ports(1)[0]}/0",
        "ENVIOS_DRAIN_S": "0.2",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "services.task"], env=environ, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_serving(port, "envios.task.v1.TaskService", deadline_s=20)
        process.send_signal(signal.SIGTERM)
        _, log = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0
    assert "stopped after" in log


def test_invalid_config_exits_2() -> None:
    environ = {**os.environ, "ENVIOS_MAX_CONCURRENT_RPCS": "many", "ENVIOS_LISTEN_ADDRESS": "x"}
    result = subprocess.run(
        [sys.executable, "-m", "services.shipment"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "ENVIOS_MAX_CONCURRENT_RPCS" in result.stderr
    assert "ENVIOS_LISTEN_ADDRESS" in result.stderr


def wait_serving(port: int, service: str, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{service} on port {port} not SERVING after {deadline_s} s")
            time.sleep(0.1)
