"""Audit log of task state changes: one ECS event per committed change of a task's state.

Events go to the ``envios.audit`` logger, like the shipment transition events.
"""

from __future__ import annotations

import logging
from typing import Any

from services.common.logs import AUDIT_LOGGER
from services.task.model import TaskRecord

TASK_TRANSITION = "task-transition"
"""``event.action`` of a task state change."""

logger = logging.getLogger(AUDIT_LOGGER)


def log_task_transition(task: TaskRecord, from_state: str, site: str) -> None:
    """Log that ``task`` moved from ``from_state`` (empty when just submitted) to its state.

    ``event.id`` is the task id and the row version, which is unique per change.
    """
    fields: dict[str, Any] = {
        "event.kind": "event",
        "event.category": ["database"],
        "event.type": ["creation"] if not from_state else ["change"],
        "event.action": TASK_TRANSITION,
        "event.outcome": "success",
        "event.id": f"{task.id}-{task.version}",
        "envios.site": site,
        "envios.task.id": task.id,
        "envios.task.type": task.type,
        "envios.task.attempts": task.attempts,
        "envios.transition.from": from_state,
        "envios.transition.to": task.state,
    }
    if task.worker:
        fields["envios.task.worker"] = task.worker
    if task.error_message:
        fields["event.reason"] = task.error_message
    logger.info(
        "task %s: %s %s -> %s",
        task.id,
        TASK_TRANSITION,
        from_state or "(new)",
        task.state,
        extra=fields,
    )
