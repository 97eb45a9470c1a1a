"""The traffic split as read from the JSON of Envoy's admin ``/runtime``."""

from __future__ import annotations

import pytest

from services.common.traffic import TRAFFIC_RUNTIME_KEY, effective_percent, runtime_entry

RUNTIME = {
    "layers": ["static", "disk", "admin"],
    "entries": {
        TRAFFIC_RUNTIME_KEY: {"final_value": "100", "layer_values": ["0", "", "100"]},
        "other.key": {"final_value": "1", "layer_values": ["1", "", ""]},
    },
}


def test_runtime_entry_by_layer() -> None:
    final, layers = runtime_entry(RUNTIME)

    assert final == "100"
    assert layers == {"static": "0", "disk": "", "admin": "100"}


def test_runtime_entry_key_missing() -> None:
    final, layers = runtime_entry({"layers": ["static"], "entries": {}})

    assert final == ""
    assert layers == {"static": ""}


@pytest.mark.parametrize(
    ("value", "percent"),
    [("0", 0), ("30", 30), ("100", 100), (" 50 ", 50), ("", 0), ("101", 0), ("-5", 0), ("1.5", 0)],
)
def test_effective_percent(value: str, percent: int) -> None:
    assert effective_percent(value) == percent
