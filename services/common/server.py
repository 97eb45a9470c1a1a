"""gRPC server lifecycle shared by every service process.

A service supplies a ``ServiceApp``: what to register on the server, how to become ready
and how to close its clients. ``GrpcServer`` adds the library health service, server
reflection, the concurrency limit and the error mapping, and runs the lifecycle:

1. bind and start with health NOT_SERVING;
2. ``app.start()`` connects dependencies; then health turns SERVING;
3. on SIGTERM or SIGINT: health NOT_SERVING, ``drain_s`` so Envoy's health checks route
   away, ``server.stop(grace)`` lets in-flight calls finish, then ``app.close()``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import Protocol

import grpc
from envios.shipment.v1 import shipment_pb2
from envios.status.v1 import status_pb2
from envios.task.v1 import task_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common.config import ServerConfig
from services.common.errors import ErrorMappingInterceptor
from services.common.interceptors import ConcurrencyLimitInterceptor
from services.common.metrics import ServerMetricsInterceptor
from services.common.tracing_grpc import server_interceptors

logger = logging.getLogger(__name__)

API_SERVICES = tuple(
    service.full_name
    for module in (shipment_pb2, task_pb2, status_pb2)
    for service in module.DESCRIPTOR.services_by_name.values()
)
"""Every envios service. Each replica's reflection lists all of them, because clients
reflect through Envoy's gRPC listener, which serves all of them. A call to a replica for a
service it does not implement fails with UNIMPLEMENTED."""


class ServiceApp(Protocol):
    """The parts of a service that differ from one service to another."""

    service_name: str
    """Full gRPC service name, for example ``envios.shipment.v1.ShipmentService``."""

    def register(self, server: grpc.aio.Server) -> None:
        """Add the servicer to the server."""

    async def start(self) -> None:
        """Connect dependencies; return once the service can serve calls."""

    async def close(self) -> None:
        """Release clients and background tasks; called once, after the server stopped."""


class GrpcServer:
    """One gRPC server process around a ``ServiceApp``."""

    def __init__(self, config: ServerConfig, app: ServiceApp) -> None:
        self.config = config
        self.app = app
        self.health = health.aio.HealthServicer()
        # The metrics interceptor comes before the limit, so it also counts the limit's
        # rejections. The tracing one (when tracing is on) comes first, so its span covers all.
        interceptors = [
            *server_interceptors(),
            ServerMetricsInterceptor(),
            ConcurrencyLimitInterceptor(config.max_concurrent_rpcs),
            ErrorMappingInterceptor(),
        ]
        self.server = grpc.aio.server(interceptors=interceptors, options=[("grpc.so_reuseport", 0)])
        self.port = 0
        self._stopping: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Start serving and return the bound port; health turns SERVING once ready."""
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.app.register(self.server)
        names = (*API_SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, self.server)
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self.port = self.server.add_insecure_port(self.config.listen_address)
        await self.server.start()
        logger.info(
            "%s listening on port %s; starting dependencies", self.config.replica, self.port
        )
        await self.app.start()
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        logger.info("%s is SERVING", self.config.replica)
        return self.port

    async def stop(self) -> None:
        """Drain and stop; safe to call more than once and from several tasks."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop())
        await asyncio.shield(self._stopping)

    async def _stop(self) -> None:
        began = time.monotonic()
        logger.info(
            "%s draining: NOT_SERVING for %.1f s, then up to %.1f s for in-flight calls",
            self.config.replica,
            self.config.drain_s,
            self.config.shutdown_grace_s,
        )
        await self.health.enter_graceful_shutdown()
        await asyncio.sleep(self.config.drain_s)
        await self.server.stop(self.config.shutdown_grace_s)
        await self.app.close()
        logger.info("%s stopped after %.1f s", self.config.replica, time.monotonic() - began)

    async def _set_health(
        self, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType
    ) -> None:
        for name in ("", self.app.service_name):
            await self.health.set(name, status)


async def serve_until_signal(server: GrpcServer) -> None:
    """Run ``server`` until SIGTERM or SIGINT, then stop it gracefully."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await server.start()
    await stop.wait()
    await server.stop()
