"""Prometheus counters of shipment transitions, in the default ``prometheus_client`` registry.

``MeteredStore`` wraps a ``ShipmentStore`` and counts each recorded change: applied ones
by from and to status, late and rejected ones by reason. A retried request whose
``request_id`` was already applied records nothing, so it counts nothing.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter

from services.common.errors import Aborted, FailedPrecondition
from services.shipment.domain import Change, ShipmentState
from services.shipment.store import ShipmentStore, ShipmentView, TransitionRecord

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
        self.applied = Counter(
            "envios_shipment_transitions",
            "Shipment changes applied, by status before and after (equal when only the"
            " substatus or tracking number changed; from_status none for a new shipment)",
            ["from_status", "to_status"],
            registry=registry,
        )
        self.rejected = Counter(
            "envios_shipment_transitions_rejected",
            "Shipment changes not applied, by reason: invalid (the state machine forbids"
            " it), stale_etag (the etag did not match), late (older than the current status)",
            ["reason"],
            registry=registry,
        )

    def count_recorded(self, record: TransitionRecord) -> None:
        """Count one stored transition record: applied, or late and only recorded."""
        if record.applied:
            self.applied.labels(record.from_status or NEW_SHIPMENT, record.to_status).inc()
        else:
            self.rejected.labels(LATE).inc()

    def count_rejected(self, error: FailedPrecondition | Aborted) -> None:
        self.rejected.labels(REJECTION_REASONS.get(error.reason, error.reason.lower())).inc()


_default_metrics: TransitionMetrics | None = None


def default_transition_metrics() -> TransitionMetrics:
    """Return the ``TransitionMetrics`` of the default registry, created on first use."""
    global _default_metrics
    if _default_metrics is None:
        _default_metrics = TransitionMetrics(REGISTRY)
    return _default_metrics


class MeteredStore:
    """A ``ShipmentStore`` that counts every recorded and every rejected change."""

    def __init__(self, inner: ShipmentStore, metrics: TransitionMetrics | None = None) -> None:
        self.inner = inner
        self.metrics = metrics if metrics is not None else default_transition_metrics()

    async def create(self, state: ShipmentState, request_id: str, fingerprint: str) -> ShipmentView:
        return self._counted(await self.inner.create(state, request_id, fingerprint))

    async def update(
        self, shipment_id: str, change: Change, request_id: str, fingerprint: str, etag: str
    ) -> ShipmentView:
        try:
            view = await self.inner.update(shipment_id, change, request_id, fingerprint, etag)
        except (FailedPrecondition, Aborted) as error:
            self.metrics.count_rejected(error)
            raise
        return self._counted(view)

    async def get(self, shipment_id: str) -> ShipmentView:
        return await self.inner.get(shipment_id)

    async def list(self, status: str, after_id: str, limit: int) -> list[ShipmentState]:
        return await self.inner.list(status, after_id, limit)

    def _counted(self, view: ShipmentView) -> ShipmentView:
        if view.recorded is not None:
            self.metrics.count_recorded(view.recorded)
        return view
