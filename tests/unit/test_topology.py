"""Unit tests of the topology description and what each process gets from it."""

from __future__ import annotations

from pathlib import Path

from ops.stack import Stack
from ops.topology import load_topology


def test_metrics_endpoints_cover_every_application_process() -> None:
    topology = load_topology()
    endpoints = topology.metrics_endpoints()
    names = [endpoint.name for endpoint in endpoints]
    assert names[:2] == ["gateway-1", "gateway-2"]
    assert {"status-secondary-2", "worker-primary-1", "projector-secondary"} <= set(names)
    assert len(set(names)) == len(names) == 18
    ports = [endpoint.port for endpoint in endpoints]
    assert ports == list(range(topology.metrics_base_port, topology.metrics_base_port + 18))


def test_metrics_endpoints_move_with_free_ports() -> None:
    topology = load_topology().with_free_ports()
    ports = topology.all_ports()
    assert len(set(ports)) == len(ports)
    assert topology.metrics_endpoint("gateway-1").port == topology.metrics_base_port


def test_workers_priority_by_site(tmp_path: Path) -> None:
    stack = Stack(load_topology(), tmp_path / "state", {})

    priorities = {
        program.name: program.environment["ENVIOS_WORKER_PRIORITY"]
        for program in stack.programs()
        if program.group == "workers" and program.name.startswith("worker-")
    }

    assert priorities == {"worker-primary-1": "10", "worker-secondary-1": "0"}


def test_workers_follow_traffic_split(tmp_path: Path) -> None:
    stack = Stack(load_topology(), tmp_path / "state", {})

    workers = {
        program.name: program.environment
        for program in stack.programs()
        if program.group == "workers" and program.name.startswith("worker-")
    }

    assert workers["worker-primary-1"]["ENVIOS_WORKER_SHIFTED_PRIORITY"] == "0"
    assert workers["worker-secondary-1"]["ENVIOS_WORKER_SHIFTED_PRIORITY"] == "10"
    for environment in workers.values():
        assert environment["ENVIOS_TRAFFIC_ADMIN_URL"] == stack.envoy_admin_url
