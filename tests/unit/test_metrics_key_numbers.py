"""Key numbers of `envios status` computed from parsed /metrics samples."""

from __future__ import annotations

import pytest

from ops import health
from ops.health import UpstreamHost
from ops.key_numbers import (
    KeyNumbers,
    SiteNumbers,
    _serving_by_health,
    as_dict,
    format_numbers,
    handled_calls,
    total,
)
from ops.topology import load_topology

SHIPMENT = "envios.shipment.v1.ShipmentService"


def handled(service: str, code: str) -> tuple[str, frozenset[tuple[str, str]]]:
    labels = {"grpc_service": service, "grpc_method": "M", "grpc_type": "unary", "grpc_code": code}
    return ("grpc_server_handled_total", frozenset(labels.items()))


def test_handled_calls_counts_server_errors() -> None:
    samples = {
        handled(SHIPMENT, "OK"): 90.0,
        handled(SHIPMENT, "NOT_FOUND"): 5.0,
        handled(SHIPMENT, "UNAVAILABLE"): 3.0,
        handled(SHIPMENT, "INTERNAL"): 2.0,
    }
    assert handled_calls(samples) == (100.0, 5.0)


def test_handled_calls_skips_health_checks() -> None:
    samples = {handled("grpc.health.v1.Health", "OK"): 50.0, handled(SHIPMENT, "OK"): 1.0}
    assert handled_calls(samples) == (1.0, 0.0)


def test_total_filters_labels() -> None:
    samples = {
        ("envios_status_reads_total", frozenset({("source", "cache"), ("kind", "task")})): 3.0,
        ("envios_status_reads_total", frozenset({("source", "cache"), ("kind", "shipment")})): 4.0,
        ("envios_status_reads_total", frozenset({("source", "database"), ("kind", "task")})): 1.0,
    }
    assert total(samples, "envios_status_reads_total") == 8.0
    assert total(samples, "envios_status_reads_total", source="cache") == 7.0
    assert total(samples, "envios_tasks_in_flight") == 0.0


def test_format_numbers_shows_sites() -> None:
    numbers = KeyNumbers(
        window_s=1.0,
        sites={"primary": SiteNumbers(12.5, 0.02, 1.0), "secondary": SiteNumbers(0.0, None, 0.0)},
        serving_site="primary",
        configured_secondary_percent=0,
        tasks_in_flight=3,
        tasks_queued=7,
        cache_hit_ratio=0.9,
    )
    text = format_numbers(numbers)
    assert "primary          12.5     2.0%       100.0%" in text
    assert "secondary         0.0        -         0.0%" in text
    assert "serving site     primary; 0% of calls" in text
    assert "tasks            3 in flight, 7 queued, 0 dead-lettered" in text
    assert "cache hit ratio  90.0%" in text
    assert as_dict(numbers)["sites"]["primary"]["requests_per_s"] == 12.5


def test_format_numbers_serving_by_health() -> None:
    numbers = KeyNumbers(
        window_s=1.0,
        serving_site="primary",
        serving_site_by="health",
        configured_secondary_percent=0,
    )

    text = format_numbers(numbers)

    assert "serving site     primary (by health checks: no calls in the window)" in text
    assert as_dict(numbers)["serving_site_by"] == "health"
    assert as_dict(numbers)["configured_secondary_percent"] == 0


def hosts_with(healthy_sites: set[str]) -> list[UpstreamHost]:
    topology = load_topology()
    return [
        UpstreamHost(
            f"{replica.service}_{replica.site}", replica.address, replica.site in healthy_sites
        )
        for replica in topology.replicas()
    ]


def test_serving_by_health_follows_order(monkeypatch: pytest.MonkeyPatch) -> None:
    topology = load_topology()
    cases = [
        ({"primary", "secondary"}, 0, "primary"),
        ({"secondary"}, 0, "secondary"),
        ({"primary", "secondary"}, 100, "secondary"),
        ({"primary"}, 100, "primary"),
        (set(), 0, ""),
    ]
    for healthy_sites, percent, expected in cases:
        monkeypatch.setattr(
            health, "envoy_hosts", lambda url, sites=healthy_sites: hosts_with(sites)
        )
        numbers = KeyNumbers(window_s=1.0, configured_secondary_percent=percent)
        assert _serving_by_health(topology, "http://admin", numbers) == expected
