"""Short failover drills against the session stack, under paced HTTP and gRPC load.

Each drill restores what it breaks and waits until Envoy sees every host healthy again,
so the stack is as it was for the next test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ops.drill import DrillPlan, run_drill
from ops.drill_load import LoadConfig
from ops.drill_report import DrillSummary
from ops.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio, pytest.mark.timeout(240)]

PLAN = DrillPlan(
    before_s=1.5,
    outage_s=3.5,
    after_s=1.5,
    load=LoadConfig(rate_per_s=20.0, timeout_s=15.0),
)
FAST_FAILURE_MS = 1500.0
"""Slowest acceptable failure while everything is down; a hang would take the deadline."""


async def drill(stack: Stack, name: str, tmp_path: Path) -> DrillSummary:
    result = await run_drill(stack, name, PLAN, tmp_path / name)
    assert result.report is not None
    assert result.report.is_file()
    assert (result.report.parent / "timeline.png").stat().st_size > 0
    return result.summary


def assert_writes_intact(summary: DrillSummary) -> None:
    writes = summary.writes
    assert writes is not None
    assert writes.checked > 0
    assert writes.missing == []
    assert writes.duplicated == []
    assert writes.unapplied == []


async def test_drill_primary_site_kill(stack: Stack, tmp_path: Path) -> None:
    summary = await drill(stack, "primary-site-kill", tmp_path)

    assert summary.failed_by_code == {}
    assert summary.calls_by_site["before"]["secondary"] == 0
    assert summary.calls_by_site["during"]["secondary"] > 0
    assert summary.calls_by_site["after"]["secondary"] == 0
    assert summary.calls_by_site["after"]["primary"] > 0
    assert summary.failover_s is not None
    assert summary.failover_s < 1.0
    assert_writes_intact(summary)


async def test_drill_primary_site_freeze(stack: Stack, tmp_path: Path) -> None:
    summary = await drill(stack, "primary-site-freeze", tmp_path)

    assert summary.failed_by_code == {}
    assert summary.calls_by_site["during"]["secondary"] > 0
    assert summary.calls_by_site["after"]["secondary"] == 0
    assert summary.failover_s is not None
    assert summary.failover_s < summary.events.restore_s - summary.events.fault_s
    assert_writes_intact(summary)


async def test_drill_replica_kill(stack: Stack, tmp_path: Path) -> None:
    summary = await drill(stack, "replica-kill", tmp_path)

    assert summary.failed_by_code == {}
    for phase in ("before", "during", "after"):
        assert summary.calls_by_site[phase]["secondary"] == 0, phase
    assert summary.calls_by_site["during"]["primary"] > 0
    assert_writes_intact(summary)


async def test_drill_secondary_site_kill(stack: Stack, tmp_path: Path) -> None:
    summary = await drill(stack, "secondary-site-kill", tmp_path)

    assert summary.failed_by_code == {}
    assert summary.retries == 0
    for phase in ("before", "during", "after"):
        assert summary.calls_by_site[phase]["secondary"] == 0, phase
    assert summary.calls_by_site["during"]["primary"] > 0
    assert_writes_intact(summary)


async def test_drill_manual_shift(stack: Stack, tmp_path: Path) -> None:
    summary = await drill(stack, "manual-shift", tmp_path)

    assert summary.failed_by_code == {}
    assert summary.calls_by_site["before"]["secondary"] == 0
    assert summary.calls_by_site["during"]["secondary"] > summary.calls_by_site["during"]["primary"]
    assert summary.calls_by_site["after"]["secondary"] == 0
    assert summary.failback_s is not None
    assert summary.failback_s < 1.0
    assert summary.events.workers_shifted_s is not None
    assert summary.events.workers_back_s is not None
    assert_writes_intact(summary)


async def test_drill_everything_down(stack: Stack, tmp_path: Path) -> None:
    summary = await drill(stack, "everything-down", tmp_path)

    assert summary.failed > 0
    # Failures are HTTP 503 with a google.rpc.Status JSON body, or gRPC UNAVAILABLE.
    assert set(summary.failed_by_code) <= {"503", "UNAVAILABLE"}
    assert summary.failed_latency.max_ms < FAST_FAILURE_MS
    assert summary.latency["after"].count > 0
    assert_writes_intact(summary)
