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

from typing import Any

import unary_calls
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from services.common.errors import ErrorMappingInterceptor
from services.common.tracing_grpc import (
    TracingServerInterceptor,
    client_interceptors,
    server_interceptors,
)


def setups() -> dict[str, tuple[list[Any], list[Any]]]:
    """Return the (server, client) interceptor lists to compare, by name."""
    noop = trace.NoOpTracerProvider()
    sdk = TracerProvider()
    return {
        "tracing off": ([*server_interceptors(), ErrorMappingInterceptor()], client_interceptors()),
        "no-op provider": (
            [TracingServerInterceptor(noop), ErrorMappingInterceptor()],
            client_interceptors(noop),
        ),
        "SDK, spans dropped": (
            [TracingServerInterceptor(sdk), ErrorMappingInterceptor()],
            client_interceptors(sdk),
        ),
    }


if __name__ == "__main__":
    unary_calls.main(__doc__.splitlines()[0], setups)
