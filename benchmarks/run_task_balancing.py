"""Benchmark RunTask balancing: slot waits behind Envoy with least request and round robin.

Starts a private stack on free ports (the same code as ``envios up``) with ``--slots`` run
slots per TaskService replica (``ENVIOS_TASK_RUN_SLOTS``). It builds one trace of
``--count`` ``simulate`` tasks (durations uniform in ``--min-s``..``--max-s``, Poisson
arrivals at ``--utilization`` of the primary site's slot capacity, fixed ``--seed``) and
replays it as ``RunTask`` calls through Envoy's gRPC listener once per ``--policies``
entry: the rendered configuration (LEAST_REQUEST, 2 choices, on the task site clusters),
the task site clusters rewritten to ROUND_ROBIN, or to least request with a full scan of
the hosts. Before each replay the benchmark writes Envoy's config and restarts Envoy.
Each call's slot wait is ``start_time - create_time`` of the returned task;
``Task.worker`` names the replica that ran it. Output: one table row per policy and the
ratios of the p50, p99 and mean waits of each policy to those of LEAST_REQUEST.

``--time-scale`` shortens every simulated wait (``ENVIOS_TASK_TIME_SCALE``); the arrival
rate and the reported waits are then on the scaled time.

Run: ``.venv/bin/python benchmarks/run_task_balancing.py`` (options: ``--help``). The
client runs on the same machine as the stack, so its CPU use is part of every number.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
from envios.task.v1 import task_pb2, task_pb2_grpc
from google.protobuf import duration_pb2

from ops import envoy_clusters, envoy_config
from ops.stack import Stack
from ops.topology import load_topology

TASK_SERVICE = "task"
DEFAULT_POLICY = envoy_clusters.GRPC_LB_POLICIES[TASK_SERVICE]
FULL_SCAN = "LEAST_REQUEST_FULL_SCAN"
FULL_SCAN_LB = {
    "name": "envoy.load_balancing_policies.least_request",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.load_balancing_policies.least_request.v3"
        ".LeastRequest",
        "selection_method": "FULL_SCAN",
    },
}
"""Least request over every healthy host, where the default (``N_CHOICES``, 2 choices)
samples 2 hosts with replacement and so picks at random whenever both samples are the same
host: half of the picks with 2 hosts (Envoy's ``unweightedHostPickNChoices``)."""
POLICIES = (DEFAULT_POLICY, "ROUND_ROBIN", FULL_SCAN)
WAITED_S = 0.1
"""A call whose ``start_time - create_time`` exceeds this waited for a slot. Below it the
difference is mostly the two SQLite writes (record, start), which take milliseconds when
the database is idle and tens of milliseconds under load on the benchmark machine."""


@dataclass(frozen=True)
class TraceCall:
    """One call of the trace: when it starts after the replay's start, and its duration."""

    offset_s: float
    duration_s: float


@dataclass(frozen=True)
class CallResult:
    """Outcome of one RunTask call. ``code`` is the gRPC status name, OK on success."""

    code: str
    wait_s: float = math.nan
    latency_s: float = math.nan
    replica: str = ""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=200, help="calls per replay (default 200)")
    parser.add_argument("--slots", type=int, default=4, help="run slots per replica (default 4)")
    parser.add_argument(
        "--min-s", type=float, default=1.0, help="minimum task duration, s (default 1)"
    )
    parser.add_argument(
        "--max-s", type=float, default=5.0, help="maximum task duration, s (default 5)"
    )
    parser.add_argument(
        "--utilization",
        type=float,
        default=0.9,
        help="offered load as a fraction of the primary site's slots (default 0.9)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the trace (default 1)")
    parser.add_argument(
        "--time-scale", type=float, default=1.0, help="factor on every task duration (default 1)"
    )
    parser.add_argument(
        "--policies",
        default=f"{DEFAULT_POLICY},ROUND_ROBIN",
        help=f"comma-separated replays in order, each one of {', '.join(POLICIES)} "
        f"(default {DEFAULT_POLICY},ROUND_ROBIN)",
    )
    parser.add_argument(
        "--deadline-s", type=float, default=120.0, help="deadline of each call, s (default 120)"
    )
    args = parser.parse_args(argv)

    args.policies = args.policies.split(",")
    unknown = sorted(set(args.policies) - set(POLICIES))
    if unknown or DEFAULT_POLICY not in args.policies:
        parser.error(f"--policies must include {DEFAULT_POLICY} and list only {POLICIES}")
    if args.count < 2 or args.slots < 1 or args.utilization <= 0:
        parser.error("--count must be at least 2, --slots at least 1, --utilization above 0")
    return args


def build_trace(args: argparse.Namespace, slots: int) -> list[TraceCall]:
    """Return ``args.count`` calls with uniform durations and Poisson arrivals.

    The arrival rate offers ``args.utilization`` times the work that ``slots`` slots can
    do, on the scaled time.
    """
    rng = random.Random(args.seed)
    mean_s = (args.min_s + args.max_s) / 2 * args.time_scale
    rate = args.utilization * slots / mean_s
    calls = []
    offset_s = 0.0
    for _ in range(args.count):
        calls.append(TraceCall(offset_s, round(rng.uniform(args.min_s, args.max_s), 3)))
        offset_s += rng.expovariate(rate)
    return calls


def run_request(duration_s: float) -> task_pb2.RunTaskRequest:
    fixed = duration_pb2.Duration()
    fixed.FromMilliseconds(round(duration_s * 1000))
    distribution = task_pb2.DurationDistribution(fixed=fixed)
    task = task_pb2.Task(type="simulate", simulated_duration=distribution)
    return task_pb2.RunTaskRequest(task=task)


async def call_at(stub: Any, started: float, call: TraceCall, deadline_s: float) -> CallResult:
    """Wait until the call's offset, then call RunTask and measure its slot wait."""
    await asyncio.sleep(max(0.0, started + call.offset_s - time.monotonic()))
    sent = time.monotonic()
    try:
        task = await stub.RunTask(run_request(call.duration_s), timeout=deadline_s)
    except grpc.aio.AioRpcError as error:
        return CallResult(error.code().name)
    latency_s = time.monotonic() - sent
    wait_ns = task.start_time.ToNanoseconds() - task.create_time.ToNanoseconds()
    code = "OK" if task.state == task_pb2.Task.SUCCEEDED else task_pb2.Task.State.Name(task.state)
    return CallResult(code, wait_ns / 1e9, latency_s, task.worker)


async def replay(target: str, trace: list[TraceCall], deadline_s: float) -> list[CallResult]:
    """Replay ``trace`` on one channel and return the results in trace order."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = task_pb2_grpc.TaskServiceStub(channel)
        await channel.channel_ready()
        started = time.monotonic()
        calls = (call_at(stub, started, call, deadline_s) for call in trace)
        return list(await asyncio.gather(*calls))


def task_site_clusters(stack: Stack) -> set[str]:
    sites = stack.topology.sites
    return {envoy_clusters.site_cluster_name(TASK_SERVICE, site.name) for site in sites}


def set_policy(cluster: dict[str, Any], policy: str) -> None:
    """Set the balancing of one rendered cluster to ``policy``, one of ``POLICIES``.

    ``DEFAULT_POLICY`` leaves the cluster as ``envoy_config.render`` made it.
    """
    if policy == DEFAULT_POLICY:
        return
    cluster.pop("least_request_lb_config", None)
    cluster.pop("lb_policy", None)
    if policy == FULL_SCAN:
        cluster["load_balancing_policy"] = {"policies": [{"typed_extension_config": FULL_SCAN_LB}]}
    else:
        cluster["lb_policy"] = policy


def rewrite_policy(stack: Stack, policy: str) -> None:
    """Render the stack's Envoy config with ``policy`` on the task site clusters and
    validate it. Raises EnvoyConfigError when Envoy rejects it."""
    config = envoy_config.render(stack.topology, runtime_root=stack.state_dir / "runtime")
    names = task_site_clusters(stack)
    for cluster in config["static_resources"]["clusters"]:
        if cluster["name"] in names:
            set_policy(cluster, policy)
    stack.envoy_config_path.write_text(envoy_config.to_yaml(config), encoding="utf-8")
    envoy_config.validate(stack.envoy_config_path)


def restart_envoy(stack: Stack) -> None:
    """Restart Envoy and wait until it is ready with every host healthy."""
    stack.stop_process("envoy")
    stack.start_process("envoy")
    stack.wait_ready(["envoy"], timeout_s=60)


def running_policies(stack: Stack) -> dict[str, str]:
    """Return the balancing of each task site cluster as the running Envoy reports it."""
    url = f"{stack.envoy_admin_url}/config_dump"
    with httpx.Client(timeout=5.0, trust_env=False) as client:
        response = client.get(url, params={"resource": "static_clusters"})
        response.raise_for_status()
    names = task_site_clusters(stack)
    policies = {}
    for entry in response.json()["configs"]:
        cluster = entry["cluster"]
        if cluster["name"] not in names:
            continue
        if "load_balancing_policy" in cluster:
            extension = cluster["load_balancing_policy"]["policies"][0]["typed_extension_config"]
            method = extension["typed_config"].get("selection_method", "N_CHOICES")
            policies[cluster["name"]] = f"least_request extension, {method}"
        elif "least_request_lb_config" in cluster:
            choices = cluster["least_request_lb_config"]["choice_count"]
            policies[cluster["name"]] = f"{cluster['lb_policy']}, {choices} choices"
        else:
            # The dump leaves out fields at their default, and ROUND_ROBIN is the default.
            policies[cluster["name"]] = cluster.get("lb_policy", "ROUND_ROBIN")
    return policies


def percentile(values: list[float], fraction: float) -> float:
    """Return the nearest-rank percentile of ``values`` (0.5 is the median); NaN if empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def summarize(policy: str, results: list[CallResult]) -> dict[str, Any]:
    done = [result for result in results if result.code == "OK"]
    waits = [result.wait_s for result in done]
    return {
        "policy": policy,
        "calls": len(results),
        "ok": len(done),
        "errors": dict(Counter(result.code for result in results if result.code != "OK")),
        "p50": percentile(waits, 0.5),
        "p90": percentile(waits, 0.9),
        "p99": percentile(waits, 0.99),
        "max": max(waits, default=math.nan),
        "mean": sum(waits) / len(waits) if waits else math.nan,
        "waited": sum(wait > WAITED_S for wait in waits),
        "replicas": dict(sorted(Counter(result.replica for result in done).items())),
        "latency_p99": percentile([result.latency_s for result in done], 0.99),
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    print(
        f"| policy | calls | ok | waits > {WAITED_S:g} s | p50 wait s | p90 wait s | p99 wait s "
        "| max wait s | mean wait s | p99 call s | calls per replica | errors |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        replicas = ", ".join(f"{name} {count}" for name, count in row["replicas"].items())
        print(
            f"| {row['policy']} | {row['calls']} | {row['ok']} | {row['waited']} "
            f"| {row['p50']:.3f} | {row['p90']:.3f} | {row['p99']:.3f} | {row['max']:.3f} "
            f"| {row['mean']:.3f} "
            f"| {row['latency_p99']:.3f} | {replicas} | {row['errors'] or '-'} |"
        )


def print_ratios(rows: list[dict[str, Any]]) -> None:
    """Print the waits of every other policy divided by those of ``DEFAULT_POLICY``."""
    base = next(row for row in rows if row["policy"] == DEFAULT_POLICY)
    for row in rows:
        if row is base:
            continue
        for key in ("p50", "p99", "mean"):
            name = f"{row['policy']} / {DEFAULT_POLICY} {key} wait"
            if base[key] > 0:
                print(f"{name}: {row[key] / base[key]:.2f}")
            else:
                print(f"{name}: undefined, because the {DEFAULT_POLICY} {key} wait is 0")


def print_trace(trace: list[TraceCall], args: argparse.Namespace, slots: int) -> None:
    work_s = sum(call.duration_s for call in trace) * args.time_scale
    span_s = trace[-1].offset_s
    print(
        f"trace: {len(trace)} calls over {span_s:.1f} s, {work_s:.1f} s of work (scaled), "
        f"{slots} primary slots, offered load {work_s / span_s / slots:.2f} of the slots"
    )


def measure(stack: Stack, policy: str, trace: list[TraceCall], deadline_s: float) -> dict[str, Any]:
    print(f"{policy}: Envoy reports {running_policies(stack)}", flush=True)
    started = time.monotonic()
    results = asyncio.run(replay(stack.grpc_target, trace, deadline_s))
    print(f"{policy}: replay took {time.monotonic() - started:.1f} s", flush=True)
    return summarize(policy, results)


def stack_environ(args: argparse.Namespace) -> dict[str, str]:
    environ = {
        key: value for key, value in os.environ.items() if key not in ("REDIS_URL", "AMQP_URL")
    }
    environ["ENVIOS_TASK_RUN_SLOTS"] = str(args.slots)
    environ["ENVIOS_TASK_TIME_SCALE"] = str(args.time_scale)
    environ["ENVIOS_LOG_LEVEL"] = "WARNING"
    return environ


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    topology = load_topology().with_free_ports()
    slots = len(topology.primary.ports[TASK_SERVICE]) * args.slots
    trace = build_trace(args, slots)
    print_trace(trace, args, slots)
    with tempfile.TemporaryDirectory(prefix="envios-bench-") as state_dir:
        stack = Stack(topology, Path(state_dir), stack_environ(args))
        rows = []
        try:
            stack.up(timeout_s=180)
            for policy in args.policies:
                # Every replay starts on a freshly started Envoy, the first one too.
                rewrite_policy(stack, policy)
                restart_envoy(stack)
                rows.append(measure(stack, policy, trace, args.deadline_s))
        finally:
            stack.down()
    print_table(rows)
    print_ratios(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
