"""Readiness probes for the stack's processes, and polling with a deadline.

A probe is a function that returns ``None`` when its target is ready and otherwise a short
reason ("connection refused", "NOT_SERVING"). Probes catch the client library's errors for
a refused connection, a timeout or an error status and return them as the reason, so one
loop can poll many probes and report every one still failing at the deadline.
"""

from __future__ import annotations

import logging
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pika
import pika.exceptions
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis.backoff import NoBackoff
from redis.retry import Retry

logger = logging.getLogger(__name__)

Probe = Callable[[], str | None]
"""Return ``None`` when the target is ready, else the reason it is not."""

POLL_INTERVAL_S = 0.2
"""Pause between two rounds of probes."""

GRPC_CHANNEL_OPTIONS = (("grpc.enable_http_proxy", 0),)
"""Loopback targets never go through an HTTP proxy named by ``http_proxy``."""


def wait_until(
    probes: Mapping[str, Probe],
    timeout_s: float,
    abort: Callable[[], str | None] | None = None,
) -> dict[str, str]:
    """Poll ``probes`` until all are ready or ``timeout_s`` passes.

    Each round calls only the probes that were not ready yet. When ``abort`` returns a
    reason, polling stops at once and the result contains it under the key ``"abort"``.

    Returns:
        The probes still not ready, mapped to their last reason; empty when all are ready.
    """
    deadline = time.monotonic() + timeout_s
    pending = {name: "not probed yet" for name in probes}
    while True:
        for name in list(pending):
            reason = probes[name]()
            if reason is None:
                del pending[name]
            else:
                pending[name] = reason
        stop_reason = abort() if abort is not None else None
        if stop_reason is not None:
            return {**pending, "abort": stop_reason}
        if not pending or time.monotonic() >= deadline:
            return pending
        time.sleep(POLL_INTERVAL_S)


def tcp_listening(host: str, port: int, timeout_s: float = 0.5) -> str | None:
    """Probe whether a TCP connection to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except OSError as error:
        return f"TCP connect to {host}:{port} failed: {error}"


def redis_ping(url: str, timeout_s: float = 1.0) -> str | None:
    """Probe whether the Redis server at ``url`` replies to PING."""
    client = redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), retries=0),
    )
    try:
        client.ping()
        return None
    except redis.RedisError as error:
        return f"PING failed: {error}"
    finally:
        client.close()


def amqp_connect(url: str, timeout_s: float = 2.0) -> str | None:
    """Probe whether the AMQP broker at ``url`` accepts a connection (and then close it)."""
    parameters = pika.URLParameters(url)
    parameters.connection_attempts = 1
    parameters.socket_timeout = timeout_s
    parameters.stack_timeout = timeout_s * 2
    try:
        connection = pika.BlockingConnection(parameters)
    except pika.exceptions.AMQPError as error:
        return f"AMQP connection failed: {error!r}"
    connection.close()
    return None


def grpc_serving(address: str, service: str, timeout_s: float = 1.0) -> str | None:
    """Probe whether ``grpc.health.v1.Health/Check`` at ``address`` reports ``service`` SERVING."""
    with grpc.insecure_channel(address, options=GRPC_CHANNEL_OPTIONS) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service=service)
        try:
            response = stub.Check(request, timeout=timeout_s)
        except grpc.RpcError as error:
            return f"health check failed: {error.code().name}"
    if response.status != health_pb2.HealthCheckResponse.SERVING:
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))
    return None


def http_ok(url: str, timeout_s: float = 1.0) -> str | None:
    """Probe whether ``GET url`` returns status 200."""
    try:
        with httpx.Client(timeout=timeout_s, trust_env=False) as client:
            response = client.get(url)
    except httpx.HTTPError as error:
        return f"GET {url} failed: {error!r}"
    if response.status_code != 200:
        return f"GET {url} returned {response.status_code}"
    return None


@dataclass(frozen=True)
class UpstreamHost:
    """One host of one Envoy cluster, as the admin ``/clusters?format=json`` reports it."""

    cluster: str
    address: str
    """``ip:port`` of the host."""
    healthy: bool
    """False when any health flag (active check, outlier ejection, pending check) is set."""


UNHEALTHY_FLAGS = (
    "failed_active_health_check",
    "failed_outlier_check",
    "failed_active_degraded_check",
    "pending_dynamic_removal",
    "pending_active_hc",
    "excluded_via_immediate_hc_fail",
    "active_hc_timeout",
)
"""Flags of an Envoy ``HostHealthStatus`` that keep a host out of load balancing."""


def envoy_hosts(admin_url: str, timeout_s: float = 1.0) -> list[UpstreamHost]:
    """Fetch every host of every cluster from Envoy's admin API.

    Raises:
        httpx.HTTPError: when the admin API is unreachable or returns an error status.
    """
    with httpx.Client(timeout=timeout_s, trust_env=False) as client:
        response = client.get(f"{admin_url}/clusters", params={"format": "json"})
        response.raise_for_status()
    return list(_parse_hosts(response.json()))


def _parse_hosts(document: Mapping[str, Any]) -> Iterable[UpstreamHost]:
    for cluster in document.get("cluster_statuses", []):
        for host in cluster.get("host_statuses", []):
            socket_address = host.get("address", {}).get("socket_address", {})
            address = f"{socket_address.get('address')}:{socket_address.get('port_value')}"
            status = host.get("health_status", {})
            healthy = status.get("eds_health_status", "HEALTHY") == "HEALTHY" and not any(
                status.get(flag) for flag in UNHEALTHY_FLAGS
            )
            yield UpstreamHost(cluster.get("name", ""), address, healthy)


def envoy_hosts_healthy(admin_url: str, addresses: Iterable[str]) -> str | None:
    """Probe whether every host in ``addresses`` is healthy in every Envoy cluster listing it."""
    try:
        hosts = envoy_hosts(admin_url)
    except (httpx.HTTPError, ValueError) as error:
        return f"Envoy admin /clusters failed: {error!r}"
    listed = {host.address for host in hosts}
    unhealthy = {host.address for host in hosts if not host.healthy}
    missing = sorted(set(addresses) - listed)
    waiting = sorted(unhealthy & set(addresses))
    problems = []
    if missing:
        problems.append(f"hosts not in any cluster: {missing}")
    if waiting:
        problems.append(f"hosts not healthy yet: {waiting}")
    return "; ".join(problems) or None


def tail(path: Path, lines: int = 20) -> str:
    """Return the last ``lines`` lines of the text file at ``path``, or a note if it is missing."""
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            return "".join(deque(handle, maxlen=lines))
    except FileNotFoundError:
        return f"({path} does not exist)\n"
