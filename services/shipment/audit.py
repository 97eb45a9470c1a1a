"""Audit log of shipment transitions: one ECS event per applied, late or rejected change.

Events go to the ``envios.audit`` logger, so operators can route them apart from the
service's other logs. ``configure_logging`` adds ``service.name``, ``service.node.name``
(the replica) and, inside a span, ``trace.id`` and ``span.id`` to every record.
"""

from __future__ import annotations

import logging
from typing import Any

from services.common.errors import Aborted, FailedPrecondition
from services.common.logs import AUDIT_LOGGER
from services.shipment.domain import Change
from services.shipment.store import TransitionRecord

APPLIED = "shipment-transition"
"""``event.action`` of a committed change that was applied."""
LATE = "shipment-transition-late"
"""``event.action`` of a late event stored in the history without being applied."""
REJECTED = "shipment-transition-rejected"
"""``event.action`` of a change the service rejected."""

logger = logging.getLogger(AUDIT_LOGGER)


def log_recorded(shipment_id: str, version: int, record: TransitionRecord, site: str) -> None:
    """Log the event of one committed transition record: applied, or late and only stored."""
    action = APPLIED if record.applied else LATE
    fields: dict[str, Any] = {
        **_common(action, "success", site),
        "event.type": ["creation"] if not record.from_status else ["change"],
        "event.id": record.event_id,
        "envios.shipment.id": shipment_id,
        "envios.shipment.version": version,
        "envios.transition.from": record.from_status,
        "envios.transition.to": record.to_status,
        "envios.transition.substatus": record.to_substatus,
        "envios.transition.late": record.late,
    }
    if record.task_id:
        fields["envios.task.id"] = record.task_id
    logger.info(
        "shipment %s: %s %s -> %s",
        shipment_id,
        action,
        record.from_status or "(new)",
        record.to_status,
        extra=fields,
    )


def log_rejected(
    shipment_id: str, change: Change, error: FailedPrecondition | Aborted, site: str
) -> None:
    """Log a change the service rejected: a transition the state machine does not allow
    (reason ``INVALID_TRANSITION``) or a stale etag (reason ``ETAG_MISMATCH``)."""
    fields: dict[str, Any] = {
        **_common(REJECTED, "failure", site),
        "event.type": ["change"],
        "event.reason": error.reason,
        "envios.shipment.id": shipment_id,
        "envios.transition.from": error.metadata.get("current_status", ""),
        "envios.transition.to": change.status or "",
        "envios.transition.substatus": change.substatus or "",
    }
    if change.task_id:
        fields["envios.task.id"] = change.task_id
    logger.info("shipment %s: %s: %s", shipment_id, REJECTED, error.message, extra=fields)


def _common(action: str, outcome: str, site: str) -> dict[str, Any]:
    return {
        "event.kind": "event",
        "event.category": ["database"],
        "event.action": action,
        "event.outcome": outcome,
        "envios.site": site,
    }


class AuditLog:
    """A ``TransitionObserver`` that logs one audit event per reported outcome."""

    def __init__(self, site: str) -> None:
        self.site = site

    def recorded(self, shipment_id: str, version: int, record: TransitionRecord) -> None:
        log_recorded(shipment_id, version, record, self.site)

    def rejected(
        self, shipment_id: str, change: Change, error: FailedPrecondition | Aborted
    ) -> None:
        log_rejected(shipment_id, change, error, self.site)
