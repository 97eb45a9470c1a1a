"""Benchmark status reads: the full path against direct gRPC, and the cache during a replay.

Starts a private stack on free ports (the same code as ``envios up``), then:

1. replays the Olist sample through the front Envoy while readers ask for the status of
   the replayed orders, and counts the source of each response (the
   ``Grpc-Metadata-X-Envios-Source`` header);
2. reads a warm set of shipments through the whole path (front Envoy, gateway, Envoy,
   StatusService, Redis) and, in the same run, directly from one StatusService replica
   over gRPC, with the same request count and concurrency.

Run: ``.venv/bin/python benchmarks/status_reads.py`` (options: ``--help``). The client
runs on the same machine as the stack, so its CPU use is part of every number.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
import httpx
from envios.status.v1 import status_pb2, status_pb2_grpc

from ops.replay import ReplayOptions, replay_orders
from ops.stack import Stack
from ops.timeline import load_orders
from ops.topology import load_topology

SAMPLE_CSV = Path(__file__).resolve().parent.parent / "data" / "olist-sample" / "orders.csv"
SOURCE_HEADER = "grpc-metadata-x-envios-source"


@dataclass
class Latency:
    """Client-side latency of one way of reading, in milliseconds."""

    requests: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float


@dataclass
class ReplayReads:
    """Sources of the status reads made during the replay."""

    reads: int
    sources: dict[str, int]
    not_found: int
    hit_ratio: float
    """Responses from the cache divided by successful reads."""
    database_reads_per_read: float
    """Upper bound: answers from the database or fallback, plus every 404, per read."""


def summarize(samples: list[float], errors: int, elapsed_s: float) -> Latency:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0
    return Latency(
        requests=len(samples) + errors,
        errors=errors,
        rps=round((len(samples) + errors) / elapsed_s, 1),
        p50_ms=round(statistics.median(ordered) * 1000, 3) if ordered else 0.0,
        p99_ms=round(p99 * 1000, 3),
    )


async def drive(
    call: Callable[[str], Awaitable[bool]], ids: list[str], requests: int, concurrency: int
) -> Latency:
    """Make ``requests`` calls with ``concurrency`` in flight; time each one."""
    samples: list[float] = []
    errors = 0
    queue = [random.choice(ids) for _ in range(requests)]

    async def worker() -> None:
        nonlocal errors
        while queue:
            shipment_id = queue.pop()
            began = time.perf_counter()
            ok = await call(shipment_id)
            if ok:
                samples.append(time.perf_counter() - began)
            else:
                errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return summarize(samples, errors, time.perf_counter() - started)


async def read_during_replay(
    client: httpx.AsyncClient, ids: list[str], done: asyncio.Event, concurrency: int
) -> ReplayReads:
    sources: Counter[str] = Counter()
    not_found = 0

    async def reader() -> None:
        nonlocal not_found
        while not done.is_set():
            response = await client.get(f"/api/status/shipments/{random.choice(ids)}")
            if response.status_code == 404:
                not_found += 1
            elif response.is_success:
                sources[response.headers.get(SOURCE_HEADER, "none")] += 1

    await asyncio.gather(*(reader() for _ in range(concurrency)))
    answered = sum(sources.values())
    reads = answered + not_found
    misses = sources["database"] + sources["fallback"] + not_found
    return ReplayReads(
        reads=reads,
        sources=dict(sources),
        not_found=not_found,
        hit_ratio=round(sources["cache"] / answered, 5) if answered else 0.0,
        database_reads_per_read=round(misses / reads, 5) if reads else 0.0,
    )


async def replay_phase(
    stack: Stack, orders_csv: Path, limit: int, readers: int
) -> tuple[ReplayReads, float]:
    orders = load_orders(orders_csv)[:limit]
    ids = [order.order_id for order in orders]
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(
        base_url=stack.front_http_url, timeout=10, limits=limits
    ) as client:
        done = asyncio.Event()
        reading = asyncio.create_task(read_during_replay(client, ids, done, readers))
        options = ReplayOptions(concurrency=32, no_wait=True)
        summary = await replay_orders(orders, client, options)
        done.set()
        reads = await reading
    return reads, summary.duration_s


async def latency_phase(
    stack: Stack, ids: list[str], requests: int, concurrency: int
) -> dict[str, Latency]:
    replica = next(stack.topology.replicas("status"))
    limits = httpx.Limits(max_connections=concurrency)
    async with (
        httpx.AsyncClient(base_url=stack.front_http_url, timeout=10, limits=limits) as client,
        grpc.aio.insecure_channel(replica.address) as channel,
    ):
        stub = status_pb2_grpc.StatusServiceStub(channel)

        async def full_path(shipment_id: str) -> bool:
            response = await client.get(f"/api/status/shipments/{shipment_id}")
            return response.status_code == 200

        async def direct(shipment_id: str) -> bool:
            request = status_pb2.GetShipmentStatusRequest(shipment_id=shipment_id)
            try:
                await stub.GetShipmentStatus(request, timeout=10)
            except grpc.aio.AioRpcError:
                return False
            return True

        for shipment_id in ids:
            await full_path(shipment_id)
        results = {}
        # Alternate the two ways twice so that neither gets a quieter machine.
        for round_number in range(2):
            for name, call in (("full_path", full_path), ("direct_grpc", direct)):
                key = f"{name}_{round_number + 1}"
                results[key] = await drive(call, ids, requests, concurrency)
    return results


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    # The stack runs its own Redis and RabbitMQ even when REDIS_URL and AMQP_URL are set.
    environ = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "AMQP_URL")}
    with tempfile.TemporaryDirectory(prefix="envios-bench-") as state_dir:
        stack = Stack(load_topology().with_free_ports(), Path(state_dir), environ)
        await asyncio.to_thread(stack.up, 180.0)
        try:
            reads, replay_s = await replay_phase(stack, args.orders, args.shipments, args.readers)
            ids = [order.order_id for order in load_orders(args.orders)[: args.warm]]
            latency = await latency_phase(stack, ids, args.requests, args.concurrency)
        finally:
            await asyncio.to_thread(stack.down)
    return {"replay_s": replay_s, "replay_reads": asdict(reads), "latency": latency}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--orders",
        type=Path,
        default=SAMPLE_CSV,
        help="Olist orders CSV to replay (default: the 200-order sample in data/)",
    )
    parser.add_argument("--shipments", type=int, default=4000, help="orders to replay")
    parser.add_argument("--readers", type=int, default=8, help="status readers during replay")
    parser.add_argument("--warm", type=int, default=500, help="shipments in the latency set")
    parser.add_argument("--requests", type=int, default=5000, help="reads per way and round")
    parser.add_argument("--concurrency", type=int, default=32, help="reads in flight")
    args = parser.parse_args()
    result = asyncio.run(main_async(args))

    def encode(value: object) -> object:
        return asdict(value) if isinstance(value, Latency) else str(value)

    json.dump(result, sys.stdout, indent=2, default=encode)
    print()


if __name__ == "__main__":
    main()
