"""Tests of the traffic split helpers that need no Envoy."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from ops import traffic
from ops.cli import build_parser


@pytest.mark.parametrize("text", ["0", "42", "100"])
def test_parse_percent_valid(text: str) -> None:
    assert traffic.parse_percent(text) == int(text)


@pytest.mark.parametrize("text", ["-1", "101", "abc", "", "50.5", "1e2"])
def test_parse_percent_invalid(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="expected an integer from 0 to 100"):
        traffic.parse_percent(text)


@pytest.mark.parametrize(
    ("to", "percent", "expected"),
    [
        ("secondary", None, 100),
        ("primary", None, 0),
        ("secondary", 30, 30),
        ("primary", 30, 70),
        (None, 25, 25),
    ],
)
def test_secondary_percent_cases(to: str | None, percent: int | None, expected: int) -> None:
    assert traffic.secondary_percent(to, percent) == expected


def test_secondary_percent_nothing_given() -> None:
    with pytest.raises(traffic.TrafficError, match="nothing to change"):
        traffic.secondary_percent(None, None)


def test_set_percent_out_of_range() -> None:
    with pytest.raises(traffic.TrafficError, match="invalid percent 101"):
        traffic.set_secondary_percent("http://127.0.0.1:1", 101)


def key_file(root: Path) -> Path:
    return root / "current" / "envoy" / "envios" / "traffic" / "secondary_percent"


def test_persist_writes_key(tmp_path: Path) -> None:
    traffic.persist_secondary_percent(tmp_path, 40)

    assert (tmp_path / "current").is_symlink()
    assert key_file(tmp_path).read_text() == "40\n"


def test_persist_replaces_layer(tmp_path: Path) -> None:
    first = traffic.persist_secondary_percent(tmp_path, 40)
    other = first / "envoy" / "other_key"
    other.write_text("7\n")
    second = traffic.persist_secondary_percent(tmp_path, 0)

    assert key_file(tmp_path).read_text() == "0\n"
    assert (second / "envoy" / "other_key").read_text() == "7\n"
    assert not first.exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["current", second.name]


def test_cli_shift_rejects_percent(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        build_parser().parse_args(["traffic", "shift", "--percent", "150"])

    assert raised.value.code == 2
    assert "invalid percent '150'" in capsys.readouterr().err


def test_cli_shift_rejects_site(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["traffic", "shift", "--to", "tertiary"])

    assert "invalid choice: 'tertiary'" in capsys.readouterr().err
