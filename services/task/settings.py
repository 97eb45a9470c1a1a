"""Settings shared by the task worker and TaskService, read from environment variables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from services.common.amqp import HEARTBEAT_S, TaskQueueNames
from services.common.config import (
    PREFIX,
    EnvReader,
    read_amqp_url,
    read_database_url,
    read_redis_url,
    read_upstream,
)
from services.task.executor import RetryPolicy

CONSUMER_TIMEOUT_S = 1800.0
"""RabbitMQ's default consumer acknowledgement timeout (30 minutes in 3.10): a delivery
left unacknowledged longer than this closes the worker's channel."""

NAMESPACE_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")


@dataclass(frozen=True)
class TaskSettings:
    """Task queue and execution settings; workers and TaskService read the same variables."""

    namespace: str = ""
    """Suffix of the task queue names (``ENVIOS_TASK_NAMESPACE``); empty in production."""
    task_timeout_s: float = 280.0
    """Maximum run time of one attempt (``ENVIOS_TASK_TIMEOUT_S``)."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    """``ENVIOS_TASK_MAX_ATTEMPTS``, ``ENVIOS_TASK_BACKOFF_BASE_S``, ``..._CAP_S``."""
    time_scale: float = 1.0
    """Factor on every simulated wait (``ENVIOS_TASK_TIME_SCALE``); tests shorten waits."""

    @property
    def names(self) -> TaskQueueNames:
        return TaskQueueNames(self.namespace)

    @classmethod
    def read(cls, env: EnvReader, environ: Mapping[str, str]) -> TaskSettings:
        """Read the settings; problems go to ``env`` (``env.check()`` reports them)."""
        return cls(
            namespace=_namespace(env, environ.get(PREFIX + "TASK_NAMESPACE", "")),
            task_timeout_s=env.seconds(PREFIX + "TASK_TIMEOUT_S", 280.0),
            retry=RetryPolicy(
                max_attempts=env.integer(PREFIX + "TASK_MAX_ATTEMPTS", 3, minimum=1),
                backoff_base_s=env.seconds(PREFIX + "TASK_BACKOFF_BASE_S", 1.0),
                backoff_cap_s=env.seconds(PREFIX + "TASK_BACKOFF_CAP_S", 30.0),
            ),
            time_scale=_time_scale(env),
        )


def _namespace(env: EnvReader, value: str) -> str:
    if not set(value) <= NAMESPACE_CHARACTERS:
        env.problems.append(
            f"{PREFIX}TASK_NAMESPACE may contain only a-z, 0-9, '-' and '_', got {value!r}"
        )
    return value


def _time_scale(env: EnvReader) -> float:
    value = env.seconds(PREFIX + "TASK_TIME_SCALE", 1.0)
    if value > 10:
        env.problems.append(f"{PREFIX}TASK_TIME_SCALE must be from 0 to 10, got {value:g}")
    return value


MAX_CONSUMER_PRIORITY = 255
"""Highest consumer priority this project sets; RabbitMQ compares priorities as integers."""


@dataclass(frozen=True)
class WorkerConfig:
    """Configuration of one task worker process."""

    replica: str
    """Worker name in logs and in the tasks it runs, for example ``worker-primary-1``."""
    site: str
    database_url: str
    redis_url: str
    amqp_url: str
    upstream_grpc: str
    """Envoy's gRPC listener, through which the handlers reach ShipmentService."""
    tasks: TaskSettings = TaskSettings()
    concurrency: int = 16
    """Tasks run at once (the AMQP prefetch count, ``ENVIOS_WORKER_CONCURRENCY``)."""
    priority: int = 0
    """Consumer priority on the task queue (``ENVIOS_WORKER_PRIORITY``, 0 to 255). RabbitMQ
    gives a task to a lower-priority consumer only while every higher-priority consumer has
    its prefetch full or is gone, so a site's workers with a lower priority stand by."""
    shifted_priority: int | None = None
    """Consumer priority while the operator sends every call to the secondary site first
    (``ENVIOS_WORKER_SHIFTED_PRIORITY``). None keeps ``priority``. While the split is
    partial, a worker takes the higher of the two, so the sites share the tasks."""
    traffic_admin_url: str = ""
    """Envoy admin URL whose runtime the worker polls for the traffic split
    (``ENVIOS_TRAFFIC_ADMIN_URL``); empty to keep ``priority`` whatever the split."""
    traffic_poll_s: float = 1.0
    """Interval between two reads of the traffic split (``ENVIOS_TRAFFIC_POLL_S``)."""
    heartbeat_s: int = HEARTBEAT_S
    """AMQP heartbeat timeout (``ENVIOS_AMQP_HEARTBEAT_S``)."""
    consumer_timeout_s: float = CONSUMER_TIMEOUT_S
    """The broker's consumer acknowledgement timeout (``ENVIOS_AMQP_CONSUMER_TIMEOUT_S``);
    the maximum time one delivery can stay unacknowledged must stay below half of it."""
    stop_grace_s: float = 10.0
    """Time running tasks get to finish after SIGTERM (``ENVIOS_SHUTDOWN_GRACE_S``); the
    ones still running are then abandoned, and RabbitMQ redelivers them."""
    metrics_address: str = ""
    """``host:port`` of a Prometheus ``/metrics`` endpoint (``ENVIOS_METRICS_ADDRESS``);
    empty for none."""
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> WorkerConfig:
        """Raises ConfigError listing every missing or invalid variable."""
        env = EnvReader(environ)
        config = cls(
            replica=env.text(PREFIX + "REPLICA", "worker-local"),
            site=env.text(PREFIX + "SITE", "primary"),
            database_url=read_database_url(env),
            redis_url=read_redis_url(env),
            amqp_url=read_amqp_url(env),
            upstream_grpc=read_upstream(env),
            tasks=TaskSettings.read(env, environ),
            concurrency=env.integer(PREFIX + "WORKER_CONCURRENCY", 16, minimum=1),
            priority=env.integer(PREFIX + "WORKER_PRIORITY", 0),
            shifted_priority=_optional_integer(env, environ, PREFIX + "WORKER_SHIFTED_PRIORITY"),
            traffic_admin_url=_optional_url(env, environ, PREFIX + "TRAFFIC_ADMIN_URL"),
            traffic_poll_s=env.seconds(PREFIX + "TRAFFIC_POLL_S", 1.0),
            heartbeat_s=env.integer(PREFIX + "AMQP_HEARTBEAT_S", HEARTBEAT_S, minimum=1),
            consumer_timeout_s=env.seconds(PREFIX + "AMQP_CONSUMER_TIMEOUT_S", CONSUMER_TIMEOUT_S),
            stop_grace_s=env.seconds(PREFIX + "SHUTDOWN_GRACE_S", 10.0),
            metrics_address=_optional_address(env, environ, PREFIX + "METRICS_ADDRESS"),
            log_level=env.choice(
                PREFIX + "LOG_LEVEL", ("DEBUG", "INFO", "WARNING", "ERROR"), "INFO"
            ),
        )
        _check_hold(env, config)
        for name, priority in (
            ("WORKER_PRIORITY", config.priority),
            ("WORKER_SHIFTED_PRIORITY", config.shifted_priority or 0),
        ):
            if priority > MAX_CONSUMER_PRIORITY:
                env.problems.append(
                    f"{PREFIX}{name} must be at most {MAX_CONSUMER_PRIORITY}, got {priority}"
                )
        if config.traffic_poll_s <= 0:
            env.problems.append(
                f"{PREFIX}TRAFFIC_POLL_S must be more than 0 s, got {config.traffic_poll_s:g}"
            )
        env.check()
        return config

    def priority_for(self, secondary_percent: int) -> int:
        """Return the consumer priority for the percentage of calls sent to the secondary first."""
        shifted = self.priority if self.shifted_priority is None else self.shifted_priority
        return consumer_priority(self.priority, shifted, secondary_percent)


def consumer_priority(normal: int, shifted: int, secondary_percent: int) -> int:
    """Return a worker's consumer priority for the percentage of calls sent to the secondary.

    0 gives ``normal`` and 100 gives ``shifted``. A partial split gives the higher of the
    two, so the workers of both sites take tasks in turn.
    """
    if secondary_percent <= 0:
        return normal
    if secondary_percent >= 100:
        return shifted
    return max(normal, shifted)


def _optional_address(env: EnvReader, environ: Mapping[str, str], name: str) -> str:
    return env.address(name) if environ.get(name) else ""


def _optional_url(env: EnvReader, environ: Mapping[str, str], name: str) -> str:
    return env.url(name, ("http",)) if environ.get(name) else ""


def _optional_integer(env: EnvReader, environ: Mapping[str, str], name: str) -> int | None:
    return env.integer(name, 0) if environ.get(name) else None


def _check_hold(env: EnvReader, config: WorkerConfig) -> None:
    hold_s = config.tasks.retry.longest_hold_s(config.tasks.task_timeout_s)
    if hold_s > config.consumer_timeout_s / 2:
        env.problems.append(
            f"one delivery may be held {hold_s:g} s (ENVIOS_TASK_MAX_ATTEMPTS x"
            " ENVIOS_TASK_TIMEOUT_S plus backoffs), more than half the broker's consumer"
            f" timeout ({config.consumer_timeout_s:g} s); lower the attempts or the timeout"
        )
