"""Benchmark status reads: the full path against direct gRPC, and the cache during a replay.

Starts a private stack on free ports (the same code as ``envios up``), then:

1. replays the Olist sample through the front Envoy while readers ask for the status of
   the replayed orders, and counts the source of each response (the
   ``Grpc-Metadata-X-Envios-Source`` header);
2. reads one warm shipment through the whole path (HTTP/1.1 to the front Envoy,
   gateway, Envoy, StatusService, Redis) and, in the same run, directly from one
   StatusService replica over gRPC, both with h2load (Debian ``nghttp2-client``) at the
   same request count and concurrency, two rounds each, alternating. h2load's per-request
   log gives the percentiles.

Run: ``.venv/bin/python benchmarks/status_reads.py`` (options: ``--help``). The load tool
runs on the same machine as the stack, so its CPU use is part of every number.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
from envios.status.v1 import status_pb2

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
    """Answers from the database or fallback per successful read. Reads of orders the replay
    has not created yet (404) are counted apart in ``not_found``: they ask about shipments
    that do not exist, not about cached state."""


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
    misses = sources["database"] + sources["fallback"]
    return ReplayReads(
        reads=answered + not_found,
        sources=dict(sources),
        not_found=not_found,
        hit_ratio=round(sources["cache"] / answered, 5) if answered else 0.0,
        database_reads_per_read=round(misses / answered, 5) if answered else 0.0,
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


def h2load(arguments: list[str], requests: int, concurrency: int) -> Latency:
    """Run h2load with one request in flight per connection and summarize its log."""
    with tempfile.NamedTemporaryFile(suffix=".tsv") as log:
        command = ["h2load", "-n", str(requests), "-c", str(concurrency), "-m", "1"]
        started = time.monotonic()
        subprocess.run(
            [*command, f"--log-file={log.name}", *arguments],
            check=True,
            capture_output=True,
            timeout=300,
        )
        elapsed_s = time.monotonic() - started
        rows = [line.split("\t") for line in Path(log.name).read_text().splitlines()]
    samples = [int(row[2]) / 1_000_000 for row in rows if row[1] == "200"]
    return summarize(samples, len(rows) - len(samples), elapsed_s)


def grpc_body(shipment_id: str) -> bytes:
    """Return a length-prefixed gRPC message of GetShipmentStatus, as on the wire."""
    message = status_pb2.GetShipmentStatusRequest(shipment_id=shipment_id).SerializeToString()
    return b"\x00" + len(message).to_bytes(4, "big") + message


async def latency_phase(
    stack: Stack, shipment_id: str, requests: int, concurrency: int
) -> dict[str, Latency]:
    replica = next(stack.topology.replicas("status"))
    full_path = ["--h1", f"{stack.front_http_url}/api/status/shipments/{shipment_id}"]
    with tempfile.NamedTemporaryFile(suffix=".bin") as body:
        body.write(grpc_body(shipment_id))
        body.flush()
        direct = [
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            "-d",
            body.name,
            f"http://{replica.address}/envios.status.v1.StatusService/GetShipmentStatus",
        ]
        # Warm the cache and the connections, then alternate the two ways twice so that
        # neither gets a quieter machine.
        await asyncio.to_thread(h2load, full_path, 200, concurrency)
        results = {}
        for round_number in range(2):
            for name, arguments in (("full_path", full_path), ("direct_grpc", direct)):
                key = f"{name}_{round_number + 1}"
                results[key] = await asyncio.to_thread(h2load, arguments, requests, concurrency)
    return results


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    # The stack runs its own Redis and RabbitMQ even when REDIS_URL and AMQP_URL are set.
    environ = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "AMQP_URL")}
    with tempfile.TemporaryDirectory(prefix="envios-bench-") as state_dir:
        stack = Stack(load_topology().with_free_ports(), Path(state_dir), environ)
        await asyncio.to_thread(stack.up, 180.0)
        try:
            reads, replay_s = await replay_phase(stack, args.orders, args.shipments, args.readers)
            shipment_id = load_orders(args.orders)[0].order_id
            latency = await latency_phase(stack, shipment_id, args.requests, args.concurrency)
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
