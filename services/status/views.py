"""Status views returned by the reader, and their Redis hash encoding.

The hash layout is shared with the writers: ShipmentService writes shipment entries and
the task workers write task entries, both through ``services.common.cache.StatusCache``.
Every entry carries ``version``, the row version it was built from.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from envios.task.v1 import task_pb2
from google.rpc import code_pb2

TASK_STATES = tuple(
    value.name for value in task_pb2.Task.State.DESCRIPTOR.values if value.number != 0
)
"""Names of the stored task states, in enum order."""

IN_FLIGHT_STATES = ("QUEUED", "RUNNING", "RETRYING")
"""Task states that count as in flight: not finished yet."""


class MalformedEntry(ValueError):
    """A cache entry or a stored row lacks a field or contains a value of the wrong type."""


@dataclass(frozen=True)
class ShipmentStatusView:
    """Current status of one shipment. Times are microseconds since the Unix epoch."""

    shipment_id: str
    status: str
    substatus: str
    status_time_us: int
    update_time_us: int
    etag: str
    version: int


@dataclass(frozen=True)
class ShipmentResult:
    """Outcome of a task for one shipment."""

    shipment_id: str
    ok: bool
    status: str
    error_code: int = 0
    """``google.rpc.Code`` value; 0 (OK) when the step did not fail."""
    error_message: str = ""


@dataclass(frozen=True)
class TaskStatusView:
    """Current state and progress of one task."""

    task_id: str
    state: str
    """Name of an ``envios.task.v1.Task.State`` value, one of ``TASK_STATES``."""
    progress_percent: int
    results: tuple[ShipmentResult, ...]
    update_time_us: int
    version: int


def shipment_fields(view: ShipmentStatusView) -> dict[str, str | int]:
    """Return the cache hash fields of a shipment, ``version`` excluded."""
    return {
        "status": view.status,
        "substatus": view.substatus,
        "status_time_us": view.status_time_us,
        "update_time_us": view.update_time_us,
        "etag": view.etag,
    }


def shipment_from_fields(shipment_id: str, fields: Mapping[str, str]) -> ShipmentStatusView:
    """Decode a shipment cache entry. Raises MalformedEntry."""
    try:
        return ShipmentStatusView(
            shipment_id=shipment_id,
            status=fields["status"],
            substatus=fields.get("substatus", ""),
            status_time_us=int(fields["status_time_us"]),
            update_time_us=int(fields["update_time_us"]),
            etag=fields["etag"],
            version=int(fields["version"]),
        )
    except (KeyError, ValueError) as error:
        raise MalformedEntry(f"shipment entry {shipment_id!r}: {error!r}") from error


def task_fields(view: TaskStatusView) -> dict[str, str | int]:
    """Return the cache hash fields of a task, ``version`` excluded."""
    return {
        "state": view.state,
        "progress_percent": view.progress_percent,
        "results": json.dumps([_result_object(result) for result in view.results]),
        "update_time_us": view.update_time_us,
    }


def task_from_fields(task_id: str, fields: Mapping[str, str]) -> TaskStatusView:
    """Decode a task cache entry. Raises MalformedEntry."""
    try:
        return TaskStatusView(
            task_id=task_id,
            state=check_state(fields["state"]),
            progress_percent=int(fields.get("progress_percent", "0")),
            results=parse_results(fields.get("results", "[]")),
            update_time_us=int(fields["update_time_us"]),
            version=int(fields["version"]),
        )
    except (KeyError, ValueError) as error:
        raise MalformedEntry(f"task entry {task_id!r}: {error!r}") from error


def check_state(name: str) -> str:
    """Return ``name`` if it names a stored task state. Raises MalformedEntry."""
    if name not in TASK_STATES:
        raise MalformedEntry(f"unknown task state {name!r}; expected one of {TASK_STATES}")
    return name


def parse_results(text: str) -> tuple[ShipmentResult, ...]:
    """Decode the JSON list of per-shipment results. Raises MalformedEntry."""
    try:
        items = json.loads(text)
    except ValueError as error:
        raise MalformedEntry(f"task results are not valid JSON: {error}") from error
    if not isinstance(items, list):
        raise MalformedEntry(f"task results must be a JSON list, got {type(items).__name__}")
    try:
        return tuple(_parse_result(item) for item in items)
    except (TypeError, KeyError, ValueError) as error:
        raise MalformedEntry(f"invalid task result: {error!r}") from error


def _parse_result(item: dict[str, Any]) -> ShipmentResult:
    return ShipmentResult(
        shipment_id=str(item["shipment_id"]),
        ok=bool(item.get("ok", False)),
        status=str(item.get("status") or ""),
        error_code=parse_code(item.get("error_code")),
        error_message=str(item.get("error_message") or ""),
    )


def parse_code(value: object) -> int:
    """Read a ``google.rpc.Code`` given as a number or a name (``"NOT_FOUND"``); None is OK.

    Raises:
        ValueError: an unknown code name, or a value of another type.
    """
    if value is None or value == "":
        return 0
    if isinstance(value, bool):
        raise ValueError(f"error_code must be a number or a code name, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return int(value) if value.isdigit() else code_pb2.Code.Value(value)
    raise ValueError(f"error_code must be a number or a code name, got {value!r}")


def _result_object(result: ShipmentResult) -> dict[str, object]:
    return {
        "shipment_id": result.shipment_id,
        "ok": result.ok,
        "status": result.status,
        "error_code": result.error_code,
        "error_message": result.error_message,
    }
