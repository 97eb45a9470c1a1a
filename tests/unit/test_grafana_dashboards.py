"""Tests of the Grafana dashboards and provisioning files in deploy/grafana/.

Grafana itself is not packaged for Debian, so these tests check the JSON: every query is
valid PromQL (``promtool check rules`` parses it) and selects only metrics that the stack
exports or that a recording rule of deploy/prometheus/rules/ records.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ops.monitoring import (
    DASHBOARDS_DIR,
    GRAFANA_DIR,
    GRAFANA_VARIABLES,
    RULES_DIR,
    dashboard_expressions,
    promql_metric_names,
    rule_expressions,
)

HISTOGRAMS = (
    "grpc_server_handling_seconds",
    "envios_http_request_duration_seconds",
    "envios_task_attempt_duration_seconds",
    "envios_projector_lag_seconds",
    "envoy_cluster_upstream_rq_time",
)
"""Histograms the stack exports; each has ``_bucket``, ``_sum`` and ``_count`` series."""

EXPORTED_METRICS = frozenset(
    {f"{name}_{suffix}" for name in HISTOGRAMS for suffix in ("bucket", "sum", "count")}
    | {
        # Service replicas (gRPC server interceptor).
        "grpc_server_started_total",
        "grpc_server_handled_total",
        "envios_grpc_server_in_flight",
        # Gateways.
        "envios_http_requests_total",
        "envios_http_requests_in_flight",
        # Shipment service.
        "envios_shipment_transitions_total",
        "envios_shipment_transitions_rejected_total",
        # Task workers and task replicas.
        "envios_tasks_in_flight",
        "envios_task_queue_depth",
        "envios_task_dead_letter_depth",
        "envios_tasks_dead_lettered_total",
        "envios_task_retries_total",
        # Status service and projectors.
        "envios_status_reads_total",
        "envios_status_fallbacks_total",
        "envios_status_cache_hit_ratio",
        "envios_status_degraded",
        "envios_projector_events_total",
        "envios_projector_last_lag_seconds",
        # Every application process.
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "envios_build_info",
        # Envoy admin /stats/prometheus.
        "envoy_cluster_upstream_rq_total",
        "envoy_cluster_upstream_rq_xx",
        "envoy_cluster_membership_healthy",
        "envoy_cluster_membership_total",
        "envoy_cluster_outlier_detection_ejections_active",
        # Blackbox exporter probes, and Prometheus' own series of every target.
        "probe_success",
        "probe_duration_seconds",
        "probe_http_status_code",
        "up",
    }
)
"""Metric names the stack exports, as the e2e Prometheus test finds them."""

TOPIC_METRICS = {
    "traffic per site": "envoy_cluster_upstream_rq_total",
    "errors per site": "site_service:grpc_server_error_ratio:rate1m",
    "balancing per replica": "grpc_server_started_total",
    "task run time": "envios_task_attempt_duration_seconds_bucket",
    "task backlog": "envios_task_queue_depth",
    "cache": "envios_status_reads_total",
    "transitions": "envios_shipment_transitions_total",
    "endpoint probes": "probe_success",
    "process CPU": "process_cpu_seconds_total",
    "process memory": "process_resident_memory_bytes",
}
"""One metric that must be on a dashboard for each topic the dashboards cover."""

DATASOURCE_UID = "envios-prometheus"


def dashboard_paths() -> list[Path]:
    return sorted(DASHBOARDS_DIR.glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def query_panels() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.name, panel)
        for path in dashboard_paths()
        for panel in load(path)["panels"]
        if panel["type"] != "row"
    ]


def recorded_names() -> set[str]:
    return {
        name for path in RULES_DIR.glob("*.yml") for name in rule_expressions(path) if ":" in name
    }


def dashboard_metric_names() -> set[str]:
    return {
        name
        for path in dashboard_paths()
        for expression in dashboard_expressions(path)
        for name in promql_metric_names(expression)
    }


@pytest.mark.parametrize(
    ("expression", "names"),
    [
        ("up", {"up"}),
        (
            'rate(grpc_server_handled_total{grpc_code=~"A|B"}[$__rate_interval])',
            {"grpc_server_handled_total"},
        ),
        ("sum by (le, route) (rate(x_bucket[5m]))", {"x_bucket"}),
        ("a / on(job) group_left(site) b > bool 0.5 and c:d:e", {"a", "b", "c:d:e"}),
        ('label_replace(m, "dst", "$1", "src", "(.*)") * 1e3', {"m"}),
        ("max_over_time(m[5m] offset 1h)", {"m"}),
    ],
)
def test_metric_names_extraction(expression: str, names: set[str]) -> None:
    assert promql_metric_names(expression) == names


def test_dashboards_exist() -> None:
    assert len(dashboard_paths()) >= 2


def test_dashboard_uids_unique() -> None:
    uids = [load(path)["uid"] for path in dashboard_paths()]
    assert len(set(uids)) == len(uids)


def test_panel_ids_unique() -> None:
    for path in dashboard_paths():
        ids = [panel["id"] for panel in load(path)["panels"]]
        assert len(set(ids)) == len(ids), path.name


def test_panels_have_queries() -> None:
    for name, panel in query_panels():
        assert panel["targets"], (name, panel["title"])
        assert all(target["expr"].strip() for target in panel["targets"]), (name, panel["title"])


def test_panels_use_datasource() -> None:
    for name, panel in query_panels():
        assert panel["datasource"]["uid"] == DATASOURCE_UID, (name, panel["title"])


def test_panels_fit_grid() -> None:
    for name, panel in query_panels():
        position = panel["gridPos"]
        assert position["x"] + position["w"] <= 24, (name, panel["title"])


def test_panel_metrics_exported() -> None:
    known = EXPORTED_METRICS | recorded_names()
    for name, panel in query_panels():
        for target in panel["targets"]:
            unknown = promql_metric_names(target["expr"]) - known
            assert not unknown, (name, panel["title"], unknown)


def test_rule_metrics_exported() -> None:
    known = EXPORTED_METRICS | recorded_names()
    for path in RULES_DIR.glob("*.yml"):
        for rule, expression in rule_expressions(path).items():
            unknown = promql_metric_names(expression) - known
            assert not unknown, (path.name, rule, unknown)


def test_dashboards_cover_topics() -> None:
    used = dashboard_metric_names()
    missing = {topic: name for topic, name in TOPIC_METRICS.items() if name not in used}
    assert missing == {}


def test_panel_queries_valid_promql(tmp_path: Path) -> None:
    if shutil.which("promtool") is None:
        pytest.fail("promtool not found; install it with `python -m ops provision --test-tools`")
    expressions = [
        GRAFANA_VARIABLES.sub("1m", expression)
        for path in dashboard_paths()
        for expression in dashboard_expressions(path)
    ]
    rules = [{"record": f"panel:query:{index}", "expr": e} for index, e in enumerate(expressions)]
    rule_file = tmp_path / "panels.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    command = ["promtool", "check", "rules", str(rule_file)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_datasource_provisioning() -> None:
    path = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml"
    datasources = yaml.safe_load(path.read_text())["datasources"]
    assert [source["uid"] for source in datasources] == [DATASOURCE_UID]
    assert datasources[0]["url"].startswith("http://127.0.0.1:")


def test_dashboard_provisioning() -> None:
    path = GRAFANA_DIR / "provisioning" / "dashboards" / "envios.yml"
    providers = yaml.safe_load(path.read_text())["providers"]
    assert providers[0]["type"] == "file"
    assert providers[0]["options"]["path"] == "${ENVIOS_DASHBOARDS_DIR}"
