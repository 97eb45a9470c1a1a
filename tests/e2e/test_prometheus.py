"""A real Prometheus and blackbox exporter scraping the session stack.

The configuration is rendered by ``ops.monitoring`` for the stack's free-port topology,
with 1 s scrapes, and loads the rules of deploy/prometheus/rules/. Both servers listen on
free ports on 127.0.0.1 and are stopped by PID at the end of the module.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from ops import monitoring
from ops.monitoring import PROBES, MonitoringSettings
from ops.stack import Stack
from ops.topology import HOST, free_ports

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

START_TIMEOUT_S = 30.0
"""Time Prometheus and the blackbox exporter have to respond after they start."""

SERIES_TIMEOUT_S = 60.0
"""Time the scrapes and rule evaluations have to produce the expected series."""

STOP_TIMEOUT_S = 15.0
"""Time each server has to exit after SIGTERM before it gets SIGKILL."""

ABSENT_WITHOUT_FAULTS = {
    "envios_task_retries_total": "counted only when a task attempt fails transiently",
    "site_service:grpc_server_errors:rate1m": "recorded only while some call ends in a "
    "server error code",
}
"""Metric names used by a rule or panel that a healthy stack does not produce, with why."""

ALERTS_ALLOWED_TO_FIRE: dict[str, str] = {}
"""Alerts that may fire on the healthy session stack, with why; none so far."""

TRAFFIC_SEEN = (
    "sum(rate(envios_status_reads_total[1m])) > 0"
    " and sum(rate(envios_shipment_transitions_total[1m])) > 0"
)
"""Query that returns a sample once Prometheus has seen status reads and transitions grow."""

T = TypeVar("T")


@dataclass(frozen=True)
class Monitoring:
    """The running Prometheus of this module."""

    url: str
    """Base URL of Prometheus' HTTP API."""
    client: httpx.Client

    def api(self, path: str, **params: str) -> Any:
        response = self.client.get(f"{self.url}/api/v1/{path}", params=params)
        response.raise_for_status()
        return response.json()["data"]

    def query(self, expression: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("query", query=expression)["result"]
        return result


def wait_for(condition: Callable[[], T | None], timeout_s: float, what: str) -> T:
    """Return the first truthy result of ``condition``; fail after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.5)


def start(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as output:
        return subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_S)


def answers(client: httpx.Client, url: str) -> bool:
    try:
        return client.get(url).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture(scope="module")
def prometheus(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitoring]:
    # Earlier modules stop and restart processes of the shared stack.
    stack.wait_ready(timeout_s=START_TIMEOUT_S)
    directory = tmp_path_factory.mktemp("prometheus")
    prometheus_port, blackbox_port = free_ports(2)
    settings = MonitoringSettings(
        scrape_interval_s=1,
        evaluation_interval_s=1,
        probe_interval_s=2,
        blackbox_address=f"{HOST}:{blackbox_port}",
        rule_files=(str(monitoring.RULES_DIR / "*.yml"),),
    )
    config = monitoring.write(stack.topology, directory / "prometheus.yml", settings)
    blackbox_command = monitoring.blackbox_command(
        monitoring.BLACKBOX_CONFIG_PATH, f"{HOST}:{blackbox_port}"
    )
    prometheus_command = monitoring.prometheus_command(
        config, directory / "data", f"{HOST}:{prometheus_port}"
    )
    processes = [start(blackbox_command, directory / "blackbox.log")]
    try:
        processes.append(start(prometheus_command, directory / "prometheus.log"))
        with httpx.Client(timeout=10) as client:
            url = f"http://{HOST}:{prometheus_port}"
            wait_for(lambda: answers(client, f"{url}/-/ready"), START_TIMEOUT_S, "Prometheus")
            health = f"http://{HOST}:{blackbox_port}/-/healthy"
            wait_for(lambda: answers(client, health), START_TIMEOUT_S, "the blackbox exporter")
            yield Monitoring(url, client)
    finally:
        for process in processes:
            stop(process)


@pytest.fixture(scope="module")
def traffic(stack: Stack, prometheus: Monitoring) -> None:
    """Drive calls that touch every service: shipments, transitions, status reads, tasks.

    A labelled counter appears at its first increment, and ``rate()`` sees only increments
    between two scrapes, so the calls repeat until Prometheus reports a rate above 0 for
    status reads and transitions.
    """
    with httpx.Client(base_url=stack.front_http_url, timeout=30) as http:

        def rates_seen() -> bool:
            drive_calls(http)
            return bool(prometheus.query(TRAFFIC_SEEN))

        wait_for(rates_seen, SERIES_TIMEOUT_S, TRAFFIC_SEEN)


def drive_calls(http: httpx.Client) -> None:
    shipment_id = "e2e-prom-" + uuid.uuid4().hex[:12]
    assert http.post("/v1/shipments", json={"id": shipment_id}).status_code == 200
    patched = http.patch(f"/shippings/{shipment_id}", json={"status": "handling"})
    assert patched.status_code == 200, patched.text
    # Going back to pending is not allowed: one rejected transition.
    rejected = http.patch(f"/shippings/{shipment_id}", json={"status": "pending"})
    assert rejected.status_code == 400, rejected.text
    for _ in range(5):
        assert http.get(f"/api/status/shipments/{shipment_id}").status_code == 200
        assert http.get("/api/status").status_code == 200
    task = {"type": "transition", "shipmentIds": [shipment_id], "targetStatus": "cancelled"}
    task["workDuration"] = "0.1s"
    submitted = http.post("/api/tarea-concurrente", json=task)
    assert submitted.status_code == 200, submitted.text


def sample_value(series: dict[str, Any]) -> float:
    return float(series["value"][1])


def wait_at_least(prometheus: Monitoring, expression: str, minimum: float) -> None:
    def reached() -> bool:
        return any(sample_value(sample) >= minimum for sample in prometheus.query(expression))

    wait_for(reached, SERIES_TIMEOUT_S, f"{expression} >= {minimum}")


def test_prometheus_targets_up(stack: Stack, prometheus: Monitoring) -> None:
    expected = len(stack.topology.metrics_endpoints()) + 1 + len(PROBES)

    def all_up() -> list[dict[str, Any]] | None:
        targets: list[dict[str, Any]] = prometheus.api("targets")["activeTargets"]
        healthy = len(targets) == expected and all(t["health"] == "up" for t in targets)
        return targets if healthy else None

    targets = wait_for(all_up, SERIES_TIMEOUT_S, f"{expected} targets up")
    jobs = {target["labels"]["job"] for target in targets}
    assert jobs == {
        "gateway",
        "shipment",
        "task",
        "status",
        "worker",
        "projector",
        "envoy",
        "blackbox",
    }


def test_prometheus_target_labels(stack: Stack, prometheus: Monitoring) -> None:
    series = wait_for(
        lambda: prometheus.query('up{job!="blackbox"}'), SERIES_TIMEOUT_S, "up series"
    )
    for sample in series:
        labels = sample["metric"]
        assert {"site", "site_role", "replica", "service"} <= set(labels), labels
    replicas = {sample["metric"]["replica"] for sample in series}
    names = {endpoint.name for endpoint in stack.topology.metrics_endpoints()}
    assert replicas == names | {"envoy"}


def test_prometheus_probes_succeed(prometheus: Monitoring) -> None:
    def all_succeed() -> list[dict[str, Any]] | None:
        series = prometheus.query("probe_success")
        passed = len(series) == len(PROBES) and all(sample_value(s) == 1 for s in series)
        return series if passed else None

    series = wait_for(all_succeed, SERIES_TIMEOUT_S, "every probe to succeed")
    endpoints = {sample["metric"]["endpoint"] for sample in series}
    assert "POST /api/tarea-concurrente" in endpoints


def test_prometheus_key_series(traffic: None, stack: Stack, prometheus: Monitoring) -> None:
    checks = {
        'sum(grpc_server_handled_total{service="shipment", grpc_code="OK"})': 2,
        "sum(envios_shipment_transitions_total)": 1,
        "sum(envios_shipment_transitions_rejected_total)": 1,
        'sum(envios_status_reads_total{kind="shipment"})': 5,
        "sum(envios_http_requests_total)": 10,
        'sum(envoy_cluster_upstream_rq_total{site_role="primary", service="status"})': 5,
        "sum(envios_task_attempt_duration_seconds_count)": 1,
        "count(envios_build_info)": len(stack.topology.metrics_endpoints()),
    }
    for expression, minimum in checks.items():
        wait_at_least(prometheus, expression, minimum)


def test_prometheus_envoy_site_labels(stack: Stack, prometheus: Monitoring) -> None:
    primary = stack.topology.primary
    expression = 'envoy_cluster_membership_healthy{service="shipment", site_role="primary"}'
    series = wait_for(lambda: prometheus.query(expression), SERIES_TIMEOUT_S, expression)
    assert [sample["metric"]["site"] for sample in series] == [primary.name]
    assert sample_value(series[0]) == len(primary.ports["shipment"])


def test_prometheus_process_memory(stack: Stack, prometheus: Monitoring) -> None:
    expression = 'process_resident_memory_bytes{job!~"envoy|blackbox"} > 10e6'
    count = len(stack.topology.metrics_endpoints())
    wait_for(lambda: len(prometheus.query(expression)) == count, SERIES_TIMEOUT_S, expression)


def test_prometheus_rules_loaded(prometheus: Monitoring) -> None:
    expected = {
        name
        for path in monitoring.RULES_DIR.glob("*.yml")
        for name in monitoring.rule_expressions(path)
    }

    def evaluated() -> list[dict[str, Any]] | None:
        groups = prometheus.api("rules")["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        done = all(not rule["lastEvaluation"].startswith("0001-") for rule in rules)
        return rules if rules and done else None

    rules = wait_for(evaluated, SERIES_TIMEOUT_S, "every rule to be evaluated")
    assert {rule["name"] for rule in rules} == expected
    failing = {rule["name"]: rule.get("lastError") for rule in rules if rule["health"] != "ok"}
    assert failing == {}


def test_prometheus_no_alert_firing(traffic: None, prometheus: Monitoring) -> None:
    wait_for(lambda: prometheus.query("probe_success"), SERIES_TIMEOUT_S, "probe results")
    alerts = prometheus.api("alerts")["alerts"]
    firing = {
        alert["labels"]["alertname"]: alert["labels"]
        for alert in alerts
        if alert["state"] == "firing" and alert["labels"]["alertname"] not in ALERTS_ALLOWED_TO_FIRE
    }
    assert firing == {}


def test_prometheus_used_metrics_exist(traffic: None, prometheus: Monitoring) -> None:
    used = {
        name
        for path in monitoring.DASHBOARDS_DIR.glob("*.json")
        for expression in monitoring.dashboard_expressions(path)
        for name in monitoring.promql_metric_names(expression)
    }
    used |= {
        name
        for path in monitoring.RULES_DIR.glob("*.yml")
        for expression in monitoring.rule_expressions(path).values()
        for name in monitoring.promql_metric_names(expression)
    }
    expected = sorted(used - set(ABSENT_WITHOUT_FAULTS))

    def missing_names() -> list[str]:
        return [name for name in expected if not prometheus.query(f"count({name})")]

    deadline = time.monotonic() + SERIES_TIMEOUT_S
    missing = missing_names()
    while missing and time.monotonic() < deadline:
        time.sleep(1)
        missing = missing_names()
    assert missing == []
