"""Test harness for Envoy failover tests: a real Envoy and small gRPC backends in-process.

Each backend is a ``grpc.aio`` server on one replica's port that serves the library's
health service and one raw-bytes read method, whose reply is the replica's name.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ops import envoy_config
from ops.topology import GRPC_SERVICE_NAMES, HOST, Replica, Topology

STATUS_SERVICE = GRPC_SERVICE_NAMES["status"]
READ_METHOD = f"/{STATUS_SERVICE}/GetOverview"
POLL_INTERVAL_S = 0.05


async def wait_for(
    condition: Callable[[], Awaitable[bool]], timeout_s: float, description: str
) -> None:
    """Poll ``condition`` until it is true; raise ``TimeoutError`` naming ``description``."""
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {description}")
        await asyncio.sleep(POLL_INTERVAL_S)


class Backend:
    """One status replica: health service plus ``GetOverview`` replying with its name."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self.failing = False
        """When true, calls fail with UNAVAILABLE before any response byte (Trailers-Only)."""
        self._server: grpc.aio.Server | None = None

    async def start(self) -> None:
        server = grpc.aio.server()
        servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        handler = grpc.unary_unary_rpc_method_handler(self._get_overview)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(STATUS_SERVICE, {"GetOverview": handler}),)
        )
        server.add_insecure_port(self.replica.address)
        await server.start()
        await servicer.set(STATUS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0)
            self._server = None

    async def _get_overview(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        if self.failing:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.replica.name} is failing")
        return self.replica.name.encode()


class EnvoyRunner:
    """A real Envoy process on a config file, stopped by its PID."""

    def __init__(self, config_path: Path, log_path: Path, admin_url: str) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.admin_url = admin_url
        self._process: subprocess.Popen[bytes] | None = None

    def launch(self) -> None:
        """Start Envoy on ``config_path`` with its output in ``log_path``."""
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                envoy_config.envoy_command(self.config_path, log_level="warning"),
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> None:
        """Terminate Envoy by its PID and wait for it to exit."""
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)
        self._process = None

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    async def ready(self) -> bool:
        """Return whether admin ``/ready`` is 200; raise when Envoy has exited."""
        if self._process is not None and self._process.poll() is not None:
            raise RuntimeError(f"envoy exited with {self._process.returncode}:\n{self.log_tail()}")
        try:
            async with httpx.AsyncClient() as client:
                response = await client.get(f"{self.admin_url}/ready", timeout=1.0)
        except httpx.TransportError:
            return False
        return response.status_code == 200


class EnvoyProcess(EnvoyRunner):
    """A real Envoy started with ``envoy_config.envoy_command`` on a rendered topology."""

    def __init__(
        self, topology: Topology, directory: Path, runtime_root: Path | None = None
    ) -> None:
        super().__init__(
            directory / "envoy.yaml",
            directory / "envoy.log",
            f"http://{HOST}:{topology.admin_port}",
        )
        self.topology = topology
        self.runtime_root = runtime_root

    def start(self) -> None:
        config = envoy_config.render(
            self.topology, access_log=False, runtime_root=self.runtime_root
        )
        self.config_path.write_text(envoy_config.to_yaml(config))
        self.launch()

    async def host_health(self, cluster: str) -> dict[int, bool]:
        """Return ``{port: healthy}`` for every host of ``cluster`` from admin ``/clusters``."""
        async with httpx.AsyncClient() as client:
            response = await client.get(f"{self.admin_url}/clusters", timeout=2.0)
        response.raise_for_status()
        health_by_port = {}
        for line in response.text.splitlines():
            parts = line.split("::")
            if len(parts) == 4 and parts[0] == cluster and parts[2] == "health_flags":
                port = int(parts[1].rsplit(":", 1)[1])
                health_by_port[port] = parts[3] == "healthy"
        return health_by_port


async def call_replicas(
    channel: grpc.aio.Channel, count: int, timeout_s: float = 2.0
) -> tuple[Counter[str], Counter[str]]:
    """Make ``count`` sequential read calls; return the serving replicas and the failure codes."""
    method = channel.unary_unary(READ_METHOD)
    served: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    for _ in range(count):
        try:
            reply = await method(b"", timeout=timeout_s)
        except grpc.aio.AioRpcError as error:
            failed[error.code().name] += 1
        else:
            served[reply.decode()] += 1
    return served, failed
