"""Benchmark the cost of the gRPC server metrics and the concurrency limit per call.

Starts two in-process ``grpc.aio`` servers with a trivial unary handler: one with only the
error mapping interceptor, one with the production chain (metrics, concurrency limit,
error mapping). One client sends sequential calls to each, in alternating rounds, and
prints the mean time per call of every round and the median per chain.

Run: ``.venv/bin/python benchmarks/metrics_overhead.py`` (options: ``--help``). Client and
server share one process and one event loop, so the numbers include the client's work.
"""

from __future__ import annotations

from typing import Any

import unary_calls
from prometheus_client import CollectorRegistry

from services.common.errors import ErrorMappingInterceptor
from services.common.interceptors import ConcurrencyLimitInterceptor
from services.common.metrics import ServerMetrics, ServerMetricsInterceptor


def chains() -> dict[str, tuple[list[Any], list[Any]]]:
    """Return the (server, client) interceptor lists to compare, by name."""
    metrics = ServerMetrics(CollectorRegistry())
    return {
        "error mapping only": ([ErrorMappingInterceptor()], []),
        "metrics + limit + error mapping": (
            [
                ServerMetricsInterceptor(metrics),
                ConcurrencyLimitInterceptor(500),
                ErrorMappingInterceptor(),
            ],
            [],
        ),
    }


if __name__ == "__main__":
    unary_calls.main(__doc__.splitlines()[0], chains)
