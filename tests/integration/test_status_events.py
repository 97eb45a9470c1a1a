"""Transition events from the outbox relay through RabbitMQ and the projector into Redis.

The shipments are written with ``SqliteShipmentStore`` directly, without ShipmentService's
write-through, so the projector is the only writer of their cache entries. Each test's
projector consumes a queue of its own; the broker restart test runs a private data tier.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pika
import pytest
import redis
from pika.adapters.blocking_connection import BlockingChannel

from ops.stack import Stack
from ops.topology import load_topology
from services.common.cache import SHIPMENT_KEY, StatusCache
from services.common.database import Database, now_us
from services.common.outbox import OutboxRelay, declare_event_queues
from services.projector.config import ProjectorConfig
from services.projector.consumer import ProjectorConsumer
from services.shipment.domain import Change, ShipmentState
from services.shipment.store import SqliteShipmentStore
from services.status.metrics import ProjectorMetrics
from services.status.queries import SqliteStatusQueries
from services.status.reader import Source, StatusReader
from tests.conftest import DataTier, base_environ

pytestmark = pytest.mark.timeout(180)

EVENTS_TEST_REDIS_DB = 10
"""Redis logical database these tests flush; other users of the session Redis use others."""
DEADLINE_S = 30.0
"""Time the relay and the projector have to bring the cache up to the database."""


@dataclass
class Flow:
    """A database, a relay and a projector thread on one Redis and one RabbitMQ."""

    database_url: str
    amqp_url: str
    cache: StatusCache
    store: SqliteShipmentStore
    writer: Database
    consumer: ProjectorConsumer
    metrics: ProjectorMetrics

    async def create(self, shipment_id: str) -> None:
        now = now_us()
        state = ShipmentState(shipment_id, "pending", "", "", now, {"pending": now}, now, now, 1)
        await self.store.create(state, "", "")

    async def move(self, shipment_id: str, status: str, substatus: str = "") -> int:
        change = Change(status=status, substatus=substatus)
        view = await self.store.update(shipment_id, change, "", "", "")
        return view.state.version

    async def cached_version(self, shipment_id: str) -> int:
        entry = await self.cache.client.hgetall(SHIPMENT_KEY.format(shipment_id))
        return int(entry["version"]) if entry else 0

    async def database_versions(self) -> dict[str, int]:
        rows = await self.writer.run(
            lambda c: c.execute("SELECT id, version FROM shipments").fetchall()
        )
        return {row["id"]: row["version"] for row in rows}

    async def unsent(self) -> int:
        row = await self.writer.run(
            lambda c: c.execute("SELECT COUNT(*) FROM outbox WHERE sent_time_us IS NULL").fetchone()
        )
        return int(row[0])

    async def caught_up(self) -> bool:
        """Tell whether every row is sent and every cache entry has the database version."""
        if await self.unsent():
            return False
        for shipment_id, version in (await self.database_versions()).items():
            if await self.cached_version(shipment_id) != version:
                return False
        return True

    def count(self, outcome: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "envios_projector_events_total", {"outcome": outcome}
        )
        return value or 0.0


async def wait_for(condition: Callable[[], object], timeout_s: float = DEADLINE_S) -> None:
    """Poll the async ``condition`` until it returns true; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not await condition():  # type: ignore[misc]
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.05)


def projector_thread(consumer: ProjectorConsumer) -> threading.Thread:
    thread = threading.Thread(target=consumer.run, name="projector", daemon=True)
    thread.start()
    return thread


def declare_queue(amqp_url: str, queue: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        declare_event_queues(connection.channel(), queue)
    finally:
        connection.close()


def delete_queue(amqp_url: str, queue: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        connection.channel().queue_delete(queue)
    finally:
        connection.close()


@asynccontextmanager
async def event_flow(
    tmp_path: Path, redis_url: str, amqp_url: str, queue: str | None = None
) -> AsyncIterator[Flow]:
    """Run a projector on ``queue`` (a fresh one by default); the caller runs relays."""
    database_url = f"sqlite:///{tmp_path}/envios.db"
    queue = queue or f"envios.status-test.{uuid.uuid4().hex}"
    environ = {
        "ENVIOS_DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "AMQP_URL": amqp_url,
        "ENVIOS_PROJECTOR_QUEUE": queue,
    }
    # Bound before any relay runs: the exchange drops events that match no queue yet.
    await asyncio.to_thread(declare_queue, amqp_url, queue)
    metrics = ProjectorMetrics()
    consumer = ProjectorConsumer(ProjectorConfig.from_env(environ), metrics)
    writer = Database(database_url)
    await writer.open()
    thread = projector_thread(consumer)
    cache = StatusCache(redis_url)
    try:
        yield Flow(
            database_url, amqp_url, cache, SqliteShipmentStore(writer), writer, consumer, metrics
        )
    finally:
        consumer.stop()
        await asyncio.to_thread(thread.join, 15)
        await cache.close()
        await writer.close()
        if not queue.startswith("envios.status.events"):
            delete_queue(amqp_url, queue)


@pytest.fixture
def redis_url(data_tier: DataTier) -> str:
    url = urlsplit(data_tier.redis_url)._replace(path=f"/{EVENTS_TEST_REDIS_DB}").geturl()
    with redis.Redis.from_url(url) as client:
        client.flushdb()
    return url


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def test_transition_served_from_cache(
    tmp_path: Path, redis_url: str, data_tier: DataTier
) -> None:
    async with event_flow(tmp_path, redis_url, data_tier.amqp_url) as flow:
        relay = OutboxRelay(flow.database_url, data_tier.amqp_url, "relay-a", lease_s=1.0)
        relay.start()
        try:
            shipment_id = unique("served")
            await flow.create(shipment_id)
            await flow.move(shipment_id, "handling", "picking")
            relay.notify()
            await wait_for(flow.caught_up)
        finally:
            relay.stop()

        reader = StatusReader(flow.cache, SqliteStatusQueries(flow.writer))
        read = await reader.shipment(shipment_id)
        from_database = await SqliteStatusQueries(flow.writer).shipment(shipment_id)

    assert read.source is Source.CACHE
    assert read.value == from_database
    assert read.value is not None
    assert (read.value.status, read.value.substatus, read.value.version) == (
        "handling",
        "picking",
        2,
    )


def publish(channel: BlockingChannel, queue: str, message_id: str, body: dict[str, object]) -> None:
    channel.basic_publish(
        "",
        queue,
        json.dumps(body).encode(),
        pika.BasicProperties(message_id=message_id, delivery_mode=pika.DeliveryMode.Persistent),
    )


async def test_projector_duplicates_out_of_order(
    tmp_path: Path, redis_url: str, data_tier: DataTier
) -> None:
    queue = f"envios.status-test.{uuid.uuid4().hex}"
    async with event_flow(tmp_path, redis_url, data_tier.amqp_url, queue) as flow:
        shipment_id = unique("dup")
        await flow.create(shipment_id)
        await flow.move(shipment_id, "handling")
        await flow.move(shipment_id, "ready_to_ship")
        events = [("e3", 3), ("e1", 1), ("e3", 3), ("e2", 2), ("e1", 1)]
        connection = pika.BlockingConnection(pika.URLParameters(data_tier.amqp_url))
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            declare_event_queues(channel, queue)
            for event_id, version in events:
                body = {"shipment_id": shipment_id, "version": version, "record_time_us": now_us()}
                publish(channel, queue, f"{shipment_id}-{event_id}", body)
        finally:
            connection.close()
        await wait_for(lambda: _handled(flow, len(events)))
        entry = await flow.cache.client.hgetall(SHIPMENT_KEY.format(shipment_id))

    assert entry["version"] == "3"
    assert entry["status"] == "ready_to_ship"
    assert flow.count("applied") == 1
    assert flow.count("current") == 2
    assert flow.count("duplicate") == 2


async def _handled(flow: Flow, count: int) -> bool:
    return flow.consumer.handled >= count


async def _distinct_handled(flow: Flow, count: int) -> bool:
    """Tell whether ``count`` distinct events were handled (duplicates excluded).

    The cache can reach the newest version before the last events are handled, because
    the projector writes the current row, which may be newer than the event.
    """
    return flow.count("applied") + flow.count("current") >= count


async def test_cache_put_keeps_newer_version(redis_url: str) -> None:
    cache = StatusCache(redis_url)
    key = SHIPMENT_KEY.format(unique("guard"))
    try:
        assert await cache.put(key, 3, {"status": "shipped"})
        assert not await cache.put(key, 2, {"status": "handling"})
        assert not await cache.put(key, 3, {"status": "handling"})
        entry = await cache.get(key)
    finally:
        await cache.close()
    assert entry == {"version": "3", "status": "shipped"}


class CrashingRelay(OutboxRelay):
    """A relay that dies right after its first confirmed publish, before marking the row
    sent and without releasing its lease, as a killed process would."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.crashed = threading.Event()

    def _mark_sent(self, database: object, row: object) -> None:
        self._stop.set()
        self.crashed.set()

    def _release_quietly(self, database: object) -> None:
        return None


async def test_relay_crash_before_mark_republishes(
    tmp_path: Path, redis_url: str, data_tier: DataTier
) -> None:
    async with event_flow(tmp_path, redis_url, data_tier.amqp_url) as flow:
        shipment_ids = [unique("crash") for _ in range(3)]
        for shipment_id in shipment_ids:
            await flow.create(shipment_id)
            await flow.move(shipment_id, "handling")
        crashing = CrashingRelay(flow.database_url, data_tier.amqp_url, "relay-crash", lease_s=1.0)
        crashing.start()
        assert await asyncio.to_thread(crashing.crashed.wait, 15)
        crashing.stop()
        assert await flow.unsent() == 6

        successor = OutboxRelay(flow.database_url, data_tier.amqp_url, "relay-b", lease_s=1.0)
        successor.start()
        try:
            await wait_for(flow.caught_up)
            await wait_for(lambda: _handled(flow, 7))
        finally:
            successor.stop()

    assert crashing.published == 1
    assert successor.published == 6
    assert flow.count("duplicate") == 1
    assert flow.count("applied") + flow.count("current") == 6


async def test_relays_share_lease(tmp_path: Path, redis_url: str, data_tier: DataTier) -> None:
    async with event_flow(tmp_path, redis_url, data_tier.amqp_url) as flow:
        relays = [
            # The default 5 s lease: a shorter one can lapse on a loaded machine and move.
            OutboxRelay(flow.database_url, data_tier.amqp_url, f"relay-{n}")
            for n in range(3)
        ]
        for relay in relays:
            relay.start()
        try:
            shipment_id = unique("order")
            await flow.create(shipment_id)
            for status in ("handling", "ready_to_ship", "shipped", "delivered"):
                await flow.move(shipment_id, status)
                for relay in relays:
                    relay.notify()
            await wait_for(flow.caught_up)
            await wait_for(lambda: _distinct_handled(flow, 5))
        finally:
            for relay in relays:
                relay.stop()
        rows = await flow.writer.run(
            lambda c: c.execute("SELECT seq, sent_time_us FROM outbox ORDER BY seq").fetchall()
        )

    sent_times = [row["sent_time_us"] for row in rows]
    assert sent_times == sorted(sent_times)
    assert sorted(relay.published for relay in relays) == [0, 0, 5]
    assert flow.count("applied") + flow.count("current") == 5


async def test_broker_restart_loses_nothing(tmp_path: Path) -> None:
    environ = base_environ()
    environ.pop("REDIS_URL", None)
    environ.pop("AMQP_URL", None)
    tier = Stack(load_topology().with_free_ports(), tmp_path / "tier", environ, data_only=True)
    await asyncio.to_thread(tier.up, 60.0)
    try:
        async with event_flow(
            tmp_path, tier.redis_url, tier.amqp_url, "envios.status.events"
        ) as flow:
            relay = OutboxRelay(flow.database_url, tier.amqp_url, "relay-r", lease_s=1.0)
            relay.start()
            try:
                await _transitions_across_restart(flow, tier)
            finally:
                relay.stop()
    finally:
        await asyncio.to_thread(tier.down)


async def _transitions_across_restart(flow: Flow, tier: Stack) -> None:
    shipment_ids = [unique("restart") for _ in range(5)]
    for shipment_id in shipment_ids:
        await flow.create(shipment_id)
    await wait_for(flow.caught_up)

    await asyncio.to_thread(tier.kill_process, "rabbitmq", signal.SIGKILL)
    for shipment_id in shipment_ids:
        await flow.move(shipment_id, "handling")
    assert await flow.unsent() == 5

    await asyncio.to_thread(tier.start_process, "rabbitmq")
    await asyncio.to_thread(tier.wait_ready, ["rabbitmq"], 60.0)
    for shipment_id in shipment_ids:
        await flow.move(shipment_id, "ready_to_ship")
    await wait_for(flow.caught_up, timeout_s=60.0)
    await wait_for(lambda: _distinct_handled(flow, 15))

    for shipment_id in shipment_ids:
        assert await flow.cached_version(shipment_id) == 3
    assert flow.count("applied") + flow.count("current") == 15
    assert flow.count("malformed") == 0
