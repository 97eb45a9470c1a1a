"""Unit tests of services.status.overview without RabbitMQ or a database."""

from __future__ import annotations

import logging
import time

import pytest
from pika.exceptions import AMQPConnectionError

from services.status.lograte import LogLimiter
from services.status.overview import UNKNOWN_DEPTH, OverviewReader, QueueDepthProbe
from services.status.queries import Counts


class FakeClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


class FakeCounts:
    async def counts(self) -> Counts:
        return Counts(
            {"pending": 3, "shipped": 1},
            {"QUEUED": 2, "RUNNING": 1, "RETRYING": 4, "SUCCEEDED": 7, "FAILED": 1},
        )


class ScriptedProbe(QueueDepthProbe):
    """Probe whose broker replies come from a list: an int is a depth, None a failure."""

    def __init__(self, answers: list[int | None], clock: FakeClock) -> None:
        super().__init__("amqp://guest:guest@127.0.0.1:1/%2F", reuse_s=1.0, clock=clock)
        self.answers = answers
        self.asked = 0

    def _declare_passive(self) -> int:
        answer = self.answers[self.asked]
        self.asked += 1
        if answer is None:
            raise AMQPConnectionError("connection refused")
        return answer


async def test_overview_counts_in_flight() -> None:
    async def depth() -> int:
        return 12

    view = await OverviewReader(FakeCounts(), depth, "secondary").overview()
    assert view.tasks_in_flight == 7
    assert view.queue_depth == 12
    assert view.serving_site == "secondary"
    assert view.shipments_by_status == {"pending": 3, "shipped": 1}
    assert abs(view.compute_time_us - time.time_ns() // 1000) < 5_000_000


async def test_probe_reuses_recent_depth() -> None:
    clock = FakeClock()
    probe = ScriptedProbe([4, 9], clock)
    assert await probe.depth() == 4
    clock.now += 0.5
    assert await probe.depth() == 4
    clock.now += 1.0
    assert await probe.depth() == 9
    assert probe.asked == 2


async def test_probe_failure_unknown_depth(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    probe = ScriptedProbe([None, None, None], clock)
    with caplog.at_level(logging.WARNING, logger="services.status.overview"):
        for _ in range(3):
            assert await probe.depth() == UNKNOWN_DEPTH
            clock.now += 6.0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert probe.asked == 3
    assert len(warnings) == 1
    assert "envios.tasks" in warnings[0].getMessage()


async def test_probe_failure_reused_longer() -> None:
    clock = FakeClock()
    probe = ScriptedProbe([None, 7], clock)
    assert await probe.depth() == UNKNOWN_DEPTH
    clock.now += 2.0
    assert await probe.depth() == UNKNOWN_DEPTH
    assert probe.asked == 1
    clock.now += 4.0
    assert await probe.depth() == 7
    assert probe.asked == 2


def test_log_limiter_counts_suppressed() -> None:
    clock = FakeClock()
    limiter = LogLimiter(10.0, clock)
    assert limiter.allow()
    assert not limiter.allow()
    assert not limiter.allow()
    clock.now += 10.0
    assert limiter.allow()
    assert limiter.take_suppressed() == 2
    assert limiter.take_suppressed() == 0
