"""Prometheus counters of shipment transitions, in the default ``prometheus_client`` registry.

``TransitionMetrics`` is a ``TransitionObserver`` (see ``services.shipment.observed``): it
counts each recorded change, applied ones by from and to status, late and rejected ones
by reason.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter

from services.common.errors import Aborted, FailedPrecondition
from services.shipment.domain import Change
from services.shipment.store import TransitionRecord

NEW_SHIPMENT = "none"
"""``from_status`` of the transition that creates a shipment."""

REJECTION_REASONS = {"INVALID_TRANSITION": "invalid", "ETAG_MISMATCH": "stale_etag"}
"""``reason`` label of a rejected change, by the error's ``ErrorInfo.reason``; other
reasons are lower-cased."""

LATE = "late"
"""``reason`` label of an event older than the current status: recorded, never applied."""


class TransitionMetrics:
    """Applied and rejected shipment transitions."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.applied_counter = Counter(
            "envios_shipment_transitions",
            "Shipment changes applied, by status before and after (equal when only the"
            " substatus or tracking number changed; from_status none for a new shipment)",
            ["from_status", "to_status"],
            registry=registry,
        )
        self.rejected_counter = Counter(
            "envios_shipment_transitions_rejected",
            "Shipment changes not applied, by reason: invalid (the state machine forbids"
            " it), stale_etag (the etag did not match), late (older than the current status)",
            ["reason"],
            registry=registry,
        )

    def recorded(self, shipment_id: str, version: int, record: TransitionRecord) -> None:
        """Count one stored transition record: applied, or late and only recorded."""
        if record.applied:
            self.applied_counter.labels(record.from_status or NEW_SHIPMENT, record.to_status).inc()
        else:
            self.rejected_counter.labels(LATE).inc()

    def rejected(
        self, shipment_id: str, change: Change, error: FailedPrecondition | Aborted
    ) -> None:
        """Count one rejected change by its reason."""
        self.rejected_counter.labels(
            REJECTION_REASONS.get(error.reason, error.reason.lower())
        ).inc()


_default_metrics: TransitionMetrics | None = None


def default_transition_metrics() -> TransitionMetrics:
    """Return the ``TransitionMetrics`` of the default registry, created on first use."""
    global _default_metrics
    if _default_metrics is None:
        _default_metrics = TransitionMetrics(REGISTRY)
    return _default_metrics
