"""Task handlers: what each task type does, one shipment step at a time.

Handlers receive a ShipmentService stub that goes through Envoy, so their calls get the
same balancing, retries and failover as any other caller.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import grpc
from envios.shipment.v1 import shipment_pb2
from google.protobuf import field_mask_pb2

from services.task.model import StepResult, TaskRecord

RETRIABLE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
"""Codes after which the same call may succeed later."""

CALL_TIMEOUT_S = 10.0
"""Deadline of each ShipmentService call a handler makes."""


class RetryLater(Exception):
    """A step failed with an error that may go away; the whole task is retried later."""


class Handler(Protocol):
    """One task type."""

    name: str
    simulated: bool
    """True when the handler models its outside work instead of calling a real system."""

    def run(
        self, task: TaskRecord, shipments: Any, should_stop: Callable[[], bool]
    ) -> AsyncIterator[StepResult]:
        """Yield one result per shipment; stop early when ``should_stop()`` is true."""
        ...


def step_request_id(task_id: str, shipment_id: str) -> str:
    """Return the idempotency key of one step, the same on every attempt of the task."""
    return "task-" + hashlib.sha256(f"{task_id}/{shipment_id}".encode()).hexdigest()[:40]


class TransitionHandler:
    """``transition``: a simulated outside call, then the status change.

    The outside call (a carrier or label printer in production) is modelled by waiting
    ``work_s`` seconds; no external system is contacted.
    """

    name = "transition"
    simulated = True

    async def run(
        self, task: TaskRecord, shipments: Any, should_stop: Callable[[], bool]
    ) -> AsyncIterator[StepResult]:
        for shipment_id in task.input.shipment_ids:
            if should_stop():
                return
            await asyncio.sleep(task.input.work_s)
            yield await self._apply(task, shipments, shipment_id)

    async def _apply(self, task: TaskRecord, shipments: Any, shipment_id: str) -> StepResult:
        paths = ["status"] + (["substatus"] if task.input.target_substatus else [])
        request = shipment_pb2.UpdateShipmentRequest(
            shipment=shipment_pb2.Shipment(
                id=shipment_id,
                status=task.input.target_status,
                substatus=task.input.target_substatus,
            ),
            update_mask=field_mask_pb2.FieldMask(paths=paths),
            request_id=step_request_id(task.id, shipment_id),
            task_id=task.id,
        )
        try:
            shipment = await shipments.UpdateShipment(request, timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            if error.code() in RETRIABLE_CODES:
                raise RetryLater(
                    f"{shipment_id}: {error.code().name}: {error.details()}"
                ) from error
            return StepResult(
                shipment_id,
                ok=False,
                error_code=error.code().value[0],
                error_message=error.details() or "",
            )
        return StepResult(shipment_id, ok=True, status=shipment.status)


HANDLERS: dict[str, Handler] = {handler.name: handler for handler in (TransitionHandler(),)}
"""Registered task types by name."""
