"""StatusService servicer: proto messages in and out, the readers do the work."""

from __future__ import annotations

import asyncio

from envios.status.v1 import status_pb2, status_pb2_grpc
from envios.task.v1 import task_pb2
from google.rpc import status_pb2 as rpc_status_pb2

from services.common.errors import Context, InvalidArgument, NotFound
from services.common.timeutil import from_us
from services.shipment.domain import check_id
from services.status.overview import OverviewReader, OverviewView
from services.status.reader import Read, Source, StatusReader
from services.status.views import ShipmentResult, ShipmentStatusView, TaskStatusView

MAX_BATCH_IDS = 100
"""Most ids, shipments and tasks together, that one BatchGetStatus call may ask for."""

SOURCE_HEADER = "x-envios-source"
"""Response initial metadata key naming where the status was read from."""

SOURCES = {
    Source.CACHE: status_pb2.SOURCE_CACHE,
    Source.DATABASE: status_pb2.SOURCE_DATABASE,
    Source.FALLBACK: status_pb2.SOURCE_FALLBACK,
}

_SOURCE_RANK = (Source.CACHE, Source.DATABASE, Source.FALLBACK)


class StatusServicer(status_pb2_grpc.StatusServiceServicer):
    def __init__(self, reader: StatusReader, overview: OverviewReader) -> None:
        self.reader = reader
        self.overview = overview

    async def GetShipmentStatus(
        self, request: status_pb2.GetShipmentStatusRequest, context: Context
    ) -> status_pb2.ShipmentStatus:
        _raise_if(check_id("shipment_id", request.shipment_id))
        read = await self.reader.shipment(request.shipment_id)
        if read.value is None:
            raise _shipment_not_found(request.shipment_id)
        await send_source(context, read.source)
        return shipment_to_proto(read.value, read.source)

    async def GetTaskStatus(
        self, request: status_pb2.GetTaskStatusRequest, context: Context
    ) -> status_pb2.TaskStatus:
        _raise_if(check_id("task_id", request.task_id))
        read = await self.reader.task(request.task_id)
        if read.value is None:
            raise _task_not_found(request.task_id)
        await send_source(context, read.source)
        return task_to_proto(read.value, read.source)

    async def BatchGetStatus(
        self, request: status_pb2.BatchGetStatusRequest, context: Context
    ) -> status_pb2.BatchGetStatusResponse:
        check_batch(request)
        shipments, tasks = await asyncio.gather(
            asyncio.gather(*(self.reader.shipment(id_) for id_ in request.shipment_ids)),
            asyncio.gather(*(self.reader.task(id_) for id_ in request.task_ids)),
        )
        response = batch_to_proto(request, shipments, tasks)
        sources = [read.source for read in shipments] + [read.source for read in tasks]
        if sources:
            await send_source(context, max(sources, key=_SOURCE_RANK.index))
        return response

    async def GetOverview(
        self, request: status_pb2.GetOverviewRequest, context: Context
    ) -> status_pb2.Overview:
        view = await self.overview.overview()
        await send_source(context, Source.DATABASE)
        return overview_to_proto(view)


async def send_source(context: Context, source: Source) -> None:
    """Send the ``x-envios-source`` header; only on success, so errors stay Trailers-Only."""
    await context.send_initial_metadata(((SOURCE_HEADER, source.value),))


def _raise_if(violations: list[tuple[str, str]]) -> None:
    if violations:
        raise InvalidArgument(violations)


def check_batch(request: status_pb2.BatchGetStatusRequest) -> None:
    """Raise InvalidArgument when the batch is too large or contains an invalid id."""
    total = len(request.shipment_ids) + len(request.task_ids)
    if total > MAX_BATCH_IDS:
        raise InvalidArgument(
            [
                (
                    "shipment_ids",
                    f"at most {MAX_BATCH_IDS} ids in total across shipment_ids and task_ids,"
                    f" got {total}; split the request",
                )
            ]
        )
    violations: list[tuple[str, str]] = []
    for index, shipment_id in enumerate(request.shipment_ids):
        violations += check_id(f"shipment_ids[{index}]", shipment_id)
    for index, task_id in enumerate(request.task_ids):
        violations += check_id(f"task_ids[{index}]", task_id)
    _raise_if(violations)


def _shipment_not_found(shipment_id: str) -> NotFound:
    return NotFound(
        f"shipment {shipment_id!r} not found",
        reason="SHIPMENT_NOT_FOUND",
        metadata={"id": shipment_id},
    )


def _task_not_found(task_id: str) -> NotFound:
    return NotFound(
        f"task {task_id!r} not found", reason="TASK_NOT_FOUND", metadata={"id": task_id}
    )


def shipment_to_proto(view: ShipmentStatusView, source: Source) -> status_pb2.ShipmentStatus:
    return status_pb2.ShipmentStatus(
        shipment_id=view.shipment_id,
        status=view.status,
        substatus=view.substatus,
        status_time=from_us(view.status_time_us),
        update_time=from_us(view.update_time_us),
        etag=view.etag,
        source=SOURCES[source],
    )


def task_to_proto(view: TaskStatusView, source: Source) -> status_pb2.TaskStatus:
    return status_pb2.TaskStatus(
        task_id=view.task_id,
        state=view.state,
        progress_percent=view.progress_percent,
        results=[result_to_proto(result) for result in view.results],
        update_time=from_us(view.update_time_us),
        source=SOURCES[source],
    )


def result_to_proto(result: ShipmentResult) -> task_pb2.ShipmentResult:
    message = task_pb2.ShipmentResult(
        shipment_id=result.shipment_id, ok=result.ok, status=result.status
    )
    if result.error_code or result.error_message:
        message.error.CopyFrom(
            rpc_status_pb2.Status(code=result.error_code, message=result.error_message)
        )
    return message


def batch_to_proto(
    request: status_pb2.BatchGetStatusRequest,
    shipments: list[Read[ShipmentStatusView]],
    tasks: list[Read[TaskStatusView]],
) -> status_pb2.BatchGetStatusResponse:
    """Build the batch response; found and missing ids both keep request order."""
    response = status_pb2.BatchGetStatusResponse()
    for shipment_id, shipment in zip(request.shipment_ids, shipments, strict=True):
        if shipment.value is None:
            response.missing_shipment_ids.append(shipment_id)
        else:
            response.shipments.append(shipment_to_proto(shipment.value, shipment.source))
    for task_id, task in zip(request.task_ids, tasks, strict=True):
        if task.value is None:
            response.missing_task_ids.append(task_id)
        else:
            response.tasks.append(task_to_proto(task.value, task.source))
    return response


def overview_to_proto(view: OverviewView) -> status_pb2.Overview:
    return status_pb2.Overview(
        shipments_by_status=view.shipments_by_status,
        tasks_by_state=view.tasks_by_state,
        tasks_in_flight=view.tasks_in_flight,
        queue_depth=view.queue_depth,
        serving_site=view.serving_site,
        compute_time=from_us(view.compute_time_us),
    )
