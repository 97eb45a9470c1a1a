"""TaskService servicer: proto messages in and out; the store, queue and runner do the work."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable

from envios.task.v1 import task_pb2, task_pb2_grpc
from google.protobuf import duration_pb2
from google.rpc import status_pb2

from services.common.errors import Context, InvalidArgument
from services.common.timeutil import from_us
from services.shipment.domain import check_id
from services.shipment.servicer import fingerprint
from services.task.durations import Distribution, check_distribution
from services.task.handlers import HANDLERS
from services.task.model import (
    DEFAULT_WORK_S,
    TERMINAL_STATES,
    TaskInput,
    TaskRecord,
    validate_input,
)
from services.task.run_here import LocalRunner
from services.task.store import NewTask, SqliteTaskStore

WATCH_POLL_S = 0.1
"""How often WatchTask reads the task for changes."""


class TaskServicer(task_pb2_grpc.TaskServiceServicer):
    def __init__(
        self,
        store: SqliteTaskStore,
        on_submit: Callable[[], None],
        runner: LocalRunner,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.on_submit = on_submit
        self.runner = runner
        self.rng = rng or random.Random()

    async def SubmitTask(
        self, request: task_pb2.SubmitTaskRequest, context: Context
    ) -> task_pb2.Task:
        new = parse_request(request, queued=True, rng=self.rng)
        task, _ = await self.store.submit(new)
        self.on_submit()
        return to_proto(task)

    async def RunTask(self, request: task_pb2.RunTaskRequest, context: Context) -> task_pb2.Task:
        new = parse_request(request, queued=False, rng=self.rng)
        task, _ = await self.store.submit(new)
        return to_proto(await self.runner.run(task.id, context.time_remaining()))

    async def GetTask(self, request: task_pb2.GetTaskRequest, context: Context) -> task_pb2.Task:
        _check_task_id(request.id)
        return to_proto(await self.store.get(request.id))

    async def CancelTask(
        self, request: task_pb2.CancelTaskRequest, context: Context
    ) -> task_pb2.Task:
        _check_task_id(request.id)
        return to_proto(await self.store.cancel(request.id))

    async def WatchTask(
        self, request: task_pb2.WatchTaskRequest, context: Context
    ) -> AsyncIterator[task_pb2.Task]:
        # Errors here come before the first message, so they stay Trailers-Only.
        _check_task_id(request.id)
        task = await self.store.get(request.id)
        yield to_proto(task)
        async for update in self._updates(task):
            yield to_proto(update)

    async def _updates(self, task: TaskRecord) -> AsyncIterator[TaskRecord]:
        """Yield every state-change snapshot and progress update after ``task``, in order."""
        last = task.version
        while task.state not in TERMINAL_STATES:
            await asyncio.sleep(WATCH_POLL_S)
            # Read the task before its history, so that every state change up to the
            # task's version is in the history read.
            task = await self.store.get(task.id)
            for change in await self.store.history(task.id, last):
                if change.version > task.version:
                    break
                last = change.version
                yield change
            if task.version > last:
                last = task.version
                yield task


def _check_task_id(task_id: str) -> None:
    violations = check_id("id", task_id)
    if violations:
        raise InvalidArgument(violations)


def parse_request(
    request: task_pb2.SubmitTaskRequest | task_pb2.RunTaskRequest,
    *,
    queued: bool,
    rng: random.Random,
) -> NewTask:
    """Validate a submitted task. Raises InvalidArgument listing every problem."""
    task_input = parse_input(request.task, rng)
    if request.request_id:
        violations = check_id("request_id", request.request_id)
        if violations:
            raise InvalidArgument(violations)
    return NewTask(request.task.type, task_input, request.request_id, fingerprint(request), queued)


def parse_input(task: task_pb2.Task, rng: random.Random) -> TaskInput:
    """Validate the input of a task; for ``simulate``, draw its duration.

    Raises InvalidArgument listing every problem.
    """
    work_s = _seconds(task.work_duration) if task.HasField("work_duration") else DEFAULT_WORK_S
    if task.type == "simulate":
        distribution = parse_distribution(task)
        violations = check_distribution("task.simulated_duration", distribution)
        if violations:
            raise InvalidArgument(violations)
        assert distribution is not None
        work_s = distribution.draw(rng)
    task_input = TaskInput(
        shipment_ids=tuple(task.shipment_ids),
        target_status=task.target_status,
        target_substatus=task.target_substatus,
        work_s=work_s,
    )
    validate_input(task.type, task_input, tuple(HANDLERS))
    return task_input


def parse_distribution(task: task_pb2.Task) -> Distribution | None:
    """Return the ``simulated_duration`` of a task, or None when it is not set."""
    if not task.HasField("simulated_duration"):
        return None
    message = task.simulated_duration
    kind = message.WhichOneof("distribution")
    if kind == "fixed":
        return Distribution("fixed", (_seconds(message.fixed),))
    if kind == "uniform":
        bounds = (_seconds(message.uniform.min), _seconds(message.uniform.max))
        return Distribution("uniform", bounds)
    if kind == "log_normal":
        median = _seconds(message.log_normal.median)
        return Distribution("log_normal", (median,), message.log_normal.sigma)
    if kind == "trace":
        return Distribution("trace", tuple(_seconds(item) for item in message.trace.durations))
    return Distribution("", ())


def _seconds(duration: duration_pb2.Duration) -> float:
    return float(duration.seconds) + duration.nanos / 1e9


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
        worker=task.worker,
        cancel_requested=task.cancel_requested,
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
