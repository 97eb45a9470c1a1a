"""Shipment transition counters: ``TransitionMetrics`` observing a store."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from services.common.errors import Aborted, FailedPrecondition
from services.shipment.domain import Change, ShipmentState
from services.shipment.metrics import TransitionMetrics
from services.shipment.observed import ObservedStore
from services.shipment.store import ShipmentView, TransitionRecord


def record(from_status: str, to_status: str, *, applied: bool = True) -> TransitionRecord:
    return TransitionRecord(
        event_id="e1",
        from_status=from_status,
        to_status=to_status,
        from_substatus="",
        to_substatus="",
        occurred_at_us=1,
        record_time_us=2,
        applied=applied,
        late=not applied,
        task_id="",
    )


class ScriptedStore:
    """A store whose writes return the next scripted record or raise the next error."""

    def __init__(self, outcomes: list[TransitionRecord | Exception | None]) -> None:
        self.outcomes = outcomes

    async def create(self, state: ShipmentState, request_id: str, fingerprint: str) -> ShipmentView:
        return self._next()

    async def update(
        self, shipment_id: str, change: Change, request_id: str, fingerprint: str, etag: str
    ) -> ShipmentView:
        return self._next()

    async def get(self, shipment_id: str) -> ShipmentView:
        raise NotImplementedError

    async def list(self, status: str, after_id: str, limit: int) -> list[ShipmentState]:
        raise NotImplementedError

    def _next(self) -> ShipmentView:
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        state: Any = SimpleNamespace(id="s1", version=1)
        return ShipmentView(state, [], outcome)


def metered(
    outcomes: list[TransitionRecord | Exception | None],
) -> tuple[ObservedStore, CollectorRegistry]:
    registry = CollectorRegistry()
    return ObservedStore(ScriptedStore(outcomes), [TransitionMetrics(registry)]), registry


def transitions(registry: CollectorRegistry, from_status: str, to_status: str) -> float | None:
    labels = {"from_status": from_status, "to_status": to_status}
    return registry.get_sample_value("envios_shipment_transitions_total", labels)


def rejected(registry: CollectorRegistry, reason: str) -> float | None:
    return registry.get_sample_value(
        "envios_shipment_transitions_rejected_total", {"reason": reason}
    )


async def test_transitions_counted_by_status() -> None:
    store, registry = metered([record("processing", "shipped"), record("processing", "shipped")])
    for _ in range(2):
        await store.update("s1", Change(status="shipped"), "r", "f", "")
    assert transitions(registry, "processing", "shipped") == 2


async def test_transitions_count_creation() -> None:
    store, registry = metered([record("", "created")])
    state: Any = None
    await store.create(state, "r", "f")
    assert transitions(registry, "none", "created") == 1


async def test_transitions_skip_replays() -> None:
    store, registry = metered([None])
    await store.update("s1", Change(status="shipped"), "r", "f", "")
    assert registry.get_sample_value("envios_shipment_transitions_total") is None


async def test_transitions_count_late() -> None:
    store, registry = metered([record("delivered", "shipped", applied=False)])
    await store.update("s1", Change(status="shipped"), "r", "f", "")
    assert rejected(registry, "late") == 1
    assert transitions(registry, "delivered", "shipped") is None


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (FailedPrecondition("no", reason="INVALID_TRANSITION"), "invalid"),
        (Aborted("stale", reason="ETAG_MISMATCH"), "stale_etag"),
        (FailedPrecondition("reused", reason="REQUEST_ID_REUSED"), "request_id_reused"),
    ],
)
async def test_transitions_count_rejections(
    error: FailedPrecondition | Aborted, reason: str
) -> None:
    store, registry = metered([error])
    with pytest.raises(type(error)):
        await store.update("s1", Change(status="shipped"), "r", "f", "")
    assert rejected(registry, reason) == 1
