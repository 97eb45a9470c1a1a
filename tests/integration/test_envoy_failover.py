"""Active-passive failover through a real Envoy, with in-process status backends.

Every test starts Envoy on the rendered default topology (moved to free ports) and one
backend per status replica, then stops and starts backends and checks who serves calls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from ops import envoy_policy, traffic
from ops.topology import HOST, Topology, load_topology
from tests.integration.envoy_harness import (
    READ_METHOD,
    Backend,
    EnvoyProcess,
    call_replicas,
    wait_for,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(90)]

CALLS = 40
START_TIMEOUT_S = 15.0
HEALTH_TIMEOUT_S = 10.0


@dataclass
class FailoverStack:
    """Envoy, one backend per status replica, and a channel to Envoy's gRPC listener."""

    topology: Topology
    envoy: EnvoyProcess
    channel: grpc.aio.Channel
    backends: dict[str, Backend]

    def site_backends(self, site: str) -> list[Backend]:
        return [backend for backend in self.backends.values() if backend.replica.site == site]

    def names(self, site: str) -> set[str]:
        return {backend.replica.name for backend in self.site_backends(site)}

    async def wait_health(self, site: str, healthy: bool) -> None:
        """Wait until Envoy reports every status host of ``site`` as ``healthy``."""
        await self.wait_hosts(self.site_backends(site), healthy)

    async def wait_hosts(self, backends: list[Backend], healthy: bool) -> None:
        """Wait until Envoy reports the hosts of ``backends`` (one site) as ``healthy``."""
        cluster = f"status_{backends[0].replica.site}"
        ports = {backend.replica.port for backend in backends}

        async def reached() -> bool:
            flags = await self.envoy.host_health(cluster)
            return all(flags.get(port) is healthy for port in ports)

        state = "healthy" if healthy else "unhealthy"
        await wait_for(reached, HEALTH_TIMEOUT_S, f"{cluster} hosts {sorted(ports)} {state}")

    async def stop_site(self, site: str) -> None:
        for backend in self.site_backends(site):
            await backend.stop()

    async def start_site(self, site: str) -> None:
        for backend in self.site_backends(site):
            await backend.start()


@pytest_asyncio.fixture
async def failover(tmp_path: Path) -> AsyncIterator[FailoverStack]:
    topology = load_topology().with_free_ports()
    backends = {replica.name: Backend(replica) for replica in topology.replicas("status")}
    envoy = EnvoyProcess(topology, tmp_path)
    channel = grpc.aio.insecure_channel(f"{HOST}:{topology.grpc_port}")
    try:
        for backend in backends.values():
            await backend.start()
        envoy.start()
        await wait_for(envoy.ready, START_TIMEOUT_S, "envoy admin /ready")
        result = FailoverStack(topology, envoy, channel, backends)
        await result.wait_health(topology.primary.name, healthy=True)
        await result.wait_health(topology.secondary.name, healthy=True)
        yield result
    finally:
        await channel.close()
        envoy.stop()
        for backend in backends.values():
            await backend.stop()


async def test_failover_all_healthy_uses_primary(failover: FailoverStack) -> None:
    served, failed = await call_replicas(failover.channel, CALLS)

    assert not failed
    assert set(served) == failover.names("primary")
    assert sum(served.values()) == CALLS


async def test_failover_one_primary_down_stays_primary(failover: FailoverStack) -> None:
    stopped = failover.backends["status-primary-1"]
    await stopped.stop()
    # Retries on connect failure cover the calls made before the health check notices.
    early_served, early_failed = await call_replicas(failover.channel, CALLS)
    await failover.wait_hosts([stopped], healthy=False)
    served, failed = await call_replicas(failover.channel, CALLS)

    assert not early_failed
    assert set(early_served) == {"status-primary-2"}
    assert not failed
    assert set(served) == {"status-primary-2"}


async def test_failover_primary_down_uses_secondary(failover: FailoverStack) -> None:
    await failover.stop_site("primary")
    await failover.wait_health("primary", healthy=False)
    served, failed = await call_replicas(failover.channel, CALLS)

    assert not failed
    assert set(served) == failover.names("secondary")


async def test_failover_primary_restart_returns(failover: FailoverStack) -> None:
    await failover.stop_site("primary")
    await failover.wait_health("primary", healthy=False)
    during, _ = await call_replicas(failover.channel, CALLS)
    await failover.start_site("primary")
    await failover.wait_health("primary", healthy=True)
    served, failed = await call_replicas(failover.channel, CALLS)

    assert set(during) == failover.names("secondary")
    assert not failed
    assert set(served) == failover.names("primary")


async def test_failover_secondary_down_unnoticed(failover: FailoverStack) -> None:
    await failover.stop_site("secondary")
    early_served, early_failed = await call_replicas(failover.channel, CALLS)
    await failover.wait_health("secondary", healthy=False)
    served, failed = await call_replicas(failover.channel, CALLS)

    assert not early_failed
    assert set(early_served) == failover.names("primary")
    assert not failed
    assert set(served) == failover.names("primary")


async def test_failover_primary_errors_retry_secondary(failover: FailoverStack) -> None:
    for backend in failover.site_backends("primary"):
        backend.failing = True
    served, failed = await call_replicas(failover.channel, CALLS)

    # Each read is retried on the other primary host, then on the secondary site.
    assert not failed
    assert set(served) == failover.names("secondary")


async def test_failover_all_down_fails_fast(failover: FailoverStack) -> None:
    await failover.stop_site("primary")
    await failover.stop_site("secondary")
    await failover.wait_health("primary", healthy=False)
    await failover.wait_health("secondary", healthy=False)
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await failover.channel.unary_unary(READ_METHOD)(b"", timeout=10.0)
    elapsed_s = time.monotonic() - started

    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    # Panic threshold 0: Envoy rejects the call at once instead of trying hosts known to be down.
    assert "no healthy upstream" in (raised.value.details() or "")
    assert elapsed_s < 1.5


async def test_failover_serving_but_failing_stays_ejected(failover: FailoverStack) -> None:
    failing = failover.backends["status-primary-1"]
    failing.failing = True
    served, failed = await call_replicas(failover.channel, CALLS)
    await failover.wait_hosts([failing], healthy=False)
    # Several passing health checks later, the host is still out of load balancing.
    await asyncio.sleep(3 * envoy_policy.DEFAULT_TUNING.health_check_interval_s)
    later_served, later_failed = await call_replicas(failover.channel, CALLS)
    flags = await failover.envoy.host_health("status_primary")

    assert not failed
    assert set(served) == {"status-primary-2"}
    assert flags[failing.replica.port] is False
    assert not later_failed
    assert set(later_served) == {"status-primary-2"}


async def test_failover_shift_moves_traffic(failover: FailoverStack) -> None:
    await set_runtime(failover, 100)
    shifted, shifted_failed = await call_replicas(failover.channel, CALLS)
    await set_runtime(failover, 0)
    restored, restored_failed = await call_replicas(failover.channel, CALLS)

    assert not shifted_failed
    assert set(shifted) == failover.names("secondary")
    assert not restored_failed
    assert set(restored) == failover.names("primary")


async def test_failover_shift_half_splits(failover: FailoverStack) -> None:
    await set_runtime(failover, 50)
    served, failed = await call_replicas(failover.channel, 200)
    secondary = sum(served[name] for name in failover.names("secondary"))

    assert not failed
    # 200 calls at 50%: the binomial spread makes 60..140 a safe bound.
    assert 60 <= secondary <= 140


async def test_failover_shift_secondary_down_falls_back(failover: FailoverStack) -> None:
    await set_runtime(failover, 100)
    await failover.stop_site("secondary")
    await failover.wait_health("secondary", healthy=False)
    served, failed = await call_replicas(failover.channel, CALLS)

    assert not failed
    assert set(served) == failover.names("primary")


async def set_runtime(failover: FailoverStack, percent: int) -> None:
    await asyncio.to_thread(traffic.set_secondary_percent, failover.envoy.admin_url, percent)
