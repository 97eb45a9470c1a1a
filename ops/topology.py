"""The stack's topology: ports, sites, replicas and weights.

One description (``envoy/topology.toml``) feeds both the Envoy configuration and the
process supervisor configuration, so the two can never disagree about a port.
"""

from __future__ import annotations

import socket
import tomllib
from collections.abc import Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
"""Every process of the local stack binds to and targets loopback only."""

SERVICES = ("shipment", "task", "status")
"""Service short names; each is one gRPC service with its own Envoy cluster."""

GRPC_SERVICE_NAMES = {
    "shipment": "envios.shipment.v1.ShipmentService",
    "task": "envios.task.v1.TaskService",
    "status": "envios.status.v1.StatusService",
}
"""Fully qualified gRPC service name of each service, as the health service reports it."""

DEFAULT_TOPOLOGY_PATH = Path(__file__).resolve().parent.parent / "envoy" / "topology.toml"


class TopologyError(ValueError):
    """Raised when a topology description is invalid; the message lists every problem."""


@dataclass(frozen=True)
class Replica:
    """One service process of one site."""

    service: str
    """Short service name, one of ``SERVICES``."""
    site: str
    """Name of the site the replica belongs to."""
    index: int
    """1-based position of the replica inside its site."""
    port: int
    """TCP port on ``HOST`` where the replica serves gRPC."""

    @property
    def name(self) -> str:
        """Process name, for example ``shipment-primary-1``."""
        return f"{self.service}-{self.site}-{self.index}"

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"


@dataclass(frozen=True)
class MetricsEndpoint:
    """The Prometheus ``/metrics`` endpoint of one application process."""

    name: str
    """Process name, for example ``gateway-1``, ``status-primary-2`` or ``worker-secondary-1``."""
    job: str
    """Scrape job: ``gateway``, a short service name, ``worker`` or ``projector``."""
    site: str
    """Site of the process; empty for gateways, which serve both sites."""
    port: int
    """TCP port on ``HOST`` where the process serves ``/metrics``."""

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"


@dataclass(frozen=True)
class Site:
    """A group of replicas of every service; sites have equal capacity."""

    name: str
    """Site name; the first site of the topology is the primary."""
    ports: Mapping[str, tuple[int, ...]]
    """Ports of each service's replicas in this site, keyed by short service name."""
    workers: int = 1
    """Task worker processes in this site."""

    def replicas(self, service: str) -> tuple[Replica, ...]:
        return tuple(
            Replica(service, self.name, index, port)
            for index, port in enumerate(self.ports[service], start=1)
        )


@dataclass(frozen=True)
class Topology:
    """Everything the renderers need to lay out the local stack."""

    front_port: int = 8080
    """Envoy listener for external HTTP/1.1 and HTTP/2 callers."""
    grpc_port: int = 9090
    """Envoy listener for internal gRPC callers."""
    admin_port: int = 9901
    """Envoy admin API, bound to ``HOST`` only."""
    gateway_ports: tuple[int, ...] = (8081, 8082)
    """One HTTP/JSON gateway replica per port."""
    gateway_weights: tuple[int, ...] = (1, 1)
    """Weighted round robin weight of each gateway replica, in ``gateway_ports`` order."""
    gateway_max_concurrent_requests: int = 500
    """Concurrent requests one gateway replica accepts."""
    max_concurrent_rpcs: int = 500
    """Concurrent RPCs one service replica accepts before RESOURCE_EXHAUSTED."""
    sites: tuple[Site, ...] = field(default_factory=tuple)
    """Sites in failover order: primary first, then secondary."""
    redis_port: int = 6390
    """Port of the project-run Redis server."""
    amqp_port: int = 5673
    """AMQP port of the project-run RabbitMQ node."""
    amqp_dist_port: int = 25673
    """Erlang distribution port of the project-run RabbitMQ node."""
    metrics_base_port: int = 9400
    """First ``/metrics`` port; application processes take consecutive ports from here."""

    @property
    def primary(self) -> Site:
        return self.sites[0]

    @property
    def secondary(self) -> Site:
        return self.sites[1]

    def replicas(self, service: str | None = None) -> Iterator[Replica]:
        """Yield every replica, site by site, optionally of one service only."""
        for site in self.sites:
            for name in SERVICES if service is None else (service,):
                yield from site.replicas(name)

    def metrics_endpoints(self) -> list[MetricsEndpoint]:
        """Return the ``/metrics`` endpoint of every application process, in a fixed order.

        Gateways come first, then each site's service replicas, task workers and status
        projector; ports count up from ``metrics_base_port`` in that order.
        """
        names = [
            (f"gateway-{index}", "gateway", "") for index in range(1, len(self.gateway_ports) + 1)
        ]
        for site in self.sites:
            names += [
                (replica.name, replica.service, site.name)
                for replica in self.replicas()
                if replica.site == site.name
            ]
            names += [
                (f"worker-{site.name}-{index}", "worker", site.name)
                for index in range(1, site.workers + 1)
            ]
            names.append((f"projector-{site.name}", "projector", site.name))
        return [
            MetricsEndpoint(name, job, site, self.metrics_base_port + offset)
            for offset, (name, job, site) in enumerate(names)
        ]

    def metrics_endpoint(self, name: str) -> MetricsEndpoint:
        """Return the ``/metrics`` endpoint of the process ``name``.

        Raises:
            KeyError: when no application process has that name.
        """
        for endpoint in self.metrics_endpoints():
            if endpoint.name == name:
                return endpoint
        raise KeyError(name)

    def all_ports(self) -> list[int]:
        ports = [self.front_port, self.grpc_port, self.admin_port, *self.gateway_ports]
        ports += [replica.port for replica in self.replicas()]
        ports += [self.redis_port, self.amqp_port, self.amqp_dist_port]
        return ports + [endpoint.port for endpoint in self.metrics_endpoints()]

    def with_free_ports(self) -> Topology:
        """Return the same layout on ports that the kernel reports free right now.

        Tests use this so that no test depends on a fixed port.
        """
        ports = iter(free_ports(len(self.all_ports())))
        sites = tuple(
            replace(
                site,
                ports={name: tuple(next(ports) for _ in site.ports[name]) for name in SERVICES},
            )
            for site in self.sites
        )
        return replace(
            self,
            front_port=next(ports),
            grpc_port=next(ports),
            admin_port=next(ports),
            gateway_ports=tuple(next(ports) for _ in self.gateway_ports),
            sites=sites,
            redis_port=next(ports),
            amqp_port=next(ports),
            amqp_dist_port=next(ports),
        )._with_free_metrics_ports()

    def _with_free_metrics_ports(self) -> Topology:
        """Move ``metrics_base_port`` to the start of a free run of consecutive ports."""
        count = len(self.metrics_endpoints())
        taken = set(self.all_ports()[:-count])
        return replace(self, metrics_base_port=free_port_run(count, exclude=taken))


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct TCP ports on ``HOST`` that are free at the time of the call."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port_run(count: int, exclude: AbstractSet[int] = frozenset(), attempts: int = 50) -> int:
    """Return the first of ``count`` consecutive TCP ports on ``HOST`` that are free now.

    No port of the run is in ``exclude``.

    Raises:
        OSError: when no such run was found in ``attempts`` tries.
    """
    for _ in range(attempts):
        start = free_ports(1)[0]
        run = range(start, start + count)
        if start + count <= 65535 and exclude.isdisjoint(run) and _all_free(run):
            return start
    raise OSError(f"no run of {count} free consecutive ports found on {HOST}")


def _all_free(ports: range) -> bool:
    sockets = []
    try:
        for port in ports:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((HOST, port))
        return True
    except OSError:
        return False
    finally:
        for sock in sockets:
            sock.close()


def load_topology(path: Path = DEFAULT_TOPOLOGY_PATH) -> Topology:
    """Read and validate a topology TOML file."""
    with path.open("rb") as handle:
        return parse_topology(tomllib.load(handle))


def parse_topology(data: Mapping[str, Any]) -> Topology:
    """Build a topology from the mapping form of ``topology.toml``.

    Raises:
        TopologyError: listing every invalid or missing value at once.
    """
    errors: list[str] = []
    envoy = data.get("envoy", {})
    gateway = data.get("gateway", {})
    services = data.get("services", {})
    stores = data.get("data", {})
    metrics = data.get("metrics", {})
    sites = tuple(_parse_site(entry, errors) for entry in data.get("sites", []))
    topology = Topology(
        front_port=envoy.get("front_port", 8080),
        grpc_port=envoy.get("grpc_port", 9090),
        admin_port=envoy.get("admin_port", 9901),
        gateway_ports=tuple(gateway.get("ports", (8081, 8082))),
        gateway_weights=tuple(gateway.get("weights", (1,) * len(gateway.get("ports", (0, 0))))),
        gateway_max_concurrent_requests=gateway.get("max_concurrent_requests", 500),
        max_concurrent_rpcs=services.get("max_concurrent_rpcs", 500),
        sites=sites,
        redis_port=stores.get("redis_port", 6390),
        amqp_port=stores.get("amqp_port", 5673),
        amqp_dist_port=stores.get("amqp_dist_port", 25673),
        metrics_base_port=metrics.get("base_port", 9400),
    )
    errors += _check(topology)
    if errors:
        raise TopologyError("invalid topology: " + "; ".join(errors))
    return topology


def _parse_site(entry: Mapping[str, Any], errors: list[str]) -> Site:
    name = entry.get("name", "")
    ports = {}
    for service in SERVICES:
        key = f"{service}_ports"
        ports[service] = tuple(entry.get(key, ()))
        if not ports[service]:
            errors.append(f"site {name!r}: {key} is missing or empty")
    return Site(name=name, ports=ports, workers=entry.get("workers", 1))


def _check(topology: Topology) -> list[str]:
    errors = []
    if len(topology.sites) != 2:
        errors.append(
            f"exactly 2 sites are required (primary, secondary), got {len(topology.sites)}"
        )
    names = [site.name for site in topology.sites]
    if len(set(names)) != len(names) or not all(name.isidentifier() for name in names):
        errors.append(f"site names must be distinct identifiers, got {names}")
    if len(topology.gateway_weights) != len(topology.gateway_ports):
        errors.append("gateway.weights must have one weight per gateway port")
    if any(weight < 1 for weight in topology.gateway_weights):
        errors.append("gateway.weights must be positive integers")
    ports = topology.all_ports()
    if any(not isinstance(port, int) or not 1 <= port <= 65535 for port in ports):
        errors.append("every port must be an integer from 1 to 65535")
    duplicates = sorted({port for port in ports if ports.count(port) > 1})
    if duplicates:
        errors.append(f"ports used twice: {duplicates}")
    for key in ("max_concurrent_rpcs", "gateway_max_concurrent_requests"):
        if getattr(topology, key) < 1:
            errors.append(f"{key} must be at least 1")
    return errors
