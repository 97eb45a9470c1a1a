"""Failover drills: inject a fault into the running stack under paced load and report.

A drill runs the load of ``ops.drill_load`` through Envoy, waits ``before_s``, injects
its fault, waits ``outage_s``, restores what it broke, waits until every process is
ready and Envoy sees every host healthy, runs ``after_s`` more and stops. Every drill
leaves the stack as it found it: what it kills it restarts, what it stops it continues,
and a shifted split goes back to its value before the drill.

``envios drill NAME`` is the command line; ``run_drill`` is the API the tests use.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from ops import drill_report, traffic
from ops.drill_load import DrillLoad, LoadConfig, verify_writes
from ops.drill_report import DrillEvents, DrillSummary, SiteSample
from ops.envoy_clusters import site_cluster_name
from ops.key_numbers import scrape, total
from ops.stack import Stack, StackError
from ops.topology import SERVICES
from services.common.config import PREFIX
from services.task.settings import consumer_priority

logger = logging.getLogger(__name__)

EXIT_WAIT_S = 15.0
WORKER_POLL_S = 0.05
"""Interval between two scrapes of the task workers' ``/metrics`` in a shift drill."""
PRIORITY_METRIC = "envios_task_consumer_priority"
"""Time a killed process has to disappear from supervisord before the drill gives up."""


@dataclass(frozen=True)
class DrillPlan:
    """Timing and load of one drill run."""

    before_s: float = 5.0
    """Load before the fault."""
    outage_s: float = 10.0
    """Time between the fault and the restore."""
    after_s: float = 5.0
    """Load after the stack has recovered."""
    load: LoadConfig = field(default_factory=LoadConfig)
    sample_interval_s: float = 0.2
    """Interval between two reads of Envoy's counters."""
    recovery_timeout_s: float = 90.0
    """Time the restored processes have to become ready."""


@dataclass(frozen=True)
class Drill:
    """One named fault, how to restore from it, and which site should carry the traffic."""

    name: str
    description: str
    targets: Callable[[Stack], list[str]]
    """Programs the fault acts on."""
    fault: str
    """``kill``, ``stop`` (SIGSTOP, then SIGCONT) or ``shift`` (runtime key to 100)."""
    failed_site: str | None = None
    standby_site: str | None = None


def _replicas(site: str | None) -> Callable[[Stack], list[str]]:
    def names(stack: Stack) -> list[str]:
        return [r.name for r in stack.topology.replicas() if site is None or r.site == site]

    return names


DRILLS = {
    drill.name: drill
    for drill in (
        Drill(
            "primary-site-kill",
            "SIGKILL every primary replica of every service, restart them after the outage.",
            _replicas("primary"),
            "kill",
            "primary",
            "secondary",
        ),
        Drill(
            "primary-site-freeze",
            "SIGSTOP every primary replica of every service (hung, not dead), SIGCONT later.",
            _replicas("primary"),
            "stop",
            "primary",
            "secondary",
        ),
        Drill(
            "replica-kill",
            "SIGKILL one primary replica (shipment-primary-1); the secondary must stay idle.",
            lambda stack: ["shipment-primary-1"],
            "kill",
        ),
        Drill(
            "secondary-site-kill",
            "SIGKILL every secondary replica; the primary must see no errors and the same load.",
            _replicas("secondary"),
            "kill",
        ),
        Drill(
            "manual-shift",
            "Shift 100% of the traffic to the secondary with the one runtime key, then back.",
            lambda stack: [],
            "shift",
            "primary",
            "secondary",
        ),
        Drill(
            "everything-down",
            "SIGKILL every replica of both sites: callers must get fast 503s; then restart.",
            _replicas(None),
            "kill",
        ),
    )
}


@dataclass
class DrillResult:
    summary: DrillSummary
    report: Path | None


async def run_drill(
    stack: Stack, name: str, plan: DrillPlan, report_dir: Path | None
) -> DrillResult:
    """Run drill ``name`` against the running ``stack``; write the report when ``report_dir``.

    Raises:
        KeyError: for an unknown drill name.
        StackError: when a process cannot be signalled or does not recover in time.
        TrafficError: when the Envoy admin API fails.
    """
    drill = DRILLS[name]
    await asyncio.to_thread(stack.wait_ready, None, plan.recovery_timeout_s)
    load = DrillLoad(stack.front_http_url, stack.grpc_target, plan.load)
    stop = asyncio.Event()
    load_task = asyncio.create_task(load.run(stop))
    samples: list[SiteSample] = []
    sampler = asyncio.create_task(_sample(stack, load, plan.sample_interval_s, samples, stop))
    try:
        events = await _inject_and_restore(stack, drill, plan, load)
    finally:
        stop.set()
        outcomes = await load_task
        await sampler
    summary = drill_report.summarize(
        drill.name,
        drill.description,
        plan.load.rate_per_s,
        outcomes,
        samples,
        events,
        drill.failed_site,
        drill.standby_site,
    )
    summary.writes = await verify_writes(stack.front_http_url, load.writes)
    report = None
    if report_dir is not None:
        report = drill_report.write_report(report_dir, summary, outcomes, samples)
        logger.info("drill %s: report in %s", name, report)
    return DrillResult(summary, report)


async def _inject_and_restore(
    stack: Stack, drill: Drill, plan: DrillPlan, load: DrillLoad
) -> DrillEvents:
    await _sleep_until(load, plan.before_s)
    targets = drill.targets(stack)
    fault_s = load.elapsed_s()
    logger.info("drill %s: fault (%s) on %s", drill.name, drill.fault, targets or "runtime key")
    previous = await asyncio.to_thread(_inject, stack, drill, targets)
    shift = drill.fault == "shift"
    workers_shifted_s = workers_back_s = None
    try:
        if shift:
            workers_shifted_s = await asyncio.to_thread(
                wait_worker_priorities,
                stack,
                expected_worker_priorities(stack, 100),
                fault_s + plan.outage_s - load.elapsed_s(),
            )
        await _sleep_until(load, fault_s + plan.outage_s)
    finally:
        restore_s = load.elapsed_s()
        logger.info("drill %s: restore", drill.name)
        await asyncio.to_thread(_restore, stack, drill, targets, previous, plan.recovery_timeout_s)
    if shift:
        workers_back_s = await asyncio.to_thread(
            wait_worker_priorities,
            stack,
            expected_worker_priorities(stack, int(previous or 0)),
            plan.recovery_timeout_s,
        )
    recovered_s = load.elapsed_s()
    logger.info(
        "drill %s: recovered %.1f s after the restore began", drill.name, recovered_s - restore_s
    )
    await _sleep_until(load, recovered_s + plan.after_s)
    return DrillEvents(
        fault_s,
        restore_s,
        recovered_s,
        load.elapsed_s(),
        shift=shift,
        workers_shifted_s=workers_shifted_s,
        workers_back_s=workers_back_s,
    )


def expected_worker_priorities(stack: Stack, percent: int) -> dict[str, int]:
    """Return each task worker's consumer priority when ``percent`` of calls go to the
    secondary first."""
    return {
        program.name: consumer_priority(
            int(program.environment[PREFIX + "WORKER_PRIORITY"]),
            int(program.environment[PREFIX + "WORKER_SHIFTED_PRIORITY"]),
            percent,
        )
        for program in stack.programs()
        if PREFIX + "WORKER_SHIFTED_PRIORITY" in program.environment
    }


def wait_worker_priorities(
    stack: Stack, expected: dict[str, int], timeout_s: float
) -> float | None:
    """Return the seconds until every worker in ``expected`` reports the priority given for it
    on ``/metrics``, or None when that takes longer than ``timeout_s``."""
    began = time.monotonic()
    while True:
        try:
            reported = {
                name: total(scrape(stack.topology.metrics_endpoint(name)), PRIORITY_METRIC)
                for name in expected
            }
        except (httpx.HTTPError, ValueError) as error:
            logger.warning("reading a task worker's /metrics failed: %r", error)
            reported = {}
        waited_s = time.monotonic() - began
        if reported == expected:
            return waited_s
        if waited_s >= timeout_s:
            logger.warning(
                "task workers report priorities %s, not %s, %.1f s after the change",
                reported,
                expected,
                waited_s,
            )
            return None
        time.sleep(WORKER_POLL_S)


def _inject(stack: Stack, drill: Drill, targets: Sequence[str]) -> str:
    """Apply the fault; return the runtime key's previous value (``""`` unless shifting)."""
    if drill.fault == "shift":
        previous = traffic.runtime_value(stack.envoy_admin_url).final
        traffic.set_secondary_percent(stack.envoy_admin_url, 100)
        return previous
    sig = signal.SIGKILL if drill.fault == "kill" else signal.SIGSTOP
    for name in targets:
        stack.kill_process(name, sig, wait=False)
    if drill.fault == "kill":
        _wait_exited(stack, targets)
    return ""


def _restore(
    stack: Stack, drill: Drill, targets: Sequence[str], previous: str, timeout_s: float
) -> None:
    if drill.fault == "shift":
        traffic.set_secondary_percent(stack.envoy_admin_url, int(previous or 0))
    elif drill.fault == "stop":
        for name in targets:
            stack.kill_process(name, signal.SIGCONT, wait=False)
    else:
        with ThreadPoolExecutor(max_workers=max(1, len(targets))) as pool:
            list(pool.map(stack.start_process, targets))
    stack.wait_ready([*targets, "envoy"], timeout_s=timeout_s)


def _wait_exited(stack: Stack, names: Sequence[str]) -> None:
    deadline = time.monotonic() + EXIT_WAIT_S
    for name in names:
        while stack.pid_of(name) is not None:
            if time.monotonic() >= deadline:
                raise StackError(f"{name} still runs {EXIT_WAIT_S:g} s after SIGKILL")
            time.sleep(0.05)


async def _sleep_until(load: DrillLoad, t_s: float) -> None:
    delay = t_s - load.elapsed_s()
    if delay > 0:
        await asyncio.sleep(delay)


async def _sample(
    stack: Stack, load: DrillLoad, interval_s: float, samples: list[SiteSample], stop: asyncio.Event
) -> None:
    """Append a counter sample every ``interval_s`` until ``stop``, and one final sample."""
    sites = [site.name for site in stack.topology.sites]
    while True:
        finished = stop.is_set()
        try:
            stats = await asyncio.to_thread(traffic.cluster_stats, stack.envoy_admin_url)
        except traffic.TrafficError as error:
            logger.warning("drill: reading Envoy's counters failed: %s", error)
        else:
            samples.append(_site_sample(load.elapsed_s(), stats, sites))
        if finished:
            return
        await asyncio.sleep(interval_s)


def _site_sample(t_s: float, stats: dict[str, int], sites: Sequence[str]) -> SiteSample:
    calls = {
        site: sum(
            stats.get(f"cluster.{site_cluster_name(s, site)}.upstream_rq_total", 0)
            for s in SERVICES
        )
        for site in sites
    }
    retries = sum(value for key, value in stats.items() if key.endswith(".upstream_rq_retry"))
    return SiteSample(t_s, calls, retries)


# Command line.

StackFactory = Callable[[argparse.Namespace], Stack]


def add_parser(commands: Any, stack_factory: StackFactory) -> None:
    """Register ``envios drill NAME`` on ``commands``."""
    parser = commands.add_parser(
        "drill",
        help="run a failover drill under load and write a report",
        description="Bring the stack up when it is not (and down again afterwards), drive a "
        "paced load through the HTTP facade and gRPC, inject the fault, wait for recovery and "
        "write report.md, per_second.csv and timeline.png. Drills: "
        + " ".join(f"{drill.name}: {drill.description}" for drill in DRILLS.values()),
    )
    parser.add_argument("name", choices=sorted(DRILLS), metavar="NAME", help="drill to run")
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second (default 50)")
    parser.add_argument(
        "--before-s", type=float, default=5.0, help="load before the fault (default 5)"
    )
    parser.add_argument("--outage-s", type=float, default=10.0, help="fault duration (default 10)")
    parser.add_argument(
        "--after-s", type=float, default=5.0, help="load after recovery (default 5)"
    )
    parser.add_argument(
        "--request-timeout-s",
        type=float,
        default=10.0,
        help="deadline of each request (default 10)",
    )
    parser.add_argument(
        "--report-dir",
        type=Path,
        help="directory of the report (default: <state dir>/drills/<name>-<UTC time>)",
    )
    parser.set_defaults(handler=lambda args: _run(args, stack_factory(args)))


def _run(args: argparse.Namespace, stack: Stack) -> int:
    for option in ("rate", "before_s", "outage_s", "after_s", "request_timeout_s"):
        if getattr(args, option) <= 0:
            logger.error(
                "invalid --%s %s: expected a positive number",
                option.replace("_", "-"),
                getattr(args, option),
            )
            return 1
    load = LoadConfig(rate_per_s=args.rate, timeout_s=args.request_timeout_s)
    plan = replace(
        DrillPlan(), before_s=args.before_s, outage_s=args.outage_s, after_s=args.after_s, load=load
    )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report_dir = args.report_dir or stack.state_dir / "drills" / f"{args.name}-{stamp}"
    started = stack.up()
    try:
        result = asyncio.run(run_drill(stack, args.name, plan, report_dir))
    except traffic.TrafficError as error:
        logger.error("drill %s failed: %s", args.name, error)
        return 1
    finally:
        if started:
            stack.down()
    summary = result.summary
    print(f"drill {args.name}: {summary.requests} requests, {summary.failed} failed")
    print(f"report: {result.report}")
    return 0
