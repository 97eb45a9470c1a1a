"""Tests of the Prometheus scrape configuration rendered from the topology."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ops import monitoring
from ops.monitoring import DEFAULT_OUTPUT_PATH, PROBES, MonitoringSettings, render
from ops.topology import HOST, SERVICES, Topology, load_topology

APP_LABELS = {"site", "site_role", "replica", "service"}


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load_topology()


def jobs(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {job["job_name"]: job for job in config["scrape_configs"]}


def test_committed_config_current(topology: Topology) -> None:
    assert monitoring.is_current(topology), "run `python -m ops.monitoring`"


def test_check_mode_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert monitoring.main(["--check"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_check_mode_detects_drift(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stale = tmp_path / "prometheus.yml"
    stale.write_text(DEFAULT_OUTPUT_PATH.read_text().replace("9400", "9499"))
    assert monitoring.main(["--check", "--output", str(stale)]) == 1
    assert "stale" in capsys.readouterr().err


def test_check_mode_missing_file(tmp_path: Path) -> None:
    assert monitoring.main(["--check", "--output", str(tmp_path / "absent.yml")]) == 1


def test_write_mode_renders_file(tmp_path: Path, topology: Topology) -> None:
    output = tmp_path / "prometheus.yml"
    assert monitoring.main(["--output", str(output)]) == 0
    assert monitoring.is_current(topology, output)


def test_render_deterministic(topology: Topology) -> None:
    assert monitoring.to_yaml(render(topology)) == monitoring.to_yaml(render(topology))


def test_render_every_app_target(topology: Topology) -> None:
    config = render(topology)
    targets = {
        group["labels"]["replica"]: group["targets"]
        for job in config["scrape_configs"]
        if job["job_name"] not in ("envoy", "blackbox")
        for group in job["static_configs"]
    }
    expected = {endpoint.name: [endpoint.address] for endpoint in topology.metrics_endpoints()}
    assert targets == expected


def test_render_app_labels(topology: Topology) -> None:
    for name, job in jobs(render(topology)).items():
        if name == "blackbox":
            continue
        for group in job["static_configs"]:
            assert set(group["labels"]) >= APP_LABELS, (name, group)
            assert all(group["labels"][label] for label in APP_LABELS), (name, group)


def test_render_site_roles(topology: Topology) -> None:
    by_replica = {
        group["labels"]["replica"]: group["labels"]
        for job in render(topology)["scrape_configs"]
        for group in job["static_configs"]
        if "replica" in group.get("labels", {})
    }
    assert by_replica["shipment-primary-1"]["site_role"] == "primary"
    assert by_replica["worker-secondary-1"]["site_role"] == "secondary"
    assert by_replica["worker-secondary-1"]["service"] == "worker"
    assert by_replica["gateway-1"]["site"] == "shared"
    assert by_replica["envoy"]["site_role"] == "shared"


def test_render_job_names(topology: Topology) -> None:
    names = list(jobs(render(topology)))
    assert names == ["gateway", *SERVICES, "worker", "projector", "envoy", "blackbox"]


def test_render_envoy_job(topology: Topology) -> None:
    envoy = jobs(render(topology))["envoy"]
    assert envoy["metrics_path"] == "/stats/prometheus"
    assert envoy["static_configs"][0]["targets"] == [f"{HOST}:{topology.admin_port}"]


def test_envoy_relabel_site_clusters(topology: Topology) -> None:
    rules = jobs(render(topology))["envoy"]["metric_relabel_configs"]
    site_rules = [rule for rule in rules if rule["target_label"] == "site"]
    assert [rule["replacement"] for rule in site_rules] == ["primary", "secondary"]
    assert site_rules[0]["regex"] == "shipment_primary|task_primary|status_primary"


def test_envoy_relabel_service(topology: Topology) -> None:
    rules = jobs(render(topology))["envoy"]["metric_relabel_configs"]
    service_rule = next(rule for rule in rules if rule["target_label"] == "service")
    assert service_rule["regex"] == "(shipment|task|status)(_.+)?"
    assert service_rule["replacement"] == "$1"


def test_render_blackbox_probes(topology: Topology) -> None:
    blackbox = jobs(render(topology))["blackbox"]
    front = f"http://{HOST}:{topology.front_port}"
    targets = [group["targets"][0] for group in blackbox["static_configs"]]
    assert targets == [front + probe.path for probe in PROBES]
    endpoints = {group["labels"]["endpoint"] for group in blackbox["static_configs"]}
    assert "POST /api/tarea-concurrente" in endpoints
    assert "GET /api/status" in endpoints


def test_blackbox_modules_defined() -> None:
    modules = yaml.safe_load(monitoring.BLACKBOX_CONFIG_PATH.read_text())["modules"]
    for probe in PROBES:
        assert modules[probe.module]["http"]["method"] == probe.method


def test_blackbox_address_relabel(topology: Topology) -> None:
    settings = MonitoringSettings(blackbox_address="127.0.0.1:19115")
    relabel = jobs(render(topology, settings))["blackbox"]["relabel_configs"]
    assert relabel[-1] == {"target_label": "__address__", "replacement": "127.0.0.1:19115"}


def test_render_free_ports_topology() -> None:
    moved = load_topology().with_free_ports()
    config = render(moved)
    envoy = jobs(config)["envoy"]["static_configs"][0]["targets"]
    assert envoy == [f"{HOST}:{moved.admin_port}"]
    gateway = jobs(config)["gateway"]["static_configs"][0]["targets"]
    assert gateway == [moved.metrics_endpoint("gateway-1").address]


def test_render_intervals(topology: Topology) -> None:
    settings = MonitoringSettings(
        scrape_interval_s=1, evaluation_interval_s=0.5, probe_interval_s=2
    )
    config = render(topology, settings)
    assert config["global"] == {
        "scrape_interval": "1s",
        "scrape_timeout": "1s",
        "evaluation_interval": "500ms",
    }
    assert jobs(config)["blackbox"]["scrape_interval"] == "2s"


def test_settings_from_mapping() -> None:
    settings = MonitoringSettings.from_mapping({"scrape_interval_s": 5, "rule_files": ("a",)})
    assert settings.scrape_interval_s == 5
    assert settings.rule_files == ("a",)


def test_settings_unknown_key() -> None:
    with pytest.raises(ValueError, match="scrape_every"):
        MonitoringSettings.from_mapping({"scrape_every": 5})


def test_settings_zero_interval() -> None:
    with pytest.raises(ValueError, match="greater than 0"):
        MonitoringSettings.from_mapping({"probe_interval_s": 0})


def test_prometheus_command_loopback(tmp_path: Path) -> None:
    command = monitoring.prometheus_command(tmp_path / "p.yml", tmp_path, "127.0.0.1:9390")
    assert "--web.listen-address=127.0.0.1:9390" in command
    with pytest.raises(ValueError, match=r"not on 127\.0\.0\.1"):
        monitoring.prometheus_command(tmp_path / "p.yml", tmp_path, "0.0.0.0:9390")


def test_blackbox_command_loopback(tmp_path: Path) -> None:
    command = monitoring.blackbox_command(tmp_path / "b.yml", "127.0.0.1:9115")
    assert "--web.listen-address=127.0.0.1:9115" in command
    with pytest.raises(ValueError, match=r"not on 127\.0\.0\.1"):
        monitoring.blackbox_command(tmp_path / "b.yml", ":9115")
