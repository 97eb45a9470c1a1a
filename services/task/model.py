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

MAX_SHIPMENTS = 100
"""Most shipments one task may change."""
MAX_WORK_S = 60.0
"""Longest simulated outside call per shipment, in seconds."""
DEFAULT_WORK_S = 1.0


@dataclass(frozen=True)
class TaskInput:
    """What a task is asked to do."""

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


def validate_input(task_type: str, task_input: TaskInput, known_types: tuple[str, ...]) -> None:
    """Raise InvalidArgument listing every problem of a submitted task."""
    violations: list[tuple[str, str]] = []
    if task_type not in known_types:
        violations.append(
            (
                "task.type",
                f"unknown task type {task_type!r}; expected one of {', '.join(known_types)}",
            )
        )
    ids = task_input.shipment_ids
    if not 1 <= len(ids) <= MAX_SHIPMENTS:
        violations.append(
            ("task.shipment_ids", f"must list 1 to {MAX_SHIPMENTS} shipments, got {len(ids)}")
        )
    if len(set(ids)) != len(ids):
        violations.append(("task.shipment_ids", "must not repeat a shipment id"))
    for index, shipment_id in enumerate(ids):
        violations += check_id(f"task.shipment_ids[{index}]", shipment_id)
    if not task_input.target_status:
        violations.append(("task.target_status", "is required"))
    violations += check_status("task.target_status", task_input.target_status or None)
    violations += check_text("task.target_substatus", task_input.target_substatus)
    if not 0 <= task_input.work_s <= MAX_WORK_S:
        violations.append(
            (
                "task.work_duration",
                f"must be from 0 to {MAX_WORK_S:g} s, got {task_input.work_s:g} s",
            )
        )
    if violations:
        raise InvalidArgument(violations)
