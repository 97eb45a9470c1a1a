"""Benchmark the cost of the gRPC server metrics and the concurrency limit per call.

Starts two in-process ``grpc.aio`` servers with a trivial unary handler: one with only the
error mapping interceptor, one with the production chain (metrics, concurrency limit,
error mapping). One client sends sequential calls to each, in alternating rounds, and
prints the mean time per call of every round and the median per chain.

Run: ``.venv/bin/python benchmarks/metrics_overhead.py`` (options: ``--help``). Client and
server share one process and one event loop, so the numbers include the client's work.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import grpc
from prometheus_client import CollectorRegistry

from services.common.errors import ErrorMappingInterceptor
from services.common.interceptors import ConcurrencyLimitInterceptor
from services.common.metrics import ServerMetrics, ServerMetricsInterceptor

WARM_UP_CALLS = 300


async def reply(request: bytes, context: Any) -> bytes:
    return b"ok"


def chains() -> dict[str, list[grpc.aio.ServerInterceptor]]:
    """Return the interceptor chains to compare, by name."""
    metrics = ServerMetrics(CollectorRegistry())
    return {
        "error mapping only": [ErrorMappingInterceptor()],
        "metrics + limit + error mapping": [
            ServerMetricsInterceptor(metrics),
            ConcurrencyLimitInterceptor(500),
            ErrorMappingInterceptor(),
        ],
    }


async def time_per_call_us(interceptors: list[grpc.aio.ServerInterceptor], calls: int) -> float:
    """Return the mean microseconds of ``calls`` sequential calls to a fresh server."""
    server = grpc.aio.server(interceptors=interceptors)
    handlers = {"Reply": grpc.unary_unary_rpc_method_handler(reply)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.S", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            method = channel.unary_unary("/bench.S/Reply")
            for _ in range(WARM_UP_CALLS):
                await method(b"")
            began = time.perf_counter()
            for _ in range(calls):
                await method(b"")
            return (time.perf_counter() - began) / calls * 1e6
    finally:
        await server.stop(None)


async def compare(calls: int, rounds: int) -> None:
    results: dict[str, list[float]] = {name: [] for name in chains()}
    for _ in range(rounds):
        for name, interceptors in chains().items():
            results[name].append(await time_per_call_us(interceptors, calls))
    for name, values in results.items():
        shown = ", ".join(f"{value:.0f}" for value in values)
        print(f"{name}: median {statistics.median(values):.0f} us per call (rounds: {shown})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000, help="calls per round (default 3000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per chain (default 5)")
    args = parser.parse_args()
    asyncio.run(compare(args.calls, args.rounds))


if __name__ == "__main__":
    main()
