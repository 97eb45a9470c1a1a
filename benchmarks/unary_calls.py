"""Shared loop of the interceptor benchmarks: sequential unary calls to a trivial server.

Each set-up is a pair of server and client interceptor lists. For every round and set-up,
a fresh in-process ``grpc.aio`` server and channel on 127.0.0.1 exchange ``WARM_UP_CALLS``
calls and then ``calls`` timed ones; the script prints the median time per call of every
set-up. Client and server share one process, so the client's work is in every number.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any

import grpc

WARM_UP_CALLS = 300

Setups = Callable[[], dict[str, tuple[list[Any], list[Any]]]]
"""Returns the (server, client) interceptor lists to compare, by name."""


async def reply(request: bytes, context: Any) -> bytes:
    return b"ok"


async def time_per_call_us(server_side: list[Any], client_side: list[Any], calls: int) -> float:
    """Return the mean microseconds of ``calls`` sequential calls to a fresh server."""
    server = grpc.aio.server(interceptors=server_side)
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


async def compare(setups: Setups, calls: int, rounds: int) -> None:
    """Time every set-up in alternating rounds and print each one's median per call."""
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


def main(description: str, setups: Setups) -> None:
    """Parse ``--calls`` and ``--rounds`` and run ``compare`` on ``setups``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--calls", type=int, default=3000, help="calls per round (default 3000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per set-up (default 5)")
    args = parser.parse_args()
    asyncio.run(compare(setups, args.calls, args.rounds))
