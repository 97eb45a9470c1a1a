"""Benchmark task scheduling: makespan of many ``simulate`` tasks against its lower bound.

Starts a private stack with the default topology's layout on free ports (the same code as
``envios up``: 2 sites, 1 worker each, ``ENVIOS_WORKER_CONCURRENCY`` slots per worker).
It submits ``--count`` ``simulate`` tasks with durations uniform in ``--min-s``..``--max-s``
through Envoy's gRPC listener, and waits until every task is final. Then it reports

    ratio = makespan / max(longest task, total work / total slots)

where the makespan runs from the first submit to the last task's end. A ratio of 1.0
means no slot was ever idle while a task waited. ``--time-scale`` shortens every wait
(through ``ENVIOS_TASK_TIME_SCALE``); the bound uses the scaled durations.

Run: ``.venv/bin/python benchmarks/tasks_makespan.py`` (options: ``--help``). The client,
every service and RabbitMQ share the machine, so the numbers include their CPU use.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import grpc
from envios.task.v1 import task_pb2, task_pb2_grpc
from google.protobuf import duration_pb2

from ops.stack import Stack
from ops.topology import load_topology


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="tasks (default 2000)")
    parser.add_argument(
        "--min-s", type=float, default=1.0, help="minimum task duration, s (default 1)"
    )
    parser.add_argument(
        "--max-s", type=float, default=5.0, help="maximum task duration, s (default 5)"
    )
    parser.add_argument(
        "--time-scale", type=float, default=1.0, help="factor on every wait (default 1)"
    )
    parser.add_argument("--concurrency", type=int, default=16, help="slots per worker (default 16)")
    return parser.parse_args(argv)


def seconds(value: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromMilliseconds(round(value * 1000))
    return duration


async def submit_all(target: str, args: argparse.Namespace) -> float:
    """Submit every task, 50 calls at a time; return the monotonic time of the first."""
    distribution = task_pb2.DurationDistribution(
        uniform=task_pb2.UniformDurations(min=seconds(args.min_s), max=seconds(args.max_s))
    )
    request = task_pb2.SubmitTaskRequest(
        task=task_pb2.Task(type="simulate", simulated_duration=distribution)
    )
    async with grpc.aio.insecure_channel(target) as channel:
        stub = task_pb2_grpc.TaskServiceStub(channel)
        started = time.time()
        for first in range(0, args.count, 50):
            batch = min(50, args.count - first)
            await asyncio.gather(*(stub.SubmitTask(request, timeout=30) for _ in range(batch)))
    return started


def wait_final(database: Path, count: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with sqlite3.connect(database) as connection:
            done = connection.execute(
                "SELECT COUNT(*) FROM tasks WHERE state IN ('SUCCEEDED', 'FAILED', 'CANCELLED')"
            ).fetchone()[0]
        if done >= count:
            return
        time.sleep(1.0)
    raise TimeoutError(f"tasks not final within {timeout_s:g} s")


def measure(
    database: Path, started: float, args: argparse.Namespace, slots: int
) -> dict[str, float]:
    with sqlite3.connect(database) as connection:
        rows = connection.execute("SELECT input, state, end_time_us FROM tasks").fetchall()
    durations = [json.loads(row[0])["work_s"] * args.time_scale for row in rows]
    makespan_s = max(row[2] for row in rows) / 1e6 - started
    bound_s = max(max(durations), sum(durations) / slots)
    return {
        "tasks": len(rows),
        "succeeded": sum(row[1] == "SUCCEEDED" for row in rows),
        "slots": slots,
        "total_work_s": round(sum(durations), 1),
        "longest_s": round(max(durations), 2),
        "lower_bound_s": round(bound_s, 2),
        "makespan_s": round(makespan_s, 2),
        "ratio": round(makespan_s / bound_s, 4),
    }


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    environ = {
        key: value for key, value in os.environ.items() if key not in ("REDIS_URL", "AMQP_URL")
    }
    environ["ENVIOS_TASK_TIME_SCALE"] = str(args.time_scale)
    environ["ENVIOS_WORKER_CONCURRENCY"] = str(args.concurrency)
    environ["ENVIOS_LOG_LEVEL"] = "WARNING"
    topology = load_topology().with_free_ports()
    slots = sum(site.workers for site in topology.sites) * args.concurrency
    with tempfile.TemporaryDirectory(prefix="envios-bench-") as state_dir:
        stack = Stack(topology, Path(state_dir), environ)
        stack.up(timeout_s=180)
        try:
            started = asyncio.run(submit_all(stack.grpc_target, args))
            expected_s = args.count * args.max_s * args.time_scale / slots
            wait_final(Path(state_dir) / "envios.db", args.count, 120 + 3 * expected_s)
            print(json.dumps(measure(Path(state_dir) / "envios.db", started, args, slots)))
        finally:
            stack.down()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
