"""StatusService over real gRPC on port 0, with a real SQLite file.

Most tests use the session's Redis and RabbitMQ (the ``data_tier`` fixture); the tests
that stop or pause Redis start a private redis-server of their own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import pika
import pytest
import redis
from envios.status.v1 import status_pb2 as pb
from envios.status.v1 import status_pb2_grpc
from envios.task.v1 import task_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from ops.topology import free_ports
from services.common.cache import SHIPMENT_KEY, TASK_KEY, StatusCache
from services.common.cache_outages import OutageLog, read_outages
from services.common.database import Database, now_us
from services.common.server import GrpcServer
from services.shipment.app import CachingStore
from services.shipment.app import cache_fields as shipment_cache_fields
from services.shipment.domain import Change, ShipmentState
from services.shipment.store import ShipmentView, SqliteShipmentStore
from services.status.app import SERVICE_NAME, StatusApp
from services.status.config import StatusConfig
from services.status.overview import UNKNOWN_DEPTH, QueueDepthProbe
from services.status.reader import Cache, Queries
from services.status.servicer import SOURCE_HEADER
from services.status.views import ShipmentStatusView, TaskStatusView
from services.task.executor import cache_fields as task_cache_fields
from services.task.model import StepResult, TaskInput, TaskRecord
from tests.conftest import DataTier

# The first test also waits for the session's RabbitMQ to boot.
pytestmark = pytest.mark.timeout(120)

REDIS_SERVER = shutil.which("redis-server") or "/usr/sbin/redis-server"
START_TIMEOUT_S = 10.0
STATUS_TEST_REDIS_DB = 9
"""Redis logical database these tests flush; the other users of the session Redis use 0."""
FALLBACK_BOUND_S = 1.0
"""Maximum duration of a read while Redis is stopped or silent, in seconds."""


class RedisProcess:
    """A private redis-server on a free loopback port, without persistence."""

    def __init__(self, directory: Path) -> None:
        self.port = free_ports(1)[0]
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self.directory)]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        client = redis.Redis(port=self.port, socket_timeout=0.5)
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if time.monotonic() > deadline or self.process.poll() is not None:
                        raise
                    time.sleep(0.05)
        finally:
            client.close()

    def pause(self) -> None:
        """Stop the process without closing its sockets, so clients time out."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process is None:
            return
        self.resume()
        self.process.terminate()
        self.process.wait(timeout=10)
        self.process = None


@pytest.fixture
def redis_url(data_tier: DataTier) -> str:
    """The session Redis, on a logical database of its own that starts empty."""
    url = urlsplit(data_tier.redis_url)._replace(path=f"/{STATUS_TEST_REDIS_DB}").geturl()
    with redis.Redis.from_url(url) as client:
        client.flushdb()
    return url


@contextmanager
def private_queue(amqp_url: str, messages: int) -> Iterator[str]:
    """Declare a queue of this test holding ``messages`` messages; delete it afterwards."""
    name = f"envios.status-test.{uuid.uuid4().hex}"
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.queue_declare(name)
        for number in range(messages):
            channel.basic_publish("", name, str(number).encode())
        yield name
        channel.queue_delete(name)
    finally:
        connection.close()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A Redis for one test that stops or pauses it."""
    if not os.path.exists(REDIS_SERVER):
        pytest.skip("redis-server is not installed")
    server = RedisProcess(tmp_path)
    server.start()
    yield server
    server.stop()


@dataclass
class Service:
    stub: Any
    channel: grpc.aio.Channel
    app: StatusApp
    writer: Database
    shipments: SqliteShipmentStore
    cache: StatusCache

    async def create_shipment(self, shipment_id: str, status_time_us: int = 0) -> None:
        now = now_us()
        entered = status_time_us or now
        state = ShipmentState(
            id=shipment_id,
            status="pending",
            substatus="",
            tracking_number="",
            status_time_us=entered,
            status_times_us={"pending": entered},
            create_time_us=now,
            update_time_us=now,
            version=1,
        )
        await self.shipments.create(state, "", "")

    async def move(self, shipment_id: str, status: str, substatus: str = "") -> ShipmentView:
        change = Change(status=status, substatus=substatus)
        return await self.shipments.update(shipment_id, change, "", "", "")

    async def insert_task(
        self, task_id: str, state: str, progress: int = 0, results: list[StepResult] | None = None
    ) -> None:
        text = json.dumps([dataclasses.asdict(result) for result in results or []])
        now = now_us()
        await self.writer.transaction(
            lambda c: c.execute(
                "INSERT INTO tasks (id, type, input, state, progress_percent, results,"
                " create_time_us, update_time_us, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)",
                (task_id, "transition", "{}", state, progress, text, now, now),
            )
        )


@asynccontextmanager
async def running_service(
    tmp_path: Path, redis_url: str, extra: Mapping[str, str] | None = None
) -> AsyncIterator[Service]:
    database_url = f"sqlite:///{tmp_path}/envios.db"
    environ = {
        "ENVIOS_DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        # A closed port: the queue depth probe fails and reports -1.
        "AMQP_URL": f"amqp://guest:guest@127.0.0.1:{free_ports(1)[0]}/%2F",
        "ENVIOS_DRAIN_S": "0",
        "ENVIOS_SHUTDOWN_GRACE_S": "1",
        **(extra or {}),
    }
    config = StatusConfig.from_env(environ)
    app = StatusApp(config)
    server = GrpcServer(config.server, app)
    writer = Database(database_url)
    cache = StatusCache(redis_url)
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = status_pb2_grpc.StatusServiceStub(channel)
            yield Service(stub, channel, app, writer, SqliteShipmentStore(writer), cache)
    finally:
        await server.stop()
        await cache.close()
        await writer.close()


@pytest.fixture
async def service(tmp_path: Path, redis_url: str) -> AsyncIterator[Service]:
    async with running_service(tmp_path, redis_url, {"ENVIOS_SITE": "secondary"}) as running:
        yield running


async def call_with_source(method: Any, request: Any) -> tuple[Any, str | None]:
    """Call a unary method; return the response and its ``x-envios-source`` header."""
    call = method(request)
    metadata = await call.initial_metadata()
    response = await call
    return response, metadata.get(SOURCE_HEADER)


def rich_status(error: grpc.aio.AioRpcError) -> tuple[Any, ...]:
    """Return the ErrorInfo and the BadRequest (or None) of a failed call."""
    status = rpc_status.from_call(error)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    bad_request = None
    if len(status.details) > 1:
        bad_request = error_details_pb2.BadRequest()
        assert status.details[1].Unpack(bad_request)
    return info, bad_request


async def test_shipment_status_database_then_cache(service: Service) -> None:
    await service.create_shipment("s1", status_time_us=1_700_000_000_123_456)
    view = await service.move("s1", "handling", "picking")
    request = pb.GetShipmentStatusRequest(shipment_id="s1")

    first, first_source = await call_with_source(service.stub.GetShipmentStatus, request)
    second, second_source = await call_with_source(service.stub.GetShipmentStatus, request)

    assert first_source == "database"
    assert first.source == pb.SOURCE_DATABASE
    assert second_source == "cache"
    assert second.source == pb.SOURCE_CACHE
    assert first.status == "handling"
    assert first.substatus == "picking"
    assert first.etag == view.state.etag == 'W/"2"'
    assert first.update_time.ToMicroseconds() == view.state.update_time_us
    assert first.status_time.ToMicroseconds() == view.state.status_time_us
    second.source = first.source
    assert second == first
    entry = await service.cache.client.hgetall(SHIPMENT_KEY.format("s1"))
    assert entry["version"] == "2"


async def test_shipment_status_reads_writer_entry(service: Service) -> None:
    await service.create_shipment("s1")
    # ShipmentService writes its own entries; a newer one wins over the database row.
    view = await service.move("s1", "handling")
    newer = dataclasses.replace(view.state, status="ready_to_ship", version=3)
    key = SHIPMENT_KEY.format("s1")
    await service.cache.put(key, 3, shipment_cache_fields(ShipmentView(newer, [])))

    status, source = await call_with_source(
        service.stub.GetShipmentStatus, pb.GetShipmentStatusRequest(shipment_id="s1")
    )
    assert source == "cache"
    assert status.status == "ready_to_ship"
    assert status.etag == 'W/"3"'


async def test_task_status_database_then_cache(service: Service) -> None:
    results = [
        StepResult("s1", True, "shipped"),
        StepResult("s2", False, "pending", 9, "cannot change status"),
    ]
    await service.insert_task("t1", "RUNNING", 50, results)
    request = pb.GetTaskStatusRequest(task_id="t1")

    first, first_source = await call_with_source(service.stub.GetTaskStatus, request)
    second, second_source = await call_with_source(service.stub.GetTaskStatus, request)

    assert (first_source, second_source) == ("database", "cache")
    assert first.state == task_pb2.Task.RUNNING
    assert first.progress_percent == 50
    assert [result.shipment_id for result in first.results] == ["s1", "s2"]
    assert first.results[0].ok
    assert not first.results[0].HasField("error")
    assert first.results[1].error.code == 9
    assert first.results[1].error.message == "cannot change status"
    second.source = first.source
    assert second == first


async def test_task_status_reads_worker_entry(service: Service) -> None:
    await service.insert_task("t1", "QUEUED")
    record = TaskRecord(
        id="t1",
        type="transition",
        input=TaskInput(("s1",), "shipped"),
        state="SUCCEEDED",
        progress_percent=100,
        results=[StepResult("s1", True, "shipped")],
        update_time_us=now_us(),
        version=4,
    )
    await service.cache.put(TASK_KEY.format("t1"), 4, task_cache_fields(record))

    status, source = await call_with_source(
        service.stub.GetTaskStatus, pb.GetTaskStatusRequest(task_id="t1")
    )
    assert source == "cache"
    assert status.state == task_pb2.Task.SUCCEEDED
    assert status.progress_percent == 100
    assert status.results[0].status == "shipped"


async def test_shipment_status_not_found(service: Service) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await service.stub.GetShipmentStatus(pb.GetShipmentStatusRequest(shipment_id="nope"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    info, _ = rich_status(raised.value)
    assert info.reason == "SHIPMENT_NOT_FOUND"
    assert info.metadata["id"] == "nope"
    assert SOURCE_HEADER not in dict(raised.value.initial_metadata() or ())


async def test_task_status_not_found(service: Service) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await service.stub.GetTaskStatus(pb.GetTaskStatusRequest(task_id="nope"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    info, _ = rich_status(raised.value)
    assert info.reason == "TASK_NOT_FOUND"


@pytest.mark.parametrize("shipment_id", ["", "bad id", "x" * 65])
async def test_shipment_status_invalid_id(service: Service, shipment_id: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await service.stub.GetShipmentStatus(pb.GetShipmentStatusRequest(shipment_id=shipment_id))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, bad_request = rich_status(raised.value)
    assert info.reason == "INVALID_ARGUMENT"
    assert [v.field for v in bad_request.field_violations] == ["shipment_id"]


async def test_task_status_invalid_id(service: Service) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await service.stub.GetTaskStatus(pb.GetTaskStatusRequest(task_id="../t1"))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, bad_request = rich_status(raised.value)
    assert [v.field for v in bad_request.field_violations] == ["task_id"]


async def test_batch_keeps_order_and_missing(service: Service) -> None:
    for shipment_id in ("a", "b"):
        await service.create_shipment(shipment_id)
    await service.move("b", "handling")
    await service.insert_task("t1", "QUEUED")
    request = pb.BatchGetStatusRequest(
        shipment_ids=["b", "gone1", "a", "gone2"], task_ids=["missing", "t1"]
    )

    response, source = await call_with_source(service.stub.BatchGetStatus, request)

    assert source == "database"
    assert [s.shipment_id for s in response.shipments] == ["b", "a"]
    assert [s.status for s in response.shipments] == ["handling", "pending"]
    assert list(response.missing_shipment_ids) == ["gone1", "gone2"]
    assert [t.task_id for t in response.tasks] == ["t1"]
    assert list(response.missing_task_ids) == ["missing"]

    # Unknown ids are cached briefly as "not found", so the whole batch comes from Redis.
    again, again_source = await call_with_source(service.stub.BatchGetStatus, request)
    assert again_source == "cache"
    assert {s.source for s in again.shipments} == {pb.SOURCE_CACHE}
    assert list(again.missing_shipment_ids) == ["gone1", "gone2"]
    assert list(again.missing_task_ids) == ["missing"]
    found = pb.BatchGetStatusRequest(shipment_ids=["a", "b"], task_ids=["t1"])
    _, found_source = await call_with_source(service.stub.BatchGetStatus, found)
    assert found_source == "cache"


async def test_batch_limit_100_ids(service: Service) -> None:
    at_limit = pb.BatchGetStatusRequest(
        shipment_ids=[f"s{i}" for i in range(60)], task_ids=[f"t{i}" for i in range(40)]
    )
    response = await service.stub.BatchGetStatus(at_limit)
    assert len(response.missing_shipment_ids) == 60
    assert len(response.missing_task_ids) == 40

    over = pb.BatchGetStatusRequest(
        shipment_ids=[f"s{i}" for i in range(60)], task_ids=[f"t{i}" for i in range(41)]
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await service.stub.BatchGetStatus(over)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, bad_request = rich_status(raised.value)
    assert info.reason == "INVALID_ARGUMENT"
    assert "101" in bad_request.field_violations[0].description


async def test_batch_invalid_id(service: Service) -> None:
    request = pb.BatchGetStatusRequest(shipment_ids=["ok"], task_ids=["t1", "no way"])
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await service.stub.BatchGetStatus(request)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, bad_request = rich_status(raised.value)
    assert [v.field for v in bad_request.field_violations] == ["task_ids[1]"]


async def test_overview_counts(service: Service) -> None:
    for shipment_id in ("a", "b", "c"):
        await service.create_shipment(shipment_id)
    await service.move("c", "handling")
    states = ["QUEUED", "QUEUED", "RUNNING", "RETRYING", "SUCCEEDED", "FAILED"]
    for number, state in enumerate(states):
        await service.insert_task(f"t{number}", state)
    before_us = now_us()

    overview, source = await call_with_source(service.stub.GetOverview, pb.GetOverviewRequest())

    assert source == "database"
    assert overview.shipments_by_status["pending"] == 2
    assert overview.shipments_by_status["handling"] == 1
    assert overview.shipments_by_status["delivered"] == 0
    assert dict(overview.tasks_by_state) == {
        "QUEUED": 2,
        "RUNNING": 1,
        "RETRYING": 1,
        "SUCCEEDED": 1,
        "FAILED": 1,
        "CANCELLED": 0,
    }
    assert overview.tasks_in_flight == 4
    assert overview.queue_depth == -1
    assert overview.serving_site == "secondary"
    assert overview.compute_time.ToMicroseconds() >= before_us


async def test_overview_queue_depth(tmp_path: Path, data_tier: DataTier, redis_url: str) -> None:
    extra = {"AMQP_URL": data_tier.amqp_url}
    async with running_service(tmp_path, redis_url, extra) as service:
        with private_queue(data_tier.amqp_url, messages=3) as queue:
            service.app.queue_probe.queue = queue
            overview = await service.stub.GetOverview(pb.GetOverviewRequest())
    assert overview.queue_depth == 3


async def test_queue_probe_missing_queue(data_tier: DataTier) -> None:
    absent = f"envios.status-test.absent-{uuid.uuid4().hex}"
    probe = QueueDepthProbe(data_tier.amqp_url, queue=absent)
    assert await probe.depth() == UNKNOWN_DEPTH


class CountingCache:
    """Cache wrapper that opens ``gate`` once ``expected`` reads have returned."""

    def __init__(self, inner: Cache, expected: int, gate: asyncio.Event) -> None:
        self.inner = inner
        self.expected = expected
        self.gate = gate
        self.gets = 0

    async def get(self, key: str) -> dict[str, str] | None:
        fields = await self.inner.get(key)
        self.gets += 1
        if self.gets == self.expected:
            self.gate.set()
        return fields

    async def put(
        self,
        key: str,
        version: int,
        fields: Mapping[str, str | int],
        *,
        ttl_s: float | None = None,
    ) -> bool:
        return await self.inner.put(key, version, fields, ttl_s=ttl_s)


class GatedQueries:
    """Database wrapper that counts reads and blocks each until ``gate`` opens."""

    def __init__(self, inner: Queries, gate: asyncio.Event) -> None:
        self.inner = inner
        self.gate = gate
        self.reads = 0

    async def shipment(self, shipment_id: str) -> ShipmentStatusView | None:
        self.reads += 1
        await self.gate.wait()
        return await self.inner.shipment(shipment_id)

    async def task(self, task_id: str) -> TaskStatusView | None:
        self.reads += 1
        await self.gate.wait()
        return await self.inner.task(task_id)


async def test_concurrent_misses_single_read(service: Service) -> None:
    await service.create_shipment("s1")
    callers = 20
    # Every caller has seen the miss before the one database read may finish.
    gate = asyncio.Event()
    reader = service.app.reader
    reader.cache = CountingCache(reader.cache, callers, gate)
    queries = GatedQueries(reader.queries, gate)
    reader.queries = queries
    request = pb.GetShipmentStatusRequest(shipment_id="s1")

    answers = await asyncio.gather(
        *(call_with_source(service.stub.GetShipmentStatus, request) for _ in range(callers))
    )

    assert queries.reads == 1
    assert {source for _, source in answers} == {"database"}
    assert {status.etag for status, _ in answers} == {'W/"1"'}


async def test_fallback_when_redis_stopped(tmp_path: Path, own_redis: RedisProcess) -> None:
    async with running_service(tmp_path, own_redis.url) as service:
        await service.create_shipment("s1")
        request = pb.GetShipmentStatusRequest(shipment_id="s1")
        _, source = await call_with_source(service.stub.GetShipmentStatus, request)
        assert source == "database"

        own_redis.stop()
        await service.move("s1", "handling")
        began = time.monotonic()
        status, source = await call_with_source(service.stub.GetShipmentStatus, request)
        elapsed = time.monotonic() - began

        assert source == "fallback"
        assert status.source == pb.SOURCE_FALLBACK
        assert status.status == "handling"
        assert status.etag == 'W/"2"'
        assert elapsed < FALLBACK_BOUND_S


async def test_fallback_when_redis_silent(tmp_path: Path, own_redis: RedisProcess) -> None:
    async with running_service(tmp_path, own_redis.url) as service:
        await service.insert_task("t1", "RUNNING", 10)
        request = pb.GetTaskStatusRequest(task_id="t1")
        _, source = await call_with_source(service.stub.GetTaskStatus, request)
        assert source == "database"

        own_redis.pause()
        try:
            for _ in range(3):
                began = time.monotonic()
                status, source = await call_with_source(service.stub.GetTaskStatus, request)
                elapsed = time.monotonic() - began
                assert source == "fallback"
                assert status.progress_percent == 10
                assert elapsed < FALLBACK_BOUND_S
        finally:
            own_redis.resume()


async def test_serving_without_redis(tmp_path: Path) -> None:
    closed_port = free_ports(1)[0]
    async with running_service(tmp_path, f"redis://127.0.0.1:{closed_port}/0") as service:
        health = health_pb2_grpc.HealthStub(service.channel)
        answer = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING

        await service.create_shipment("s1")
        status, source = await call_with_source(
            service.stub.GetShipmentStatus, pb.GetShipmentStatusRequest(shipment_id="s1")
        )
        assert source == "fallback"
        assert status.status == "pending"


@contextmanager
def silent_listener() -> Iterator[str]:
    """Yield the URL of a socket that accepts TCP connections but never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        # The kernel completes handshakes into the backlog; nothing ever reads or writes.
        listener.listen(1024)
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"


async def timed_read(service: Service, shipment_id: str) -> tuple[Any, str | None, float]:
    request = pb.GetShipmentStatusRequest(shipment_id=shipment_id)
    began = time.monotonic()
    status, source = await call_with_source(service.stub.GetShipmentStatus, request)
    return status, source, time.monotonic() - began


async def test_fallback_when_listener_never_answers(tmp_path: Path) -> None:
    with silent_listener() as url:
        async with running_service(tmp_path, url) as service:
            await service.create_shipment("s1")
            health = health_pb2_grpc.HealthStub(service.channel)
            deadline = time.monotonic() + 2.5
            reads = 0
            # Spans more than one Redis retry period, so some reads pay the timeout again.
            while time.monotonic() < deadline or reads < 3:
                status, source, elapsed = await timed_read(service, "s1")
                reads += 1
                assert source == "fallback"
                assert status.status == "pending"
                assert elapsed < FALLBACK_BOUND_S
            answer = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
            registry = service.app.metrics.registry
            fallbacks = registry.get_sample_value("envios_status_fallbacks_total")

    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    assert fallbacks == reads


async def test_redis_restarted_between_reads(tmp_path: Path, own_redis: RedisProcess) -> None:
    extra = {"ENVIOS_CACHE_VERIFY_S": "1"}
    async with running_service(tmp_path, own_redis.url, extra) as service:
        await service.create_shipment("s1")
        await timed_read(service, "s1")
        _, source, _ = await timed_read(service, "s1")
        assert source == "cache"

        own_redis.stop()
        await service.move("s1", "handling")
        status, source, elapsed = await timed_read(service, "s1")
        assert (status.status, source) == ("handling", "fallback")
        assert elapsed < FALLBACK_BOUND_S

        own_redis.start()
        await service.move("s1", "ready_to_ship")
        sources = await reads_until_cache(service, "s1", "ready_to_ship")

    assert sources[-1] == "cache"


async def reads_until_cache(service: Service, shipment_id: str, expected: str) -> list[str]:
    """Read until the cache answers; every read on the way must return ``expected``."""
    sources: list[str] = []
    deadline = time.monotonic() + 15.0
    while not sources or sources[-1] != "cache":
        assert time.monotonic() < deadline, f"no cache hit within 15 s: {sources}"
        status, source, elapsed = await timed_read(service, shipment_id)
        assert status.status == expected, sources
        assert elapsed < FALLBACK_BOUND_S
        sources.append(str(source))
        await asyncio.sleep(0.05)
    return sources


async def test_no_stale_entry_after_pause(tmp_path: Path, own_redis: RedisProcess) -> None:
    extra = {"ENVIOS_CACHE_VERIFY_S": "1"}
    async with running_service(tmp_path, own_redis.url, extra) as service:
        await service.create_shipment("s1")
        await timed_read(service, "s1")
        own_redis.pause()
        try:
            _, source, _ = await timed_read(service, "s1")
            assert source == "fallback"
            # Commits while Redis is away leave the version 1 entry behind in Redis.
            await service.move("s1", "handling")
        finally:
            own_redis.resume()
        sources = await reads_until_cache(service, "s1", "handling")

        entry = await service.cache.client.hgetall(SHIPMENT_KEY.format("s1"))

    assert "database" in sources
    assert entry["version"] == "2"


async def test_writer_outage_verifies_idle_reader(tmp_path: Path, redis_url: str) -> None:
    """A reader that got no read while a writer could not reach Redis never serves the
    entry that the writer failed to replace."""
    extra = {"ENVIOS_CACHE_VERIFY_S": "2", "ENVIOS_CACHE_OUTAGE_POLL_S": "0.05"}
    async with running_service(tmp_path, redis_url, extra) as service:
        outages = OutageLog(service.writer, "shipment-test-1", service.cache, probe_s=0.05)
        await service.create_shipment("s1")
        _, source, _ = await timed_read(service, "s1")
        assert source == "database"
        with silent_listener() as unreachable:
            lost = StatusCache(unreachable, timeout_s=0.1)
            writer = CachingStore(service.shipments, lost, None, outages)
            await writer.update("s1", Change(status="handling"), "", "", "")
            await lost.close()
        await wait_for(lambda: outage_closed(service.writer), "the outage to close")
        await wait_for(async_true(service.app.reader.verifying), "the reader to verify")
        status, source, _ = await timed_read(service, "s1")
        await outages.close()
        entry = await service.cache.client.hgetall(SHIPMENT_KEY.format("s1"))

    assert status.status == "handling"
    assert source == "database"
    assert entry["version"] == "2"


async def outage_closed(database: Database) -> bool:
    state = await read_outages(database)
    return not state.open and state.last_closed_us is not None


def async_true(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def wrapped() -> bool:
        return check()

    return wrapped


async def wait_for(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        await asyncio.sleep(0.02)


async def test_cold_key_1000_reads(tmp_path: Path, redis_url: str) -> None:
    # 1000 reads share 64 Redis connections. On a loaded machine a read can wait longer
    # than the default 0.25 s for one, fall back and read the database after the shared
    # read has finished, so the Redis timeout here is long enough that none times out.
    extra = {"ENVIOS_MAX_CONCURRENT_RPCS": "2000", "ENVIOS_REDIS_TIMEOUT_S": "5"}
    async with running_service(tmp_path, redis_url, extra) as service:
        await service.create_shipment("cold")
        request = pb.GetShipmentStatusRequest(shipment_id="cold")
        answers = await asyncio.gather(
            *(service.stub.GetShipmentStatus(request) for _ in range(1000))
        )
        registry = service.app.metrics.registry
        database_reads = registry.get_sample_value("envios_status_database_reads_total")

    assert {answer.status for answer in answers} == {"pending"}
    assert database_reads is not None
    assert database_reads <= 5
