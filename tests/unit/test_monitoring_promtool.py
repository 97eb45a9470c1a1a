"""Checks of deploy/prometheus/ with the real promtool and blackbox exporter binaries.

Both come from the Debian packages ``prometheus`` and ``prometheus-blackbox-exporter``,
which ``python -m ops provision --test-tools`` installs. No check opens a socket.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ops import monitoring
from ops.monitoring import BLACKBOX_CONFIG_PATH, DEFAULT_OUTPUT_PATH, PROMETHEUS_DIR, RULES_DIR
from ops.topology import load_topology

RULE_TESTS_DIR = PROMETHEUS_DIR / "tests"


def run_tool(*command: str) -> subprocess.CompletedProcess[str]:
    if shutil.which(command[0]) is None:
        pytest.fail(
            f"{command[0]} not found; install it with `python -m ops provision --test-tools`"
        )
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def rule_files() -> list[Path]:
    return sorted(RULES_DIR.glob("*.yml"))


def alert_names() -> list[str]:
    return [
        rule["alert"]
        for path in rule_files()
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def alert_cases() -> list[dict[str, Any]]:
    return [
        case
        for path in sorted(RULE_TESTS_DIR.glob("*.yml"))
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]


def test_promtool_check_config() -> None:
    result = run_tool("promtool", "check", "config", str(DEFAULT_OUTPUT_PATH))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_rendered_copy(tmp_path: Path) -> None:
    settings = monitoring.MonitoringSettings(
        scrape_interval_s=1, rule_files=(str(RULES_DIR / "*.yml"),)
    )
    path = monitoring.write(load_topology().with_free_ports(), tmp_path / "p.yml", settings)
    result = run_tool("promtool", "check", "config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 2 rule files found" in result.stdout


def test_promtool_check_rules() -> None:
    result = run_tool("promtool", "check", "rules", *map(str, rule_files()))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules() -> None:
    tests = sorted(map(str, RULE_TESTS_DIR.glob("*.yml")))
    assert tests, f"no rule tests in {RULE_TESTS_DIR}"
    result = run_tool("promtool", "test", "rules", *tests)
    assert result.returncode == 0, result.stdout + result.stderr


def test_blackbox_config_check() -> None:
    result = run_tool(
        "prometheus-blackbox-exporter", f"--config.file={BLACKBOX_CONFIG_PATH}", "--config.check"
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_fires_in_tests() -> None:
    firing = {case["alertname"] for case in alert_cases() if case.get("exp_alerts")}
    assert sorted(set(alert_names()) - firing) == []


def test_every_alert_quiet_in_tests() -> None:
    quiet = {case["alertname"] for case in alert_cases() if not case.get("exp_alerts")}
    assert sorted(set(alert_names()) - quiet) == []


def test_alerts_have_severity() -> None:
    for path in rule_files():
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    assert rule["labels"]["severity"] in ("page", "ticket"), rule["alert"]
                    assert rule["annotations"]["summary"], rule["alert"]


def test_every_alert_documented() -> None:
    docs = (PROMETHEUS_DIR.parent.parent / "docs" / "monitoring.md").read_text()
    missing = [name for name in alert_names() if f"### {name} (" not in docs]
    assert missing == []
