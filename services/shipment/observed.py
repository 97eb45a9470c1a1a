"""A ``ShipmentStore`` that reports every recorded and every rejected change to observers.

The audit log and the transition counters both watch the same two outcomes of a write:
a committed transition record (applied, or late and only stored) and a change the
service rejected. A retried request whose ``request_id`` was already applied returns the
stored result without a new record, so observers hear nothing about it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from services.common.errors import Aborted, FailedPrecondition
from services.shipment.domain import Change, ShipmentState
from services.shipment.store import ShipmentStore, ShipmentView, TransitionRecord


class TransitionObserver(Protocol):
    """Told about each committed transition record and each rejected change."""

    def recorded(self, shipment_id: str, version: int, record: TransitionRecord) -> None: ...

    def rejected(
        self, shipment_id: str, change: Change, error: FailedPrecondition | Aborted
    ) -> None: ...


class ObservedStore:
    """A ``ShipmentStore`` that reports each write's outcome to ``observers``, in order."""

    def __init__(self, inner: ShipmentStore, observers: Sequence[TransitionObserver]) -> None:
        self.inner = inner
        self.observers = tuple(observers)

    async def create(self, state: ShipmentState, request_id: str, fingerprint: str) -> ShipmentView:
        return self._reported(await self.inner.create(state, request_id, fingerprint))

    async def update(
        self, shipment_id: str, change: Change, request_id: str, fingerprint: str, etag: str
    ) -> ShipmentView:
        try:
            view = await self.inner.update(shipment_id, change, request_id, fingerprint, etag)
        except (FailedPrecondition, Aborted) as error:
            for observer in self.observers:
                observer.rejected(shipment_id, change, error)
            raise
        return self._reported(view)

    async def get(self, shipment_id: str) -> ShipmentView:
        return await self.inner.get(shipment_id)

    async def list(self, status: str, after_id: str, limit: int) -> list[ShipmentState]:
        return await self.inner.list(status, after_id, limit)

    def _reported(self, view: ShipmentView) -> ShipmentView:
        if view.recorded is not None:
            for observer in self.observers:
                observer.recorded(view.state.id, view.state.version, view.recorded)
        return view
