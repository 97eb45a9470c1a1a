"""TaskService servicer: proto messages in and out; the store and the queue do the work."""

from __future__ import annotations

from collections.abc import Callable

from envios.task.v1 import task_pb2, task_pb2_grpc
from google.rpc import status_pb2

from services.common.errors import Context, InvalidArgument
from services.common.timeutil import from_us
from services.shipment.domain import check_id
from services.shipment.servicer import fingerprint
from services.task.handlers import HANDLERS
from services.task.model import DEFAULT_WORK_S, TaskInput, TaskRecord, validate_input
from services.task.store import SqliteTaskStore


class TaskServicer(task_pb2_grpc.TaskServiceServicer):
    def __init__(self, store: SqliteTaskStore, on_submit: Callable[[], None]) -> None:
        self.store = store
        self.on_submit = on_submit

    async def SubmitTask(
        self, request: task_pb2.SubmitTaskRequest, context: Context
    ) -> task_pb2.Task:
        task_input = parse_input(request)
        task = await self.store.submit(
            request.task.type, task_input, request.request_id, fingerprint(request)
        )
        self.on_submit()
        return to_proto(task)

    async def GetTask(self, request: task_pb2.GetTaskRequest, context: Context) -> task_pb2.Task:
        _check_task_id(request.id)
        return to_proto(await self.store.get(request.id))

    async def CancelTask(
        self, request: task_pb2.CancelTaskRequest, context: Context
    ) -> task_pb2.Task:
        _check_task_id(request.id)
        return to_proto(await self.store.cancel(request.id))


def _check_task_id(task_id: str) -> None:
    violations = check_id("id", task_id)
    if violations:
        raise InvalidArgument(violations)


def parse_input(request: task_pb2.SubmitTaskRequest) -> TaskInput:
    """Validate a submitted task. Raises InvalidArgument listing every problem."""
    task = request.task
    work_s = (
        task.work_duration.ToTimedelta().total_seconds()
        if task.HasField("work_duration")
        else DEFAULT_WORK_S
    )
    task_input = TaskInput(
        shipment_ids=tuple(task.shipment_ids),
        target_status=task.target_status,
        target_substatus=task.target_substatus,
        work_s=work_s,
    )
    validate_input(task.type, task_input, tuple(HANDLERS))
    if request.request_id:
        violations = check_id("request_id", request.request_id)
        if violations:
            raise InvalidArgument(violations)
    return task_input


def to_proto(task: TaskRecord) -> task_pb2.Task:
    message = task_pb2.Task(
        id=task.id,
        type=task.type,
        shipment_ids=task.input.shipment_ids,
        target_status=task.input.target_status,
        target_substatus=task.input.target_substatus,
        state=task.state,
        attempts=task.attempts,
        progress_percent=task.progress_percent,
        create_time=from_us(task.create_time_us),
    )
    message.work_duration.FromMilliseconds(round(task.input.work_s * 1000))
    for result in task.results:
        item = message.results.add(
            shipment_id=result.shipment_id, ok=result.ok, status=result.status
        )
        if result.error_code:
            item.error.CopyFrom(
                status_pb2.Status(code=result.error_code, message=result.error_message)
            )
    if task.error_code:
        message.error.CopyFrom(status_pb2.Status(code=task.error_code, message=task.error_message))
    if task.start_time_us:
        message.start_time.CopyFrom(from_us(task.start_time_us))
    if task.end_time_us:
        message.end_time.CopyFrom(from_us(task.end_time_us))
    return message
