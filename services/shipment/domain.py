"""Shipment state machine and input rules; pure functions, no I/O.

Statuses follow the public model of marketplace shipment APIs (lowercase names). The
machine only moves forward:

    pending -> handling -> ready_to_ship -> shipped -> delivered | not_delivered
    pending | handling | ready_to_ship -> cancelled

Substatus is an open set of strings and may change freely within a status.

Events can arrive late. An event that names an earlier status (or the current one) and
is older than the time the shipment entered its current status is recorded in the
history without being applied. A forward transition is applied even when its timestamp
is older, because source systems' clocks disagree and the state machine order is the
order in which things really happened. The history marks such an event ``late``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from services.common.errors import FailedPrecondition, InvalidArgument

STATUSES = (
    "pending",
    "handling",
    "ready_to_ship",
    "shipped",
    "delivered",
    "not_delivered",
    "cancelled",
)
"""Every status, in lifecycle order."""

NEXT_STATUSES: dict[str, tuple[str, ...]] = {
    "pending": ("handling", "cancelled"),
    "handling": ("ready_to_ship", "cancelled"),
    "ready_to_ship": ("shipped", "cancelled"),
    "shipped": ("delivered", "not_delivered"),
    "delivered": (),
    "not_delivered": (),
    "cancelled": (),
}
"""Allowed status changes; a status with no successors is terminal."""

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""Shipment ids and request ids: 1 to 64 letters, digits, ``.``, ``_`` or ``-``."""

MAX_TEXT = 64
"""Maximum length of a substatus or tracking number, in characters."""


def earlier_statuses(status: str) -> set[str]:
    """Return the statuses from which ``status`` can be reached, ``status`` excluded."""
    found: set[str] = set()
    for candidate in STATUSES:
        if candidate != status and _reachable(candidate, status):
            found.add(candidate)
    return found


def _reachable(start: str, goal: str) -> bool:
    pending = list(NEXT_STATUSES[start])
    while pending:
        current = pending.pop()
        if current == goal:
            return True
        pending.extend(NEXT_STATUSES[current])
    return False


@dataclass(frozen=True)
class ShipmentState:
    """Stored state of one shipment. Times are microseconds since the Unix epoch (UTC)."""

    id: str
    status: str
    substatus: str
    tracking_number: str
    status_time_us: int
    status_times_us: dict[str, int]
    create_time_us: int
    update_time_us: int
    version: int

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'


@dataclass(frozen=True)
class Change:
    """A requested update. ``None`` means the field is not part of the update."""

    status: str | None = None
    substatus: str | None = None
    tracking_number: str | None = None
    occurred_at_us: int = 0
    task_id: str = ""


@dataclass(frozen=True)
class Outcome:
    """Effect of an update: the new state (``None`` when nothing changes) and the event."""

    state: ShipmentState | None
    from_status: str
    to_status: str
    from_substatus: str
    to_substatus: str
    applied: bool
    late: bool
    notes: list[str] = field(default_factory=list)


def check_id(name: str, value: str) -> list[tuple[str, str]]:
    """Return a violation when ``value`` is not a valid id, else nothing."""
    if not value:
        return [(name, "is required")]
    if not ID_PATTERN.fullmatch(value):
        return [
            (
                name,
                "must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit",
            )
        ]
    return []


def check_text(name: str, value: str | None) -> list[tuple[str, str]]:
    if value is not None and len(value) > MAX_TEXT:
        return [(name, f"must be at most {MAX_TEXT} characters, got {len(value)}")]
    return []


def check_status(name: str, value: str | None) -> list[tuple[str, str]]:
    if value is not None and value not in STATUSES:
        return [(name, f"unknown status {value!r}; expected one of {', '.join(STATUSES)}")]
    return []


def validate_change(change: Change) -> None:
    """Raise InvalidArgument listing every invalid field of ``change``."""
    violations = check_status("shipment.status", change.status)
    violations += check_text("shipment.substatus", change.substatus)
    violations += check_text("shipment.tracking_number", change.tracking_number)
    if change.status is None and change.substatus is None and change.tracking_number is None:
        violations.append(
            (
                "update_mask",
                "names no field to change; expected status, substatus or tracking_number",
            )
        )
    if violations:
        raise InvalidArgument(violations)


def plan_change(current: ShipmentState, change: Change, now_us: int) -> Outcome:
    """Decide what ``change`` does to ``current``.

    Raises:
        FailedPrecondition: the status change is not allowed from the current status
            (reason INVALID_TRANSITION; metadata names the current and allowed statuses).
    """
    target = change.status if change.status is not None else current.status
    substatus = change.substatus if change.substatus is not None else current.substatus
    if target != current.status:
        substatus = change.substatus or ""
    occurred = change.occurred_at_us or now_us
    late = occurred < current.status_time_us
    if target != current.status and target not in NEXT_STATUSES[current.status]:
        if late and target in earlier_statuses(current.status) | {current.status}:
            return _record_only(current, target, substatus)
        raise _invalid_transition(current.status, target)
    if target == current.status and late and change.status is not None:
        return _record_only(current, target, substatus)
    return _apply(current, change, target, substatus, occurred, now_us, late)


def _apply(
    current: ShipmentState,
    change: Change,
    target: str,
    substatus: str,
    occurred: int,
    now_us: int,
    late: bool,
) -> Outcome:
    status_times = dict(current.status_times_us)
    status_time = current.status_time_us
    if target != current.status:
        status_times[target] = occurred
        status_time = occurred
    new_state = replace(
        current,
        status=target,
        substatus=substatus,
        tracking_number=(
            change.tracking_number
            if change.tracking_number is not None
            else current.tracking_number
        ),
        status_time_us=status_time,
        status_times_us=status_times,
        update_time_us=now_us,
        version=current.version + 1,
    )
    return Outcome(new_state, current.status, target, current.substatus, substatus, True, late)


def _record_only(current: ShipmentState, target: str, substatus: str) -> Outcome:
    return Outcome(None, current.status, target, current.substatus, substatus, False, True)


def _invalid_transition(current: str, target: str) -> FailedPrecondition:
    allowed = NEXT_STATUSES[current]
    shown = ", ".join(allowed) if allowed else "none: the status is terminal"
    return FailedPrecondition(
        f"cannot change status from {current!r} to {target!r}; allowed next statuses: {shown}",
        reason="INVALID_TRANSITION",
        metadata={
            "current_status": current,
            "requested_status": target,
            "allowed_next_statuses": ",".join(allowed),
        },
    )
