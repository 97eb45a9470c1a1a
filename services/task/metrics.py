"""Prometheus metrics of task execution, in the default ``prometheus_client`` registry.

Defining the metrics does no I/O; ``serve_metrics`` exposes them over HTTP when a process
asks for it (the worker does with ``ENVIOS_METRICS_ADDRESS``).
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram, start_http_server

logger = logging.getLogger(__name__)

RUN_SECONDS = Histogram(
    "envios_task_attempt_duration_seconds",
    "Run time of one task attempt, by task type and outcome"
    " (succeeded, failed, cancelled, retry, timeout, error).",
    ["type", "outcome"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 3, 4, 5, 7.5, 10, 15, 30, 60, 120, 300),
)
IN_FLIGHT = Gauge("envios_tasks_in_flight", "Tasks this process is executing now.")
QUEUE_DEPTH = Gauge(
    "envios_task_queue_depth", "Messages ready in the task queue at the last check.", ["queue"]
)
RETRIES = Counter(
    "envios_task_retries_total", "Task attempts that failed transiently and were retried.", ["type"]
)
DEAD_LETTERED = Counter(
    "envios_tasks_dead_lettered_total",
    "Task messages this process saw dead-lettered (and marked FAILED when still unfinished).",
)


def serve_metrics(address: str) -> None:
    """Serve ``/metrics`` on ``host:port`` from a daemon thread."""
    host, _, port = address.rpartition(":")
    start_http_server(int(port), addr=host)
    logger.info("serving Prometheus metrics on %s", address)
