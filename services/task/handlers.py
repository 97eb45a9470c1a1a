"""Task handlers: what each task type does, one step at a time.

Every handler here simulates its outside work (the call to a carrier or a label printer in
production) by waiting; none contacts an external system. ``transition`` and
``bulk_transition`` then make a real status change through ShipmentService; ``simulate``
changes nothing. Handlers receive a ShipmentService stub that goes through Envoy, so their
calls get the same balancing, retries and failover as any other caller.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
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

BULK_CONCURRENCY = 8
"""Shipments a ``bulk_transition`` task processes at once."""

SIMULATE_STEP_S = 1.0
"""Maximum wait between two progress reports of a ``simulate`` task, in seconds."""


class RetryLater(Exception):
    """A step failed with an error that may go away; the whole task is retried later."""


@dataclass(frozen=True)
class Progress:
    """Progress of a handler that has no per-shipment results."""

    percent: int


Step = StepResult | Progress
"""Item a handler yields: a shipment's result, or progress without a result."""


@dataclass(frozen=True)
class HandlerContext:
    """Clients and callbacks a handler uses while it runs."""

    shipments: Any
    """ShipmentService stub."""
    should_stop: Callable[[], bool]
    """True once a cancel was requested; handlers stop at their next step boundary."""
    time_scale: float = 1.0
    """Factor applied to every simulated wait (tests and benchmarks shorten waits with it)."""


class Handler(Protocol):
    """One task type."""

    name: str
    simulated: bool
    """True when the handler models its outside work instead of calling a real system."""

    def run(self, task: TaskRecord, context: HandlerContext) -> AsyncIterator[Step]:
        """Yield steps until done, or stop early when ``context.should_stop()`` is true.

        Raises:
            RetryLater: a dependency failed in a way that may go away.
        """
        ...


def step_request_id(task_id: str, shipment_id: str) -> str:
    """Return the idempotency key of one step, the same on every attempt of the task."""
    return "task-" + hashlib.sha256(f"{task_id}/{shipment_id}".encode()).hexdigest()[:40]


async def apply_transition(task: TaskRecord, shipments: Any, shipment_id: str) -> StepResult:
    """Move one shipment to the task's target status through ShipmentService.

    The request id is derived from the task and the shipment, so a repeated step returns
    the first answer instead of applying the change twice.

    Raises:
        RetryLater: the call failed with a code in ``RETRIABLE_CODES``.
    """
    paths = ["status"] + (["substatus"] if task.input.target_substatus else [])
    request = shipment_pb2.UpdateShipmentRequest(
        shipment=shipment_pb2.Shipment(
            id=shipment_id, status=task.input.target_status, substatus=task.input.target_substatus
        ),
        update_mask=field_mask_pb2.FieldMask(paths=paths),
        request_id=step_request_id(task.id, shipment_id),
        task_id=task.id,
    )
    try:
        # The idempotency key lets Envoy retry the step on another host or site.
        metadata = (("idempotency-key", request.request_id),)
        shipment = await shipments.UpdateShipment(
            request, timeout=CALL_TIMEOUT_S, metadata=metadata
        )
    except grpc.aio.AioRpcError as error:
        if error.code() in RETRIABLE_CODES:
            raise RetryLater(f"{shipment_id}: {error.code().name}: {error.details()}") from error
        return StepResult(
            shipment_id,
            ok=False,
            error_code=error.code().value[0],
            error_message=error.details() or "",
        )
    return StepResult(shipment_id, ok=True, status=shipment.status)


class TransitionHandler:
    """``transition``: for each shipment in turn, a simulated outside call, then the change.

    The outside call is modelled by waiting ``work_s`` seconds; no external system is
    contacted.
    """

    name = "transition"
    simulated = True

    async def run(self, task: TaskRecord, context: HandlerContext) -> AsyncIterator[Step]:
        for shipment_id in task.input.shipment_ids:
            if context.should_stop():
                return
            await asyncio.sleep(task.input.work_s * context.time_scale)
            yield await apply_transition(task, context.shipments, shipment_id)


class BulkTransitionHandler:
    """``bulk_transition``: ``transition`` for many shipments, ``BULK_CONCURRENCY`` at once.

    Results come in completion order; the executor keeps them in input order. A cancel
    stops new shipments from starting and lets the ones in progress finish.
    """

    name = "bulk_transition"
    simulated = True

    async def run(self, task: TaskRecord, context: HandlerContext) -> AsyncIterator[Step]:
        slots = asyncio.Semaphore(BULK_CONCURRENCY)

        async def one(shipment_id: str) -> StepResult | None:
            async with slots:
                if context.should_stop():
                    return None
                await asyncio.sleep(task.input.work_s * context.time_scale)
                return await apply_transition(task, context.shipments, shipment_id)

        pending = [asyncio.ensure_future(one(item)) for item in task.input.shipment_ids]
        try:
            for next_done in asyncio.as_completed(pending):
                result = await next_done
                if result is not None:
                    yield result
        finally:
            for future in pending:
                future.cancel()


class SimulateHandler:
    """``simulate``: waits ``work_s`` seconds (drawn at submit time) and changes nothing.

    Meant for load tests: it models a task whose outside call takes that long, reporting
    progress at least every ``SIMULATE_STEP_S`` seconds.
    """

    name = "simulate"
    simulated = True

    async def run(self, task: TaskRecord, context: HandlerContext) -> AsyncIterator[Step]:
        total_s = task.input.work_s * context.time_scale
        steps = max(1, math.ceil(total_s / SIMULATE_STEP_S))
        for index in range(1, steps + 1):
            if context.should_stop():
                return
            await asyncio.sleep(total_s / steps)
            yield Progress(100 * index // steps)


HANDLERS: dict[str, Handler] = {
    handler.name: handler
    for handler in (TransitionHandler(), BulkTransitionHandler(), SimulateHandler())
}
"""Registered task types by name."""
