"""TaskService, the outbox relay and a task worker over real RabbitMQ, Redis and SQLite."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from envios.shipment.v1 import shipment_pb2, shipment_pb2_grpc
from envios.task.v1 import task_pb2, task_pb2_grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.common.cache import TASK_KEY, StatusCache
from services.common.server import GrpcServer
from services.shipment.app import ShipmentApp, ShipmentConfig
from services.task.app import TaskApp, TaskConfig
from services.task.worker import Worker, WorkerConfig
from tests.conftest import DataTier

pytestmark = pytest.mark.timeout(120)


@dataclass
class TaskStack:
    shipments: Any
    tasks: Any
    redis_url: str


async def start(app: Any, config: Any) -> GrpcServer:
    server = GrpcServer(config.server, app)
    await server.start()
    return server


@pytest.fixture
async def task_stack(tmp_path: Path, data_tier: DataTier) -> AsyncIterator[TaskStack]:
    environ = {
        "ENVIOS_DATABASE_URL": f"sqlite:///{tmp_path}/envios.db",
        "REDIS_URL": data_tier.redis_url,
        "AMQP_URL": data_tier.amqp_url,
        "ENVIOS_DRAIN_S": "0",
    }
    shipment_config = ShipmentConfig.from_env(environ)
    shipment_server = await start(ShipmentApp(shipment_config), shipment_config)
    task_config = TaskConfig.from_env(environ)
    task_server = await start(TaskApp(task_config), task_config)
    upstream = f"127.0.0.1:{shipment_server.port}"
    worker = Worker(WorkerConfig.from_env({**environ, "ENVIOS_UPSTREAM_GRPC": upstream}))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    async with (
        grpc.aio.insecure_channel(upstream) as shipment_channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{task_server.port}") as task_channel,
    ):
        yield TaskStack(
            shipment_pb2_grpc.ShipmentServiceStub(shipment_channel),
            task_pb2_grpc.TaskServiceStub(task_channel),
            data_tier.redis_url,
        )
    worker.stop()
    await asyncio.to_thread(thread.join, 30)
    await task_server.stop()
    await shipment_server.stop()


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def create_shipments(stack: TaskStack, *ids: str) -> None:
    for shipment_id in ids:
        await stack.shipments.CreateShipment(
            shipment_pb2.CreateShipmentRequest(shipment=shipment_pb2.Shipment(id=shipment_id))
        )


def transition(ids: list[str], status: str, work_ms: int = 50) -> task_pb2.Task:
    return task_pb2.Task(
        type="transition",
        shipment_ids=ids,
        target_status=status,
        work_duration=duration_pb2.Duration(nanos=work_ms * 1_000_000),
    )


async def wait_for_state(stack: TaskStack, task_id: str, state: int) -> task_pb2.Task:
    found: list[task_pb2.Task] = []

    async def reached() -> bool:
        found[:] = [await stack.tasks.GetTask(task_pb2.GetTaskRequest(id=task_id))]
        return bool(found[0].state == state)

    await eventually(reached)
    return found[0]


async def test_transition_task_runs_to_success(task_stack: TaskStack) -> None:
    await create_shipments(task_stack, "t1", "t2")
    submitted = await task_stack.tasks.SubmitTask(
        task_pb2.SubmitTaskRequest(task=transition(["t1", "t2"], "handling"))
    )
    assert submitted.state == task_pb2.Task.QUEUED
    done = await wait_for_state(task_stack, submitted.id, task_pb2.Task.SUCCEEDED)
    assert done.progress_percent == 100
    assert [result.ok for result in done.results] == [True, True]
    assert done.attempts == 1
    for shipment_id in ("t1", "t2"):
        shipment = await task_stack.shipments.GetShipment(
            shipment_pb2.GetShipmentRequest(id=shipment_id)
        )
        assert shipment.status == "handling"
        assert shipment.history[-1].task_id == submitted.id


async def test_task_progress_reaches_cache(task_stack: TaskStack) -> None:
    await create_shipments(task_stack, "c1")
    submitted = await task_stack.tasks.SubmitTask(
        task_pb2.SubmitTaskRequest(task=transition(["c1"], "cancelled"))
    )
    await wait_for_state(task_stack, submitted.id, task_pb2.Task.SUCCEEDED)
    cache = StatusCache(task_stack.redis_url)
    try:
        entry = await cache.get(TASK_KEY.format(submitted.id))
    finally:
        await cache.close()
    assert entry is not None
    assert entry["state"] == "SUCCEEDED"
    assert entry["progress_percent"] == "100"


async def test_invalid_transition_fails_task(task_stack: TaskStack) -> None:
    await create_shipments(task_stack, "f1")
    submitted = await task_stack.tasks.SubmitTask(
        task_pb2.SubmitTaskRequest(task=transition(["f1"], "delivered"))
    )
    done = await wait_for_state(task_stack, submitted.id, task_pb2.Task.FAILED)
    assert not done.results[0].ok
    assert done.results[0].error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]


async def test_submit_retry_returns_same_task(task_stack: TaskStack) -> None:
    await create_shipments(task_stack, "r1")
    request = task_pb2.SubmitTaskRequest(task=transition(["r1"], "handling"), request_id="submit-1")
    first = await task_stack.tasks.SubmitTask(request)
    again = await task_stack.tasks.SubmitTask(request)
    assert again.id == first.id


async def test_cancel_queued_task_never_runs(task_stack: TaskStack) -> None:
    await create_shipments(task_stack, "k1", "k2")
    slow = await task_stack.tasks.SubmitTask(
        task_pb2.SubmitTaskRequest(task=transition(["k1", "k2"], "handling", work_ms=400))
    )
    await wait_for_state(task_stack, slow.id, task_pb2.Task.RUNNING)
    cancelled = await task_stack.tasks.CancelTask(task_pb2.CancelTaskRequest(id=slow.id))
    assert cancelled.state in (task_pb2.Task.RUNNING, task_pb2.Task.CANCELLED)
    done = await wait_for_state(task_stack, slow.id, task_pb2.Task.CANCELLED)
    assert len(done.results) < 2


@pytest.mark.parametrize(
    ("task", "field"),
    [
        (task_pb2.Task(type="teleport", shipment_ids=["a"], target_status="handling"), "task.type"),
        (task_pb2.Task(type="transition", target_status="handling"), "task.shipment_ids"),
        (
            task_pb2.Task(type="transition", shipment_ids=["a"], target_status="lost"),
            "task.target_status",
        ),
        (
            task_pb2.Task(
                type="transition",
                shipment_ids=["a"],
                target_status="handling",
                work_duration=duration_pb2.Duration(seconds=61),
            ),
            "task.work_duration",
        ),
    ],
)
async def test_invalid_task_rejected(
    task_stack: TaskStack, task: task_pb2.Task, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await task_stack.tasks.SubmitTask(task_pb2.SubmitTaskRequest(task=task))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(raised.value)
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert status.details[1].Unpack(bad_request)
    assert field in [violation.field for violation in bad_request.field_violations]


async def test_unknown_task_not_found(task_stack: TaskStack) -> None:
    for call in (task_stack.tasks.GetTask, task_stack.tasks.CancelTask):
        request_type = (
            task_pb2.GetTaskRequest
            if call is task_stack.tasks.GetTask
            else task_pb2.CancelTaskRequest
        )
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(request_type(id="0123abc"))
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
