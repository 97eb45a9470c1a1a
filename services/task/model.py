"""Task records and their validation; pure code, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.common.errors import InvalidArgument
from services.shipment.domain import check_id, check_status, check_text

STATES = ("QUEUED", "RUNNING", "RETRYING", "SUCCEEDED", "FAILED", "CANCELLED")
"""Task states, named as in ``envios.task.v1.Task.State``."""
TERMINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})
IN_FLIGHT_STATES = ("QUEUED", "RUNNING", "RETRYING")

MAX_SHIPMENTS = {"transition": 100, "bulk_transition": 500, "simulate": 0}
"""Maximum number of shipments one task of each type may change."""
MAX_WORK_S = 60.0
"""Longest simulated outside call per shipment, in seconds."""
MAX_TASK_WORK_S = 240.0
"""Longest simulated work of a whole task (shipments times ``work_s``), in seconds.

Workers time out an attempt after ``ENVIOS_TASK_TIMEOUT_S`` (280 s by default), so a valid
task leaves time for its ShipmentService calls."""
DEFAULT_WORK_S = 1.0


@dataclass(frozen=True)
class TaskInput:
    """Input of a task."""

    shipment_ids: tuple[str, ...]
    target_status: str
    target_substatus: str = ""
    work_s: float = DEFAULT_WORK_S
    """Length of the simulated outside call per shipment, in seconds."""

    def to_json(self) -> dict[str, Any]:
        return {
            "shipment_ids": list(self.shipment_ids),
            "target_status": self.target_status,
            "target_substatus": self.target_substatus,
            "work_s": self.work_s,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TaskInput:
        return cls(
            shipment_ids=tuple(data["shipment_ids"]),
            target_status=data["target_status"],
            target_substatus=data.get("target_substatus", ""),
            work_s=data.get("work_s", DEFAULT_WORK_S),
        )


@dataclass(frozen=True)
class StepResult:
    """Outcome of a task for one shipment."""

    shipment_id: str
    ok: bool
    status: str = ""
    error_code: int = 0
    error_message: str = ""


@dataclass(frozen=True)
class TaskRecord:
    """Stored state of a task. Times are microseconds since the Unix epoch."""

    id: str
    type: str
    input: TaskInput
    state: str
    attempts: int = 0
    progress_percent: int = 0
    results: list[StepResult] = field(default_factory=list)
    error_code: int = 0
    error_message: str = ""
    cancel_requested: bool = False
    create_time_us: int = 0
    start_time_us: int | None = None
    end_time_us: int | None = None
    update_time_us: int = 0
    version: int = 1
    worker: str = ""
    """Replica that started the latest attempt."""


def validate_input(task_type: str, task_input: TaskInput, known_types: tuple[str, ...]) -> None:
    """Raise InvalidArgument listing every problem of a submitted task.

    ``work_s`` of a ``simulate`` task is the drawn duration, checked by ``durations``.
    """
    if task_type not in known_types:
        expected = ", ".join(known_types)
        raise InvalidArgument(
            [("task.type", f"unknown task type {task_type!r}; expected one of {expected}")]
        )
    if task_type == "simulate":
        violations = _check_simulate(task_input)
    else:
        violations = _check_shipments(task_type, task_input) + _check_target(task_input)
        violations += _check_work(task_input)
    if violations:
        raise InvalidArgument(violations)


def _check_simulate(task_input: TaskInput) -> list[tuple[str, str]]:
    if task_input.shipment_ids:
        return [("task.shipment_ids", "must be empty for simulate tasks, which change nothing")]
    return []


def _check_shipments(task_type: str, task_input: TaskInput) -> list[tuple[str, str]]:
    ids = task_input.shipment_ids
    limit = MAX_SHIPMENTS.get(task_type, MAX_SHIPMENTS["transition"])
    violations: list[tuple[str, str]] = []
    if not 1 <= len(ids) <= limit:
        violations.append(
            (
                "task.shipment_ids",
                f"must list 1 to {limit} shipments for {task_type}, got {len(ids)}",
            )
        )
    if len(set(ids)) != len(ids):
        violations.append(("task.shipment_ids", "must not repeat a shipment id"))
    for index, shipment_id in enumerate(ids):
        violations += check_id(f"task.shipment_ids[{index}]", shipment_id)
    return violations


def _check_target(task_input: TaskInput) -> list[tuple[str, str]]:
    violations: list[tuple[str, str]] = []
    if not task_input.target_status:
        violations.append(("task.target_status", "is required"))
    violations += check_status("task.target_status", task_input.target_status or None)
    violations += check_text("task.target_substatus", task_input.target_substatus)
    return violations


def _check_work(task_input: TaskInput) -> list[tuple[str, str]]:
    work_s = task_input.work_s
    if not 0 <= work_s <= MAX_WORK_S:
        return [("task.work_duration", f"must be from 0 to {MAX_WORK_S:g} s, got {work_s:g} s")]
    total_s = work_s * len(task_input.shipment_ids)
    if total_s > MAX_TASK_WORK_S:
        return [
            (
                "task.work_duration",
                f"total work of {len(task_input.shipment_ids)} shipments x {work_s:g} s is"
                f" {total_s:g} s, more than the maximum of {MAX_TASK_WORK_S:g} s",
            )
        ]
    return []
