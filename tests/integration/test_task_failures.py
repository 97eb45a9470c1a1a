"""Task execution when workers are killed and when RabbitMQ restarts.

Workers run as real processes (``python -m services.task.worker``) and are killed with
SIGKILL by pid. RabbitMQ is restarted only in a private data tier started by the test,
never the session's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pika
import pytest
from envios.shipment.v1 import shipment_pb2, shipment_pb2_grpc
from envios.task.v1 import task_pb2, task_pb2_grpc
from google.protobuf import duration_pb2

from ops.stack import Stack
from ops.topology import load_topology
from services.common.amqp import TaskQueueNames, connection_parameters, declare_topology
from services.common.server import GrpcServer
from services.shipment.app import ShipmentApp, ShipmentConfig
from services.task.app import TaskApp, TaskConfig
from tests.conftest import DataTier, base_environ
from tests.integration.task_harness import (
    delete_task_topology,
    eventually,
    queue_counts,
    transitions_by_task,
)

pytestmark = pytest.mark.timeout(240)

KILL_ROUNDS = 20


@dataclass
class Services:
    environ: dict[str, str]
    database_path: str
    names: TaskQueueNames
    shipments: Any
    tasks: Any
    workers: dict[str, subprocess.Popen[bytes]]
    logs: Path

    def start_worker(self, name: str) -> None:
        environ = {**os.environ, **self.environ, "ENVIOS_REPLICA": name}
        log = (self.logs / f"{name}.log").open("ab")
        self.workers[name] = subprocess.Popen(
            [sys.executable, "-m", "services.task.worker"],
            env=environ,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def stop_workers(self) -> None:
        for process in self.workers.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.workers.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def declare(amqp_url: str, names: TaskQueueNames) -> None:
    connection = pika.BlockingConnection(connection_parameters(amqp_url))
    try:
        declare_topology(connection.channel(), names)
    finally:
        connection.close()


async def start_server(app: Any, config: Any) -> GrpcServer:
    server = GrpcServer(config.server, app)
    await server.start()
    return server


@contextlib.asynccontextmanager
async def running_services(
    tmp_path: Path, redis_url: str, amqp_url: str, extra: dict[str, str]
) -> AsyncIterator[Services]:
    """ShipmentService and TaskService in this process; workers are started by the test."""
    names = TaskQueueNames(f"test-{uuid.uuid4().hex[:12]}")
    database_path = f"{tmp_path}/envios.db"
    environ = {
        "ENVIOS_DATABASE_URL": f"sqlite:///{database_path}",
        "REDIS_URL": redis_url,
        "AMQP_URL": amqp_url,
        "ENVIOS_DRAIN_S": "0",
        "ENVIOS_TASK_NAMESPACE": names.namespace,
        "ENVIOS_TASK_BACKOFF_BASE_S": "0.1",
        "ENVIOS_TASK_BACKOFF_CAP_S": "0.5",
        "ENVIOS_LOG_LEVEL": "INFO",
        **extra,
    }
    await asyncio.to_thread(declare, amqp_url, names)
    shipment_config = ShipmentConfig.from_env(environ)
    shipment_server = await start_server(ShipmentApp(shipment_config), shipment_config)
    environ["ENVIOS_UPSTREAM_GRPC"] = f"127.0.0.1:{shipment_server.port}"
    task_config = TaskConfig.from_env(environ)
    task_server = await start_server(TaskApp(task_config), task_config)
    logs = tmp_path / "logs"
    logs.mkdir()
    async with (
        grpc.aio.insecure_channel(environ["ENVIOS_UPSTREAM_GRPC"]) as shipment_channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{task_server.port}") as task_channel,
    ):
        services = Services(
            environ,
            database_path,
            names,
            shipment_pb2_grpc.ShipmentServiceStub(shipment_channel),
            task_pb2_grpc.TaskServiceStub(task_channel),
            {},
            logs,
        )
        try:
            yield services
        finally:
            await asyncio.to_thread(services.stop_workers)
    await task_server.stop()
    await shipment_server.stop()
    await asyncio.to_thread(delete_task_topology, amqp_url, names)


async def wait_consumers(services: Services, count: int, timeout_s: float = 30.0) -> None:
    async def enough() -> bool:
        _, consumers = await asyncio.to_thread(
            queue_counts, services.environ["AMQP_URL"], services.names.queue
        )
        return consumers >= count

    await eventually(enough, timeout_s)


async def wait_task(
    services: Services, task_id: str, reached: Any, timeout_s: float = 30.0
) -> task_pb2.Task:
    found: list[task_pb2.Task] = []

    async def check() -> bool:
        found[:] = [await services.tasks.GetTask(task_pb2.GetTaskRequest(id=task_id))]
        return bool(reached(found[0]))

    await eventually(check, timeout_s)
    return found[0]


def seconds(value: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromMilliseconds(round(value * 1000))
    return duration


async def kill_round(services: Services, index: int) -> None:
    ids = [f"k{index}a", f"k{index}b"]
    for shipment_id in ids:
        await services.shipments.CreateShipment(
            shipment_pb2.CreateShipmentRequest(shipment=shipment_pb2.Shipment(id=shipment_id))
        )
    task = task_pb2.Task(
        type="transition", shipment_ids=ids, target_status="handling", work_duration=seconds(0.4)
    )
    submitted = await services.tasks.SubmitTask(task_pb2.SubmitTaskRequest(task=task))
    # Kill after the first shipment changed, while the worker waits on the second one.
    halfway = await wait_task(services, submitted.id, lambda t: t.progress_percent == 50)
    victim = services.workers.pop(halfway.worker)
    os.kill(victim.pid, signal.SIGKILL)
    await asyncio.to_thread(victim.wait)
    services.start_worker(f"worker-r{index}")
    done = await wait_task(services, submitted.id, lambda t: t.state == task_pb2.Task.SUCCEEDED)
    assert done.worker != halfway.worker
    assert done.attempts >= 2
    for shipment_id in ids:
        assert transitions_by_task(services.database_path, shipment_id, submitted.id) == 1


async def test_killed_worker_task_applied_once(tmp_path: Path, data_tier: DataTier) -> None:
    async with running_services(tmp_path, data_tier.redis_url, data_tier.amqp_url, {}) as services:
        for name in ("worker-a", "worker-b", "worker-c"):
            services.start_worker(name)
        for index in range(KILL_ROUNDS):
            await wait_consumers(services, 2)
            await kill_round(services, index)
        ready, _ = await asyncio.to_thread(queue_counts, data_tier.amqp_url, services.names.queue)
        assert ready == 0


async def submit_until(
    services: Services, stop: asyncio.Event, accepted: list[str], errors: list[grpc.StatusCode]
) -> None:
    task = task_pb2.Task(
        type="simulate", simulated_duration=task_pb2.DurationDistribution(fixed=seconds(0.2))
    )
    while not stop.is_set():
        try:
            submitted = await services.tasks.SubmitTask(
                task_pb2.SubmitTaskRequest(task=task), timeout=5
            )
        except grpc.aio.AioRpcError as error:
            errors.append(error.code())
        else:
            accepted.append(submitted.id)
        await asyncio.sleep(0.02)


@pytest.fixture
def private_data_tier(tmp_path: Path) -> Iterator[Stack]:
    """A Redis and RabbitMQ of this test only, so that restarting them disturbs no other test."""
    environ = base_environ()
    environ.pop("REDIS_URL", None)
    environ.pop("AMQP_URL", None)
    stack = Stack(load_topology().with_free_ports(), tmp_path / "data", environ, data_only=True)
    try:
        stack.up(timeout_s=60)
        yield stack
    finally:
        stack.down()


async def test_broker_restart_loses_nothing(tmp_path: Path, private_data_tier: Stack) -> None:
    stack = private_data_tier
    async with running_services(tmp_path, stack.redis_url, stack.amqp_url, {}) as services:
        services.start_worker("worker-a")
        await wait_consumers(services, 1)
        accepted: list[str] = []
        errors: list[grpc.StatusCode] = []
        stop = asyncio.Event()
        producer = asyncio.ensure_future(submit_until(services, stop, accepted, errors))
        await eventually(lambda: _at_least(accepted, 10))
        await asyncio.to_thread(stack.kill_process, "rabbitmq")
        await eventually(lambda: _at_least(accepted, 30))
        await asyncio.to_thread(stack.start_process, "rabbitmq")
        await asyncio.to_thread(stack.wait_ready, ["rabbitmq"], 60)
        await eventually(lambda: _at_least(accepted, 50))
        stop.set()
        await producer
        assert set(errors) <= {grpc.StatusCode.UNAVAILABLE}
        for task_id in accepted:
            done = await wait_task(
                services, task_id, lambda t: t.state == task_pb2.Task.SUCCEEDED, timeout_s=90
            )
            assert done.progress_percent == 100


async def _at_least(items: list[str], count: int) -> bool:
    return len(items) >= count


def test_worker_rejects_other_queue_arguments(data_tier: DataTier) -> None:
    names = TaskQueueNames(f"test-{uuid.uuid4().hex[:12]}")
    connection = pika.BlockingConnection(connection_parameters(data_tier.amqp_url))
    try:
        connection.channel().queue_declare(names.dead_letter_queue, durable=True)
    finally:
        connection.close()
    environ = {
        **os.environ,
        "AMQP_URL": data_tier.amqp_url,
        "REDIS_URL": data_tier.redis_url,
        "ENVIOS_TASK_NAMESPACE": names.namespace,
        "ENVIOS_DATABASE_URL": "sqlite:///:memory:",
    }
    try:
        result = subprocess.run(
            [sys.executable, "-m", "services.task.worker"],
            env=environ,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        delete_task_topology(data_tier.amqp_url, names)
    assert result.returncode == 2
    assert "inequivalent arg" in result.stderr
    assert names.dead_letter_queue in result.stderr
