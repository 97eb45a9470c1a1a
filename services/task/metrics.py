"""Prometheus metrics of task execution, in the default ``prometheus_client`` registry.

Defining the metrics does no I/O; ``services.common.metrics.start_process_metrics`` serves
them on ``ENVIOS_METRICS_ADDRESS`` in the worker.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
DEAD_LETTER_DEPTH = Gauge(
    "envios_task_dead_letter_depth",
    "Messages in the dead-letter queue at the last check; operators inspect and clear them.",
    ["queue"],
)
RETRIES = Counter(
    "envios_task_retries_total", "Task attempts that failed transiently and were retried.", ["type"]
)
DEAD_LETTERED = Counter(
    "envios_tasks_dead_lettered_total",
    "Task messages this process saw dead-lettered (and marked FAILED when still unfinished).",
)
CONSUMER_PRIORITY = Gauge(
    "envios_task_consumer_priority",
    "RabbitMQ consumer priority of this worker on the task queue; it follows the traffic split.",
)
