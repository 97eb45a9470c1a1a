"""Unit tests of services.status.views: cache entry encoding shared with the writers."""

from __future__ import annotations

import dataclasses
import json

import pytest

from services.status.views import (
    MalformedEntry,
    ShipmentResult,
    ShipmentStatusView,
    TaskStatusView,
    parse_code,
    parse_results,
    shipment_fields,
    shipment_from_fields,
    task_fields,
    task_from_fields,
)


def as_entry(version: int, fields: dict[str, str | int]) -> dict[str, str]:
    """Return the hash Redis hands back for ``fields`` stored under ``version``."""
    return {"version": str(version), **{name: str(value) for name, value in fields.items()}}


def test_shipment_fields_round_trip() -> None:
    view = ShipmentStatusView("s1", "shipped", "in_transit", 10, 20, 'W/"4"', 4)
    assert shipment_from_fields("s1", as_entry(4, shipment_fields(view))) == view


def test_task_fields_round_trip() -> None:
    view = TaskStatusView(
        "t1", "FAILED", 100, (ShipmentResult("s1", False, "pending", 9, "no"),), 30, 7
    )
    assert task_from_fields("t1", as_entry(7, task_fields(view))) == view


@pytest.mark.parametrize(
    "fields",
    [
        {"version": "1", "status": "pending", "status_time_us": "1", "etag": "x"},
        {
            "version": "one",
            "status": "pending",
            "status_time_us": "1",
            "update_time_us": "1",
            "etag": "x",
        },
    ],
)
def test_shipment_entry_malformed(fields: dict[str, str]) -> None:
    with pytest.raises(MalformedEntry):
        shipment_from_fields("s1", fields)


def test_task_entry_unknown_state() -> None:
    fields = {"version": "1", "state": "SLEEPING", "update_time_us": "1"}
    with pytest.raises(MalformedEntry, match="SLEEPING"):
        task_from_fields("t1", fields)


def test_task_entry_defaults() -> None:
    view = task_from_fields("t1", {"version": "1", "state": "QUEUED", "update_time_us": "5"})
    assert view.progress_percent == 0
    assert view.results == ()


def test_results_from_worker_format() -> None:
    # The task workers store each result as the fields of a dataclass, error_code an int.
    text = json.dumps(
        [
            {
                "shipment_id": "s1",
                "ok": True,
                "status": "shipped",
                "error_code": 0,
                "error_message": "",
            },
            {
                "shipment_id": "s2",
                "ok": False,
                "status": "",
                "error_code": 5,
                "error_message": "shipment 's2' not found",
            },
        ]
    )
    results = parse_results(text)
    assert results[0] == ShipmentResult("s1", True, "shipped")
    assert dataclasses.astuple(results[1]) == ("s2", False, "", 5, "shipment 's2' not found")


@pytest.mark.parametrize("text", ["{", '{"a": 1}', '["s1"]', '[{"ok": true}]'])
def test_results_malformed(text: str) -> None:
    with pytest.raises(MalformedEntry):
        parse_results(text)


@pytest.mark.parametrize(
    ("value", "code"), [(None, 0), ("", 0), (9, 9), ("14", 14), ("NOT_FOUND", 5)]
)
def test_parse_code_accepted(value: object, code: int) -> None:
    assert parse_code(value) == code


@pytest.mark.parametrize("value", ["NO_SUCH_CODE", True, 1.5])
def test_parse_code_rejected(value: object) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_code(value)
