"""Benchmark the per-call cost of the gRPC tracing interceptors.

Starts in-process ``grpc.aio`` servers with a trivial unary handler and the production
error mapping interceptor, and one client per server, in three set-ups:

- tracing off: what every process runs when no ``OTEL_*`` variable turns tracing on
  (``server_interceptors()`` and ``client_interceptors()`` return no interceptor);
- interceptors on the API's no-op provider: the tracing code path without an SDK;
- interceptors on an SDK provider with no span processor: spans are recorded and dropped,
  the cost of tracing on without the exporter's work.

One client sends sequential calls, in alternating rounds, and the script prints the
median time per call and calls per second of every set-up.

Run: ``.venv/bin/python benchmarks/tracing_overhead.py`` (options: ``--help``). Client and
server share one process and one event loop, so the numbers include the client's work.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from services.common.errors import ErrorMappingInterceptor
from services.common.tracing_grpc import (
    TracingServerInterceptor,
    client_interceptors,
    server_interceptors,
)

WARM_UP_CALLS = 300


async def reply(request: bytes, context: Any) -> bytes:
    return b"ok"


def setups() -> dict[str, tuple[list[Any], list[Any]]]:
    """Return the (server, client) interceptor lists to compare, by name."""
    noop = trace.NoOpTracerProvider()
    sdk = TracerProvider()
    return {
        "tracing off": (server_interceptors(), client_interceptors()),
        "no-op provider": ([TracingServerInterceptor(noop)], client_interceptors(noop)),
        "SDK, spans dropped": ([TracingServerInterceptor(sdk)], client_interceptors(sdk)),
    }


async def time_per_call_us(server_side: list[Any], client_side: list[Any], calls: int) -> float:
    """Return the mean microseconds of ``calls`` sequential calls to a fresh server."""
    server = grpc.aio.server(interceptors=[*server_side, ErrorMappingInterceptor()])
    handlers = {"Reply": grpc.unary_unary_rpc_method_handler(reply)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.S", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        target = f"127.0.0.1:{port}"
        async with grpc.aio.insecure_channel(target, interceptors=client_side) as channel:
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
    results: dict[str, list[float]] = {name: [] for name in setups()}
    for _ in range(rounds):
        for name, (server_side, client_side) in setups().items():
            results[name].append(await time_per_call_us(server_side, client_side, calls))
    for name, values in results.items():
        median = statistics.median(values)
        shown = ", ".join(f"{value:.0f}" for value in values)
        print(
            f"{name}: median {median:.0f} us per call, {1e6 / median:.0f} calls/s (rounds: {shown})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000, help="calls per round (default 3000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per set-up (default 5)")
    args = parser.parse_args()
    asyncio.run(compare(args.calls, args.rounds))


if __name__ == "__main__":
    main()
