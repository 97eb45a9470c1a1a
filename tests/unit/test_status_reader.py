"""Unit tests of services.status.reader with an in-memory cache and database."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Mapping

import pytest

from services.common.cache import CacheUnavailable
from services.common.errors import Unavailable
from services.status.reader import Source, StatusReader
from services.status.views import (
    ShipmentResult,
    ShipmentStatusView,
    TaskStatusView,
    shipment_fields,
)

SHIPMENT = ShipmentStatusView(
    shipment_id="s1",
    status="handling",
    substatus="picking",
    status_time_us=1_700_000_000_000_000,
    update_time_us=1_700_000_100_000_000,
    etag='W/"2"',
    version=2,
)
TASK = TaskStatusView(
    task_id="t1",
    state="RUNNING",
    progress_percent=50,
    results=(
        ShipmentResult("s1", True, "shipped"),
        ShipmentResult("s2", False, "pending", 9, "cannot change status"),
    ),
    update_time_us=1_700_000_200_000_000,
    version=3,
)


class FakeCache:
    """Dict-backed cache that can be switched off to raise CacheUnavailable."""

    def __init__(self) -> None:
        self.entries: dict[str, dict[str, str]] = {}
        self.down = False
        self.gets = 0
        self.puts: list[tuple[str, int]] = []
        self.ttls: dict[str, float | None] = {}

    async def get(self, key: str) -> dict[str, str] | None:
        self.gets += 1
        if self.down:
            raise CacheUnavailable("connection refused")
        return self.entries.get(key)

    async def put(
        self,
        key: str,
        version: int,
        fields: Mapping[str, str | int],
        *,
        ttl_s: float | None = None,
    ) -> bool:
        if self.down:
            raise CacheUnavailable("connection refused")
        current = self.entries.get(key)
        if current is not None and int(current["version"]) >= version:
            return False
        self.puts.append((key, version))
        self.ttls[key] = ttl_s
        self.entries[key] = {"version": str(version), **{k: str(v) for k, v in fields.items()}}
        return True


class FakeQueries:
    """Rows in dicts; reads can be held on a gate or made to fail."""

    def __init__(self) -> None:
        self.shipments = {SHIPMENT.shipment_id: SHIPMENT}
        self.tasks = {TASK.task_id: TASK}
        self.reads = 0
        self.gate: asyncio.Event | None = None
        self.error: Exception | None = None

    async def shipment(self, shipment_id: str) -> ShipmentStatusView | None:
        await self._enter()
        return self.shipments.get(shipment_id)

    async def task(self, task_id: str) -> TaskStatusView | None:
        await self._enter()
        return self.tasks.get(task_id)

    async def _enter(self) -> None:
        self.reads += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def cache() -> FakeCache:
    return FakeCache()


@pytest.fixture
def queries() -> FakeQueries:
    return FakeQueries()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def reader(cache: FakeCache, queries: FakeQueries, clock: FakeClock) -> StatusReader:
    return StatusReader(cache, queries, cache_retry_s=1.0, clock=clock)


async def yield_until(condition: object, rounds: int = 100) -> None:
    """Let other tasks run until ``condition()`` holds; fail after ``rounds`` loop turns."""
    for _ in range(rounds):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


async def test_reader_miss_reads_database_and_fills(
    reader: StatusReader, cache: FakeCache, queries: FakeQueries
) -> None:
    read = await reader.shipment("s1")
    assert read.source is Source.DATABASE
    assert read.value == SHIPMENT
    assert cache.puts == [("envios:shipment:s1", 2)]
    assert queries.reads == 1


async def test_reader_second_read_from_cache(
    reader: StatusReader, cache: FakeCache, queries: FakeQueries
) -> None:
    await reader.shipment("s1")
    read = await reader.shipment("s1")
    assert read.source is Source.CACHE
    assert read.value == SHIPMENT
    assert queries.reads == 1


async def test_reader_task_round_trip(reader: StatusReader, cache: FakeCache) -> None:
    first = await reader.task("t1")
    second = await reader.task("t1")
    assert first.source is Source.DATABASE
    assert second.source is Source.CACHE
    assert second.value == TASK
    assert json.loads(cache.entries["envios:task:t1"]["results"])[1]["error_code"] == 9


async def test_reader_unknown_id_cached_briefly(
    reader: StatusReader, cache: FakeCache, queries: FakeQueries
) -> None:
    read = await reader.shipment("nobody")
    assert read.value is None
    assert read.source is Source.DATABASE
    assert cache.puts == [("envios:shipment:nobody", 0)]
    assert cache.ttls["envios:shipment:nobody"] == 2.0

    again = await reader.shipment("nobody")
    assert again.value is None
    assert again.source is Source.CACHE
    assert queries.reads == 1


async def test_reader_writer_replaces_not_found(
    reader: StatusReader, cache: FakeCache, queries: FakeQueries
) -> None:
    await reader.shipment("late")
    queries.shipments["late"] = SHIPMENT
    written = await cache.put("envios:shipment:late", 1, shipment_fields(SHIPMENT))
    assert written

    read = await reader.shipment("late")
    assert read.source is Source.CACHE
    assert read.value is not None
    assert read.value.status == "handling"


async def test_reader_verifies_hits_after_recovery(
    reader: StatusReader, cache: FakeCache, queries: FakeQueries, clock: FakeClock
) -> None:
    await reader.shipment("s1")
    newer = dataclasses.replace(SHIPMENT, status="shipped", version=5)
    queries.shipments["s1"] = newer
    cache.down = True
    assert (await reader.shipment("s1")).source is Source.FALLBACK

    cache.down = False
    clock.now += 1.5
    recovered = await reader.shipment("s1")
    assert recovered.source is Source.DATABASE
    assert recovered.value == newer
    assert cache.entries["envios:shipment:s1"]["version"] == "5"

    clock.now += 5.0
    settled = await reader.shipment("s1")
    assert settled.source is Source.CACHE
    assert settled.value == newer


async def test_reader_metrics_count_sources(
    reader: StatusReader, cache: FakeCache, clock: FakeClock
) -> None:
    registry = reader.metrics.registry
    await reader.shipment("s1")
    await reader.shipment("s1")
    await reader.task("t1")
    cache.down = True
    await reader.shipment("s1")

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert sample("envios_status_reads_total", kind="shipment", source="database") == 1
    assert sample("envios_status_reads_total", kind="shipment", source="cache") == 1
    assert sample("envios_status_reads_total", kind="task", source="database") == 1
    assert sample("envios_status_reads_total", kind="shipment", source="fallback") == 1
    assert sample("envios_status_fallbacks_total") == 1
    assert sample("envios_status_database_reads_total") == 3
    assert sample("envios_status_cache_hit_ratio") == 0.25
    assert sample("envios_status_degraded") == 1

    cache.down = False
    clock.now += 1.5
    await reader.shipment("s1")
    assert sample("envios_status_degraded") == 0


async def test_reader_cache_down_falls_back(
    reader: StatusReader, cache: FakeCache, queries: FakeQueries
) -> None:
    cache.down = True
    read = await reader.shipment("s1")
    assert read.source is Source.FALLBACK
    assert read.value == SHIPMENT
    assert cache.puts == []


async def test_reader_skips_cache_after_failure(
    reader: StatusReader, cache: FakeCache, clock: FakeClock
) -> None:
    cache.down = True
    await reader.shipment("s1")
    cache.down = False
    skipped = await reader.shipment("s1")
    assert skipped.source is Source.FALLBACK
    assert cache.gets == 1

    clock.now += 1.5
    retried = await reader.shipment("s1")
    assert retried.source is Source.DATABASE
    assert cache.gets == 2


async def test_reader_logs_cache_outage_once(
    reader: StatusReader, cache: FakeCache, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    cache.down = True
    with caplog.at_level(logging.WARNING, logger="services.status.reader"):
        for _ in range(3):
            await reader.shipment("s1")
            clock.now += 2.0
    outage_lines = [r for r in caplog.records if "status cache unavailable" in r.getMessage()]
    assert len(outage_lines) == 1


async def test_reader_malformed_entry_reads_database(
    reader: StatusReader, cache: FakeCache
) -> None:
    cache.entries["envios:shipment:s1"] = {"version": "2", "status": "handling"}
    read = await reader.shipment("s1")
    assert read.source is Source.DATABASE
    assert read.value == SHIPMENT


async def test_reader_single_flight(
    reader: StatusReader, cache: FakeCache, queries: FakeQueries
) -> None:
    queries.gate = asyncio.Event()
    calls = [asyncio.create_task(reader.shipment("s1")) for _ in range(10)]
    await yield_until(lambda: cache.gets == 10)
    assert reader.flights() == 1
    queries.gate.set()
    reads = await asyncio.gather(*calls)
    assert queries.reads == 1
    assert all(read.value == SHIPMENT for read in reads)
    assert {read.source for read in reads} == {Source.DATABASE}
    assert reader.flights() == 0


async def test_reader_flight_per_key(reader: StatusReader, queries: FakeQueries) -> None:
    await asyncio.gather(reader.shipment("s1"), reader.shipment("s2"), reader.task("t1"))
    assert queries.reads == 3


async def test_reader_cancelled_leader_keeps_flight(
    reader: StatusReader, cache: FakeCache, queries: FakeQueries
) -> None:
    queries.gate = asyncio.Event()
    leader = asyncio.create_task(reader.shipment("s1"))
    follower = asyncio.create_task(reader.shipment("s1"))
    await yield_until(lambda: cache.gets == 2)
    leader.cancel()
    await yield_until(leader.done)
    queries.gate.set()
    read = await follower
    assert read.value == SHIPMENT
    assert queries.reads == 1


async def test_reader_database_error_reaches_all(
    reader: StatusReader, cache: FakeCache, queries: FakeQueries
) -> None:
    queries.gate = asyncio.Event()
    queries.error = Unavailable("database unavailable: locked")
    calls = [asyncio.create_task(reader.shipment("s1")) for _ in range(3)]
    await yield_until(lambda: cache.gets == 3)
    queries.gate.set()
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(outcome, Unavailable) for outcome in outcomes)
    assert queries.reads == 1

    queries.error = None
    read = await reader.shipment("s1")
    assert read.value == SHIPMENT
    assert queries.reads == 2
