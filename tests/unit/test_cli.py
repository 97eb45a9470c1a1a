"""The ``envios`` command line, without starting anything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ops.cli import format_status, main

COMMANDS: tuple[list[str], ...] = (
    [],
    ["up"],
    ["down"],
    ["status"],
    ["provision"],
    ["replay"],
    ["call"],
)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda command: " ".join(command) or "envios")
def test_cli_help_exits_zero(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])

    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_cli_status_json_when_down(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--state-dir", str(tmp_path), "status", "--json"])

    report = json.loads(capsys.readouterr().out)
    assert code == 1
    assert report["up"] is False
    assert report["state_dir"] == str(tmp_path)
    assert report["front_http_url"].startswith("http://127.0.0.1:")
    assert report["grpc_url"].startswith("grpc://127.0.0.1:")
    assert report["envoy_admin_url"].startswith("http://127.0.0.1:")


def test_cli_status_text_when_down(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--state-dir", str(tmp_path), "status"])

    assert code == 1
    assert "not up" in capsys.readouterr().out


def test_cli_down_when_down(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--state-dir", str(tmp_path), "down"])

    assert code == 0
    assert "was not up" in capsys.readouterr().out


def test_cli_missing_topology_fails(tmp_path: Path) -> None:
    code = main(["--topology", str(tmp_path / "absent.toml"), "status"])

    assert code == 1


def test_cli_unknown_argument_rejected() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["status", "--colour"])

    assert exit_info.value.code == 2


def test_cli_replay_requires_file(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["replay"])

    assert exit_info.value.code == 2
    assert "envios replay" in capsys.readouterr().err


def test_status_format_lists_processes() -> None:
    report = {
        "up": True,
        "supervisord_pid": 42,
        "state_dir": "/state",
        "front_http_url": "http://127.0.0.1:8080",
        "grpc_target": "127.0.0.1:9090",
        "envoy_admin_url": "http://127.0.0.1:9901",
        "redis_url": "redis://127.0.0.1:6390/0",
        "amqp_url": "amqp://guest:***@127.0.0.1:5673/%2F",
        "processes": [
            {
                "name": "shipment-primary-1",
                "site": "primary",
                "pid": 7,
                "state": "RUNNING",
                "health": "ok",
            },
            {
                "name": "worker-secondary-1",
                "site": "secondary",
                "pid": None,
                "state": "EXITED",
                "health": "-",
            },
        ],
        "clusters": {"shipment_primary": {"primary": {"healthy": 1, "total": 2}}},
    }

    text = format_status(report)

    assert "supervisord pid 42" in text
    assert "shipment-primary-1" in text
    assert "EXITED" in text
    assert "1/2" in text
    assert "http://127.0.0.1:8080" in text
