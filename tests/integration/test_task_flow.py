"""TaskService, the outbox relay and a task worker over real RabbitMQ, Redis and SQLite."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator
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
from prometheus_client import REGISTRY

from ops import cli, traffic
from ops.topology import load_topology
from services.common.amqp import DELIVERY_LIMIT, TaskQueueNames
from services.common.cache import TASK_KEY, StatusCache
from services.common.server import GrpcServer
from services.shipment.app import ShipmentApp, ShipmentConfig
from services.task.app import TaskApp, TaskConfig
from services.task.handlers import HANDLERS, Progress, RetryLater
from services.task.worker import Worker, WorkerConfig
from tests.conftest import DataTier
from tests.integration.envoy_harness import EnvoyProcess
from tests.integration.gateway_harness import wait_for as harness_wait_for
from tests.integration.task_harness import (
    count_rows,
    delete_task_topology,
    eventually,
    queue_counts,
    task_messages,
    transitions_by_task,
)

pytestmark = pytest.mark.timeout(120)


@dataclass
class TaskStack:
    shipments: Any
    tasks: Any
    redis_url: str
    amqp_url: str
    database_path: str
    names: TaskQueueNames
    worker: Worker


async def start(app: Any, config: Any) -> GrpcServer:
    server = GrpcServer(config.server, app)
    await server.start()
    return server


WORKER_ENVIRON = {
    "ENVIOS_WORKER_CONCURRENCY": "16",
    "ENVIOS_TASK_BACKOFF_BASE_S": "0.1",
    "ENVIOS_TASK_BACKOFF_CAP_S": "0.4",
}
"""Settings of these tests: short backoffs."""


@pytest.fixture
def worker_environ() -> dict[str, str]:
    """Extra environment of the services and the worker; tests parametrize it."""
    return {}


@pytest.fixture
async def task_stack(
    tmp_path: Path, data_tier: DataTier, worker_environ: dict[str, str]
) -> AsyncIterator[TaskStack]:
    names = TaskQueueNames(f"test-{uuid.uuid4().hex[:12]}")
    environ = {
        "ENVIOS_DATABASE_URL": f"sqlite:///{tmp_path}/envios.db",
        "REDIS_URL": data_tier.redis_url,
        "AMQP_URL": data_tier.amqp_url,
        "ENVIOS_DRAIN_S": "0",
        "ENVIOS_TASK_NAMESPACE": names.namespace,
        "ENVIOS_REPLICA": "task-test-1",
        **WORKER_ENVIRON,
    }
    environ.update(worker_environ)
    shipment_config = ShipmentConfig.from_env(environ)
    shipment_server = await start(ShipmentApp(shipment_config), shipment_config)
    upstream = f"127.0.0.1:{shipment_server.port}"
    environ["ENVIOS_UPSTREAM_GRPC"] = upstream
    task_config = TaskConfig.from_env(environ)
    task_server = await start(TaskApp(task_config), task_config)
    worker = Worker(WorkerConfig.from_env({**environ, "ENVIOS_REPLICA": "worker-test-1"}))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    assert await asyncio.to_thread(worker.consuming.wait, 30), "worker did not start consuming"
    async with (
        grpc.aio.insecure_channel(upstream) as shipment_channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{task_server.port}") as task_channel,
    ):
        yield TaskStack(
            shipment_pb2_grpc.ShipmentServiceStub(shipment_channel),
            task_pb2_grpc.TaskServiceStub(task_channel),
            data_tier.redis_url,
            data_tier.amqp_url,
            f"{tmp_path}/envios.db",
            names,
            worker,
        )
    worker.stop()
    await asyncio.to_thread(thread.join, 30)
    await task_server.stop()
    await shipment_server.stop()
    await asyncio.to_thread(delete_task_topology, data_tier.amqp_url, names)


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
        work_duration=seconds(work_ms / 1000),
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


async def test_cancel_running_task_stops(task_stack: TaskStack) -> None:
    await create_shipments(task_stack, "k1", "k2")
    slow = await task_stack.tasks.SubmitTask(
        task_pb2.SubmitTaskRequest(task=transition(["k1", "k2"], "handling", work_ms=400))
    )
    await wait_for_state(task_stack, slow.id, task_pb2.Task.RUNNING)
    cancelled = await task_stack.tasks.CancelTask(task_pb2.CancelTaskRequest(id=slow.id))
    assert cancelled.state in (task_pb2.Task.RUNNING, task_pb2.Task.CANCELLED)
    assert cancelled.cancel_requested
    done = await wait_for_state(task_stack, slow.id, task_pb2.Task.CANCELLED)
    assert done.cancel_requested
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


def simulate(distribution: task_pb2.DurationDistribution) -> task_pb2.Task:
    return task_pb2.Task(type="simulate", simulated_duration=distribution)


def seconds(value: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromMilliseconds(round(value * 1000))
    return duration


def field_violations(error: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(error)
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert status.details[1].Unpack(bad_request)
    return [violation.field for violation in bad_request.field_violations]


async def watch_states(stack: TaskStack, task_id: str) -> list[task_pb2.Task]:
    call = stack.tasks.WatchTask(task_pb2.WatchTaskRequest(id=task_id), timeout=30)
    return [update async for update in call]


class FlakyHandler:
    """Fails transiently on its first ``failures`` runs, then succeeds."""

    name = "flaky"
    simulated = True

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.runs = 0

    async def run(self, task: Any, context: Any) -> AsyncIterator[Any]:
        self.runs += 1
        if self.runs <= self.failures:
            raise RetryLater(f"outside system unavailable (run {self.runs})")
        yield Progress(100)


class PoisonHandler:
    """Fails with an unexpected error on every run, like a bug triggered by one input."""

    name = "poison"
    simulated = True

    async def run(self, task: Any, context: Any) -> AsyncIterator[Any]:
        if task.id:
            raise RuntimeError(f"handler bug on task {task.id}")
        yield Progress(0)


async def test_bulk_transition_reports_results(task_stack: TaskStack) -> None:
    ids = [f"b{index}" for index in range(20)]
    await create_shipments(task_stack, *ids)
    task = task_pb2.Task(
        type="bulk_transition",
        shipment_ids=ids,
        target_status="handling",
        work_duration=seconds(0.05),
    )
    submitted = await task_stack.tasks.SubmitTask(task_pb2.SubmitTaskRequest(task=task))
    done = await wait_for_state(task_stack, submitted.id, task_pb2.Task.SUCCEEDED)
    assert [result.shipment_id for result in done.results] == ids
    assert all(result.ok for result in done.results)
    cache = StatusCache(task_stack.redis_url)
    try:
        entry = await cache.get(TASK_KEY.format(submitted.id))
    finally:
        await cache.close()
    assert entry is not None
    assert len(json.loads(entry["results"])) == 20
    ttl_ms = await asyncio.to_thread(
        redis_ttl_ms, task_stack.redis_url, TASK_KEY.format(submitted.id)
    )
    assert ttl_ms > 0


def redis_ttl_ms(url: str, key: str) -> int:
    import redis

    client = redis.Redis.from_url(url)
    try:
        return int(client.pttl(key))
    finally:
        client.close()


async def test_simulate_draws_duration(task_stack: TaskStack) -> None:
    distribution = task_pb2.DurationDistribution(
        uniform=task_pb2.UniformDurations(min=seconds(0.1), max=seconds(0.3))
    )
    submitted = await task_stack.tasks.SubmitTask(
        task_pb2.SubmitTaskRequest(task=simulate(distribution))
    )
    drawn = submitted.work_duration.ToTimedelta().total_seconds()
    assert 0.1 <= drawn <= 0.3
    done = await wait_for_state(task_stack, submitted.id, task_pb2.Task.SUCCEEDED)
    assert done.progress_percent == 100
    assert done.worker == "worker-test-1"


async def test_run_task_runs_here(task_stack: TaskStack) -> None:
    await create_shipments(task_stack, "run1")
    done = await task_stack.tasks.RunTask(
        task_pb2.RunTaskRequest(task=transition(["run1"], "handling")), timeout=10
    )
    assert done.state == task_pb2.Task.SUCCEEDED
    assert done.worker == "task-test-1"
    assert transitions_by_task(task_stack.database_path, "run1", done.id) == 1
    assert task_messages(task_stack.database_path) == 0


async def test_run_task_deadline_fails_task(task_stack: TaskStack) -> None:
    fixed = task_pb2.DurationDistribution(fixed=seconds(5))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await task_stack.tasks.RunTask(task_pb2.RunTaskRequest(task=simulate(fixed)), timeout=0.5)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    async def failed() -> bool:
        with sqlite3.connect(task_stack.database_path) as connection:
            row = connection.execute("SELECT state, error FROM tasks").fetchone()
        return row is not None and row[0] == "FAILED" and '"code": 4' in row[1]

    await eventually(failed, timeout_s=5)


async def test_watch_sees_every_state(task_stack: TaskStack, monkeypatch: Any) -> None:
    monkeypatch.setitem(HANDLERS, "flaky", FlakyHandler(failures=1))
    await create_shipments(task_stack, "w1")
    task = task_pb2.Task(type="flaky", shipment_ids=["w1"], target_status="handling")
    submitted = await task_stack.tasks.SubmitTask(task_pb2.SubmitTaskRequest(task=task))
    updates = await watch_states(task_stack, submitted.id)
    versions = [update.attempts for update in updates]
    assert versions == sorted(versions)
    states = [update.state for update in updates]
    changes = [
        state for index, state in enumerate(states) if index == 0 or states[index - 1] != state
    ]
    expected = [
        task_pb2.Task.RUNNING,
        task_pb2.Task.RETRYING,
        task_pb2.Task.RUNNING,
        task_pb2.Task.SUCCEEDED,
    ]
    assert changes in (expected, [task_pb2.Task.QUEUED, *expected])
    assert updates[-1].attempts == 2


async def test_retries_exhausted_fail_task(task_stack: TaskStack, monkeypatch: Any) -> None:
    monkeypatch.setitem(HANDLERS, "flaky", FlakyHandler(failures=100))
    before = REGISTRY.get_sample_value("envios_task_retries_total", {"type": "flaky"}) or 0
    await create_shipments(task_stack, "x1")
    task = task_pb2.Task(type="flaky", shipment_ids=["x1"], target_status="handling")
    submitted = await task_stack.tasks.SubmitTask(task_pb2.SubmitTaskRequest(task=task))
    done = await wait_for_state(task_stack, submitted.id, task_pb2.Task.FAILED)
    assert done.attempts == 3
    assert "gave up after 3 attempts" in done.error.message
    after = REGISTRY.get_sample_value("envios_task_retries_total", {"type": "flaky"})
    assert after == before + 2


async def test_poison_task_dead_lettered(task_stack: TaskStack, monkeypatch: Any) -> None:
    monkeypatch.setitem(HANDLERS, "poison", PoisonHandler())
    dead_before = REGISTRY.get_sample_value("envios_tasks_dead_lettered_total") or 0
    await create_shipments(task_stack, "p1", "ok1", "ok2")
    poison = task_pb2.Task(type="poison", shipment_ids=["p1"], target_status="handling")
    bad = await task_stack.tasks.SubmitTask(task_pb2.SubmitTaskRequest(task=poison))
    good = [
        await task_stack.tasks.SubmitTask(
            task_pb2.SubmitTaskRequest(task=transition([id_], "handling"))
        )
        for id_ in ("ok1", "ok2")
    ]
    failed = await wait_for_state(task_stack, bad.id, task_pb2.Task.FAILED)
    assert "dead-lettered" in failed.error.message
    assert failed.attempts == DELIVERY_LIMIT + 1
    for task in good:
        await wait_for_state(task_stack, task.id, task_pb2.Task.SUCCEEDED)
    ready, _ = await asyncio.to_thread(
        queue_counts, task_stack.amqp_url, task_stack.names.dead_letter_queue
    )
    assert ready == 1
    dead_after = REGISTRY.get_sample_value("envios_tasks_dead_lettered_total")
    assert dead_after == dead_before + 1


@pytest.mark.parametrize("worker_environ", [{"ENVIOS_AMQP_HEARTBEAT_S": "2"}])
async def test_long_task_keeps_connection(task_stack: TaskStack) -> None:
    fixed = task_pb2.DurationDistribution(fixed=seconds(5))
    submitted = await task_stack.tasks.SubmitTask(task_pb2.SubmitTaskRequest(task=simulate(fixed)))
    done = await wait_for_state(task_stack, submitted.id, task_pb2.Task.SUCCEEDED)
    assert done.attempts == 1
    assert task_stack.worker.connections == 1
    elapsed = done.end_time.ToDatetime() - done.start_time.ToDatetime()
    assert elapsed.total_seconds() >= 5


@pytest.mark.parametrize(
    "worker_environ", [{"ENVIOS_TASK_TIME_SCALE": "0.1", "ENVIOS_WORKER_CONCURRENCY": "32"}]
)
async def test_many_tasks_apply_once(task_stack: TaskStack) -> None:
    rng = random.Random(7)
    ids = [f"m{index}" for index in range(200)]
    await create_shipments(task_stack, *ids)
    before = (
        REGISTRY.get_sample_value(
            "envios_task_attempt_duration_seconds_count",
            {"type": "transition", "outcome": "succeeded"},
        )
        or 0
    )
    submitted = []
    for shipment_id in ids:
        task = transition([shipment_id], "handling", work_ms=rng.randint(1000, 5000))
        submitted.append(await task_stack.tasks.SubmitTask(task_pb2.SubmitTaskRequest(task=task)))

    async def all_done() -> bool:
        with sqlite3.connect(task_stack.database_path) as connection:
            row = connection.execute(
                "SELECT COUNT(*) FROM tasks WHERE state NOT IN ('SUCCEEDED', 'FAILED', 'CANCELLED')"
            ).fetchone()
        return int(row[0]) == 0

    await eventually(all_done, timeout_s=90)
    for task, shipment_id in zip(submitted, ids, strict=True):
        done = await task_stack.tasks.GetTask(task_pb2.GetTaskRequest(id=task.id))
        assert done.state == task_pb2.Task.SUCCEEDED
        assert transitions_by_task(task_stack.database_path, shipment_id, task.id) == 1
    ready, consumers = await asyncio.to_thread(
        queue_counts, task_stack.amqp_url, task_stack.names.queue
    )
    assert ready == 0
    assert consumers == 1
    after = REGISTRY.get_sample_value(
        "envios_task_attempt_duration_seconds_count", {"type": "transition", "outcome": "succeeded"}
    )
    assert after == before + 200


@pytest.mark.parametrize("worker_environ", [{"ENVIOS_WORKER_CONCURRENCY": "1"}])
async def test_cancel_queued_task(task_stack: TaskStack) -> None:
    await create_shipments(task_stack, "q1", "q2")
    busy = await task_stack.tasks.SubmitTask(
        task_pb2.SubmitTaskRequest(task=transition(["q1"], "handling", work_ms=1500))
    )
    await wait_for_state(task_stack, busy.id, task_pb2.Task.RUNNING)
    queued = await task_stack.tasks.SubmitTask(
        task_pb2.SubmitTaskRequest(task=transition(["q2"], "handling"))
    )
    cancelled = await task_stack.tasks.CancelTask(task_pb2.CancelTaskRequest(id=queued.id))
    assert cancelled.state == task_pb2.Task.CANCELLED
    await wait_for_state(task_stack, busy.id, task_pb2.Task.SUCCEEDED)

    async def queue_empty() -> bool:
        ready, _ = await asyncio.to_thread(
            queue_counts, task_stack.amqp_url, task_stack.names.queue
        )
        return ready == 0 and not task_stack.worker.executor._locks  # type: ignore[union-attr]

    await eventually(queue_empty)
    final = await task_stack.tasks.GetTask(task_pb2.GetTaskRequest(id=queued.id))
    assert final.state == task_pb2.Task.CANCELLED
    assert final.attempts == 0
    assert transitions_by_task(task_stack.database_path, "q2", queued.id) == 0


@pytest.mark.parametrize(
    ("task", "field"),
    [
        (
            task_pb2.Task(
                type="transition",
                shipment_ids=[f"s{i}" for i in range(101)],
                target_status="handling",
            ),
            "task.shipment_ids",
        ),
        (
            task_pb2.Task(
                type="bulk_transition",
                shipment_ids=[f"s{i}" for i in range(501)],
                target_status="handling",
            ),
            "task.shipment_ids",
        ),
        (task_pb2.Task(type="bulk_transition", target_status="handling"), "task.shipment_ids"),
        (
            task_pb2.Task(
                type="transition",
                shipment_ids=["a", "b", "c", "d", "e"],
                target_status="handling",
                work_duration=duration_pb2.Duration(seconds=50),
            ),
            "task.work_duration",
        ),
        (task_pb2.Task(type="simulate"), "task.simulated_duration"),
        (
            task_pb2.Task(
                type="simulate",
                shipment_ids=["a"],
                simulated_duration=task_pb2.DurationDistribution(
                    fixed=duration_pb2.Duration(seconds=1)
                ),
            ),
            "task.shipment_ids",
        ),
        (
            task_pb2.Task(
                type="simulate",
                simulated_duration=task_pb2.DurationDistribution(
                    fixed=duration_pb2.Duration(seconds=-1)
                ),
            ),
            "task.simulated_duration.fixed",
        ),
        (
            task_pb2.Task(
                type="simulate",
                simulated_duration=task_pb2.DurationDistribution(
                    uniform=task_pb2.UniformDurations(
                        min=duration_pb2.Duration(seconds=3), max=duration_pb2.Duration(seconds=1)
                    )
                ),
            ),
            "task.simulated_duration.uniform.max",
        ),
        (
            task_pb2.Task(
                type="simulate",
                simulated_duration=task_pb2.DurationDistribution(
                    log_normal=task_pb2.LogNormalDurations(
                        median=duration_pb2.Duration(seconds=2), sigma=9
                    )
                ),
            ),
            "task.simulated_duration.log_normal.sigma",
        ),
        (
            task_pb2.Task(
                type="simulate",
                simulated_duration=task_pb2.DurationDistribution(trace=task_pb2.DurationTrace()),
            ),
            "task.simulated_duration.trace.durations",
        ),
        (
            task_pb2.Task(
                type="simulate",
                simulated_duration=task_pb2.DurationDistribution(
                    trace=task_pb2.DurationTrace(durations=[duration_pb2.Duration(seconds=300)])
                ),
            ),
            "task.simulated_duration.trace.durations[0]",
        ),
    ],
)
async def test_bad_input_queues_nothing(
    task_stack: TaskStack, task: task_pb2.Task, field: str
) -> None:
    for call, request_type in (
        (task_stack.tasks.SubmitTask, task_pb2.SubmitTaskRequest),
        (task_stack.tasks.RunTask, task_pb2.RunTaskRequest),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(request_type(task=task))
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in field_violations(raised.value)
    assert count_rows(task_stack.database_path, "tasks") == 0
    assert task_messages(task_stack.database_path) == 0


async def test_unknown_shipment_not_found(task_stack: TaskStack) -> None:
    await create_shipments(task_stack, "u1")
    task = transition(["u1", "missing-1"], "handling")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await task_stack.tasks.SubmitTask(task_pb2.SubmitTaskRequest(task=task))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert "task.shipment_ids[1]" in (raised.value.details() or "")
    status = rpc_status.from_call(raised.value)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.reason == "SHIPMENT_NOT_FOUND"
    assert info.metadata["field"] == "task.shipment_ids[1]"
    assert count_rows(task_stack.database_path, "tasks") == 0
    assert task_messages(task_stack.database_path) == 0


async def test_watch_unknown_task_not_found(task_stack: TaskStack) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await watch_states(task_stack, "0123abc")
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_queue_depth_metric_set(task_stack: TaskStack) -> None:
    value = REGISTRY.get_sample_value("envios_task_queue_depth", {"queue": task_stack.names.queue})
    assert value == 0


async def test_dlq_cli_lists_and_requeues(
    task_stack: TaskStack, monkeypatch: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(HANDLERS, "poison", PoisonHandler())
    await create_shipments(task_stack, "d1")
    poison = task_pb2.Task(type="poison", shipment_ids=["d1"], target_status="handling")
    bad = await task_stack.tasks.SubmitTask(task_pb2.SubmitTaskRequest(task=poison))
    await wait_for_state(task_stack, bad.id, task_pb2.Task.FAILED)
    options = [
        "tasks",
        "--amqp-url",
        task_stack.amqp_url,
        "--database-url",
        f"sqlite:///{task_stack.database_path}",
        "--namespace",
        task_stack.names.namespace,
        "dlq",
    ]
    capsys.readouterr()
    assert await asyncio.to_thread(cli.main, [*options, "list"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(item["task_id"], item["state"], item["reason"]) for item in listed] == [
        (bad.id, "FAILED", "delivery_limit")
    ]
    monkeypatch.setitem(HANDLERS, "poison", FlakyHandler(failures=0))
    assert await asyncio.to_thread(cli.main, [*options, "requeue"]) == 0
    assert "requeued 1 tasks" in capsys.readouterr().out
    await wait_for_state(task_stack, bad.id, task_pb2.Task.SUCCEEDED)
    assert await asyncio.to_thread(cli.main, [*options, "purge"]) == 0
    assert "purged 0 messages" in capsys.readouterr().out


async def test_in_flight_metric_follows_task(task_stack: TaskStack) -> None:
    await create_shipments(task_stack, "g1")
    submitted = await task_stack.tasks.SubmitTask(
        task_pb2.SubmitTaskRequest(task=transition(["g1"], "handling", work_ms=600))
    )
    await wait_for_state(task_stack, submitted.id, task_pb2.Task.RUNNING)
    assert (REGISTRY.get_sample_value("envios_tasks_in_flight") or 0) >= 1
    await wait_for_state(task_stack, submitted.id, task_pb2.Task.SUCCEEDED)

    async def drained() -> bool:
        return REGISTRY.get_sample_value("envios_tasks_in_flight") == 0

    await eventually(drained)


@pytest.mark.parametrize("worker_environ", [{"ENVIOS_WORKER_PRIORITY": "10"}])
async def test_standby_worker_takes_over(task_stack: TaskStack, data_tier: DataTier) -> None:
    """A worker of lower consumer priority gets no task while the higher one has room,
    and every task once the higher one is gone."""
    standby_environ = {
        "ENVIOS_DATABASE_URL": f"sqlite:///{task_stack.database_path}",
        "REDIS_URL": data_tier.redis_url,
        "AMQP_URL": data_tier.amqp_url,
        "ENVIOS_TASK_NAMESPACE": task_stack.names.namespace,
        "ENVIOS_UPSTREAM_GRPC": "127.0.0.1:1",
        "ENVIOS_REPLICA": "worker-standby-1",
        "ENVIOS_WORKER_PRIORITY": "0",
        **WORKER_ENVIRON,
    }
    standby = Worker(WorkerConfig.from_env(standby_environ))
    thread = threading.Thread(target=standby.run, daemon=True)
    thread.start()
    assert await asyncio.to_thread(standby.consuming.wait, 30), "standby did not start consuming"
    try:
        first = await run_simulated(task_stack, 4)
        task_stack.worker.stop()
        second = await run_simulated(task_stack, 3)
    finally:
        standby.stop()
        await asyncio.to_thread(thread.join, 30)

    assert {task.worker for task in first} == {"worker-test-1"}
    assert {task.worker for task in second} == {"worker-standby-1"}


class SiteWorkers:
    """Task workers that follow the traffic split in a real Envoy's runtime."""

    def __init__(self, stack: TaskStack, data_tier: DataTier, admin_url: str) -> None:
        self.stack = stack
        self.data_tier = data_tier
        self.admin_url = admin_url
        self.workers: dict[str, Worker] = {}
        self.threads: list[threading.Thread] = []

    async def start(self, site: str, priorities: tuple[int, int], concurrency: int = 16) -> None:
        """Start the worker of ``site`` with its normal and shifted consumer priorities."""
        environ = {
            **WORKER_ENVIRON,
            "ENVIOS_DATABASE_URL": f"sqlite:///{self.stack.database_path}",
            "REDIS_URL": self.data_tier.redis_url,
            "AMQP_URL": self.data_tier.amqp_url,
            "ENVIOS_TASK_NAMESPACE": self.stack.names.namespace,
            "ENVIOS_UPSTREAM_GRPC": "127.0.0.1:1",
            "ENVIOS_REPLICA": f"worker-{site}-1",
            "ENVIOS_SITE": site,
            "ENVIOS_WORKER_CONCURRENCY": str(concurrency),
            "ENVIOS_WORKER_PRIORITY": str(priorities[0]),
            "ENVIOS_WORKER_SHIFTED_PRIORITY": str(priorities[1]),
            "ENVIOS_TRAFFIC_ADMIN_URL": self.admin_url,
            "ENVIOS_TRAFFIC_POLL_S": "0.1",
        }
        worker = Worker(WorkerConfig.from_env(environ))
        self.workers[site] = worker
        self.threads.append(threading.Thread(target=worker.run, daemon=True))
        self.threads[-1].start()
        assert await asyncio.to_thread(worker.consuming.wait, 30), f"{site} worker is not consuming"

    async def shift(self, percent: int, priorities: dict[str, int]) -> None:
        """Set the split in Envoy and wait until each worker consumes with its new priority."""
        await asyncio.to_thread(traffic.set_secondary_percent, self.admin_url, percent)

        async def consuming_with_new_priorities() -> bool:
            return all(
                self.workers[site].consumer_priority == value for site, value in priorities.items()
            )

        await harness_wait_for(
            consuming_with_new_priorities, 10.0, f"worker priorities {priorities} at {percent}%"
        )

    async def stop(self) -> None:
        for worker in self.workers.values():
            worker.stop()
        for thread in self.threads:
            await asyncio.to_thread(thread.join, 30)


@pytest.fixture
async def site_workers(
    task_stack: TaskStack, data_tier: DataTier, tmp_path: Path
) -> AsyncIterator[SiteWorkers]:
    """A real Envoy for the traffic split, and no worker until a test starts one."""
    envoy = EnvoyProcess(load_topology().with_free_ports(), tmp_path)
    envoy.start()
    workers = SiteWorkers(task_stack, data_tier, envoy.admin_url)
    try:
        await harness_wait_for(envoy.ready, 15.0, "envoy admin /ready")
        # The fixture's worker would take tasks whatever the split.
        task_stack.worker.stop()
        yield workers
    finally:
        await workers.stop()
        envoy.stop()


async def test_workers_follow_traffic_shift(
    task_stack: TaskStack, site_workers: SiteWorkers
) -> None:
    """Workers of both sites read the split from a real Envoy's runtime. Tasks run on the
    primary's worker, on the secondary's after a full shift, on both during a partial
    shift, and on the primary's again after the shift back."""
    await site_workers.start("primary", (10, 0))
    await site_workers.start("secondary", (0, 10))

    before = await run_simulated(task_stack, 4)
    await site_workers.shift(100, {"primary": 0, "secondary": 10})
    during_shift = await run_simulated(task_stack, 4)
    await site_workers.shift(50, {"primary": 10, "secondary": 10})
    shared = await run_simulated(task_stack, 8)
    await site_workers.shift(0, {"primary": 10, "secondary": 0})
    after = await run_simulated(task_stack, 4)

    assert {task.worker for task in before} == {"worker-primary-1"}
    assert {task.worker for task in during_shift} == {"worker-secondary-1"}
    assert {task.worker for task in shared} == {"worker-primary-1", "worker-secondary-1"}
    assert {task.worker for task in after} == {"worker-primary-1"}


async def test_priority_change_keeps_slot_limit(
    task_stack: TaskStack, site_workers: SiteWorkers
) -> None:
    """A new consumer gets a full prefetch while the old one's tasks still run. The worker
    keeps the extra deliveries waiting, so it never runs more tasks than its concurrency."""
    await site_workers.start("primary", (10, 0), concurrency=2)
    task = simulate(task_pb2.DurationDistribution(fixed=seconds(0.6)))
    ids = []
    for _ in range(8):
        submitted = await task_stack.tasks.SubmitTask(task_pb2.SubmitTaskRequest(task=task))
        ids.append(submitted.id)
    await wait_for_state(task_stack, ids[0], task_pb2.Task.RUNNING)
    await site_workers.shift(100, {"primary": 0})
    done = [await wait_for_state(task_stack, task_id, task_pb2.Task.SUCCEEDED) for task_id in ids]

    assert {task.worker for task in done} == {"worker-primary-1"}
    assert max_overlap(done) == 2


def max_overlap(tasks: list[task_pb2.Task]) -> int:
    """Return the largest number of ``tasks`` that ran at the same time."""
    edges = []
    for task in tasks:
        edges.append((task.start_time.ToNanoseconds(), 1))
        edges.append((task.end_time.ToNanoseconds(), -1))
    running = largest = 0
    # At equal times an end sorts before a start, so back-to-back tasks do not overlap.
    for _, change in sorted(edges):
        running += change
        largest = max(largest, running)
    return largest


async def run_simulated(stack: TaskStack, count: int) -> list[task_pb2.Task]:
    """Submit ``count`` short simulate tasks and return each once it succeeded."""
    task = simulate(task_pb2.DurationDistribution(fixed=seconds(0.05)))
    ids = []
    for _ in range(count):
        submitted = await stack.tasks.SubmitTask(task_pb2.SubmitTaskRequest(task=task))
        ids.append(submitted.id)
    return [await wait_for_state(stack, task_id, task_pb2.Task.SUCCEEDED) for task_id in ids]
