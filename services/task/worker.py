"""Task worker process: ``python -m services.task.worker``.

Threads and ownership:

- The main thread owns the pika ``BlockingConnection``. It consumes with a prefetch of
  ``concurrency`` (RabbitMQ hands a worker a new task only when it has a free slot) and
  keeps heartbeats flowing, because no callback on it ever blocks.
- An asyncio loop on a second thread runs the tasks, so many 1-5 s tasks overlap.
- With ``traffic_admin_url`` set, the asyncio loop also reads the traffic split from
  Envoy's admin API. When it calls for another consumer priority, the connection's thread
  replaces the task consumer (see ``Worker._change_priority``).
- When a task finishes, its ack (or nack) is handed back to the connection's thread with
  ``add_callback_threadsafe``, the only pika call that is safe from another thread. The ack
  is sent only after the task's final state is committed. A delivery tag is only acked on
  the channel that delivered it: after a reconnect, the tags of the lost channel are
  dropped and RabbitMQ redelivers those messages, which the executor handles idempotently.

Failure handling:

- Transient failures are retried inside the executor (see ``services.task.executor``).
- Any other exception returns the message to the queue (nack with requeue), which counts
  a delivery. After ``DELIVERY_LIMIT`` returns RabbitMQ dead-letters it; so does a
  message on which workers keep crashing. Workers consume the dead-letter notification
  queue and mark such a task FAILED, so no row stays RUNNING or RETRYING for ever.
- A lost connection is retried with capped exponential backoff and jitter. At start-up a
  task topology that exists with other arguments stops the worker with exit status 2.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import random
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import grpc
import httpx
import pika
from envios.shipment.v1 import shipment_pb2_grpc
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import AMQPError

from services.common import tracing
from services.common.amqp import TopologyMismatch, connection_parameters, declare_topology
from services.common.cache import StatusCache
from services.common.cache_outages import OutageLog
from services.common.config import ConfigError, describe
from services.common.database import Database
from services.common.logs import configure_logging
from services.common.metrics import MetricsConfig, start_process_metrics
from services.common.tracing import shutdown_tracing, start_tracing
from services.common.tracing_grpc import client_interceptors
from services.common.traffic import read_secondary_percent
from services.task import metrics
from services.task.executor import ExecutorSettings, TaskExecutor
from services.task.settings import WorkerConfig
from services.task.store import SqliteTaskStore

__all__ = ["Worker", "WorkerConfig", "main"]

logger = logging.getLogger(__name__)

RECONNECT_BASE_S = 0.5
RECONNECT_CAP_S = 10.0
TRAFFIC_READ_TIMEOUT_S = 1.0
"""Timeout of one read of Envoy's admin runtime, which is on loopback."""
QUEUE_DEPTH_INTERVAL_S = 5.0
"""How often the worker reads the depth of the task queue (``envios_task_queue_depth``) and
of its dead-letter queue (``envios_task_dead_letter_depth``)."""


class _Session:
    """One connection and its channel; tags are only settled on this channel."""

    def __init__(self, connection: pika.BlockingConnection, channel: BlockingChannel) -> None:
        self.connection = connection
        self.channel = channel
        self.running: dict[int, Future[None]] = {}
        self.waiting: deque[tuple[Any, Any, str]] = deque()
        """Deliveries (method, properties, task id) held until a task slot is free."""
        self.consumer_tag = ""
        self.priority = 0

    def call_threadsafe(self, callback: Callable[[], None], what: str) -> None:
        try:
            self.connection.add_callback_threadsafe(callback)
        except AMQPError:
            logger.warning("connection closed before %s; RabbitMQ will redeliver it", what)


class Worker:
    """Consume the task queue and run each task on the asyncio thread."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.names = config.tasks.names
        self.loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(
            target=self.loop.run_forever, name="tasks", daemon=True
        )
        self._stopping = threading.Event()
        self._session: _Session | None = None
        self.executor: TaskExecutor | None = None
        self.connections = 0
        """Connections opened so far; more than one means the worker reconnected."""
        self.consuming = threading.Event()
        """Set while the worker consumes (tests wait for it)."""
        self.priority = config.priority
        """Consumer priority for the current traffic split; new consumers take it."""
        self._traffic_task: asyncio.Task[None] | None = None

    @property
    def consumer_priority(self) -> int | None:
        """Priority of the task consumer on the broker now; None before the first one."""
        session = self._session
        return session.priority if session is not None and session.consumer_tag else None

    def run(self) -> None:
        """Consume until ``stop()``; reconnect with capped backoff after a lost connection.

        Raises:
            TopologyMismatch: the task queues exist with other arguments.
        """
        self._loop_thread.start()
        self._on_loop(self._open())
        try:
            self._consume_with_reconnect()
        finally:
            self._on_loop(self._close())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._loop_thread.join()
            self.loop.close()

    def stop(self) -> None:
        """Stop consuming; safe from a signal handler on the main thread."""
        self._stopping.set()
        session = self._session
        if session is not None and session.connection.is_open:
            session.call_threadsafe(self._stop_consuming, "the stop request")

    def _on_loop(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def _consume_with_reconnect(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                self._consume()
                failures = 0
            except TopologyMismatch:
                raise
            except (AMQPError, OSError) as error:
                self.consuming.clear()
                delay_s = _reconnect_delay_s(failures)
                failures += 1
                logger.warning(
                    "worker %s lost RabbitMQ (%r); reconnecting in %.1f s",
                    self.config.replica,
                    error,
                    delay_s,
                )
                self._stopping.wait(delay_s)

    def _stop_consuming(self) -> None:
        session = self._session
        if session is not None and session.channel.is_open:
            session.channel.stop_consuming()

    def _consume(self) -> None:
        parameters = connection_parameters(self.config.amqp_url, self.config.heartbeat_s)
        connection = pika.BlockingConnection(parameters)
        self.connections += 1
        try:
            channel = connection.channel()
            declare_topology(channel, self.names)
            session = _Session(connection, channel)
            self._session = session
            self._start_consumers(session)
            if not self._stopping.is_set():
                self.consuming.set()
                channel.start_consuming()
            self.consuming.clear()
            self._drain(session)
        finally:
            if connection.is_open:
                connection.close()

    def _start_consumers(self, session: _Session) -> None:
        channel = session.channel
        channel.basic_qos(prefetch_count=self.config.concurrency)
        self._consume_tasks(session, self.priority)
        channel.basic_consume(
            self.names.dead_letter_notify_queue, functools.partial(self._on_dead_letter, session)
        )
        self._watch_queue_depth(session)
        logger.info(
            "worker %s consuming %s with prefetch %s and priority %s",
            self.config.replica,
            self.names.queue,
            self.config.concurrency,
            session.priority,
        )

    def _consume_tasks(self, session: _Session, priority: int) -> None:
        session.consumer_tag = session.channel.basic_consume(
            self.names.queue,
            functools.partial(self._on_message, session),
            arguments={"x-priority": priority},
        )
        session.priority = priority
        metrics.CONSUMER_PRIORITY.set(priority)

    def _change_priority(self, session: _Session) -> None:
        """Replace the task consumer with one of priority ``self.priority`` (pika thread).

        RabbitMQ cannot change the priority of a consumer. pika nacks the old consumer's
        deliveries that it has not dispatched yet, so RabbitMQ requeues them. The old
        consumer's running tasks keep their slots, so a new delivery may wait in
        ``session.waiting``.
        """
        priority = self.priority
        stopping = self._stopping.is_set()
        if stopping or priority == session.priority or not session.channel.is_open:
            return
        if session.consumer_tag:
            session.channel.basic_cancel(session.consumer_tag)
        self._consume_tasks(session, priority)
        logger.info(
            "worker %s now consumes %s with priority %s",
            self.config.replica,
            self.names.queue,
            priority,
        )

    async def _follow_traffic(self) -> None:
        """Set ``self.priority`` from the traffic split in Envoy's runtime, every poll interval.

        While the admin API cannot be read, the priority stays as it is.
        """
        admin_url = self.config.traffic_admin_url
        failing = False
        async with httpx.AsyncClient(timeout=TRAFFIC_READ_TIMEOUT_S, trust_env=False) as client:
            while True:
                try:
                    percent = await read_secondary_percent(client, admin_url)
                except (httpx.HTTPError, ValueError) as error:
                    if not failing:
                        logger.warning(
                            "worker %s cannot read the traffic split from %s (%r); keeping "
                            "priority %s",
                            self.config.replica,
                            admin_url,
                            error,
                            self.priority,
                        )
                    failing = True
                else:
                    if failing:
                        logger.info("worker %s reads the traffic split again", self.config.replica)
                    failing = False
                    self._apply_split(percent)
                await asyncio.sleep(self.config.traffic_poll_s)

    def _traffic_stopped(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "worker %s stopped following the traffic split; priority stays %s",
                self.config.replica,
                self.priority,
                exc_info=task.exception(),
            )

    def _apply_split(self, percent: int) -> None:
        priority = self.config.priority_for(percent)
        if priority == self.priority:
            return
        logger.info(
            "worker %s: %s%% of calls go to the secondary first; consumer priority %s -> %s",
            self.config.replica,
            percent,
            self.priority,
            priority,
        )
        self.priority = priority
        session = self._session
        if session is not None and session.connection.is_open:
            session.call_threadsafe(
                functools.partial(self._change_priority, session), "the priority change"
            )

    def _watch_queue_depth(self, session: _Session) -> None:
        if not session.channel.is_open:
            return
        for queue, gauge in (
            (self.names.queue, metrics.QUEUE_DEPTH),
            (self.names.dead_letter_queue, metrics.DEAD_LETTER_DEPTH),
        ):
            declared = session.channel.queue_declare(queue, passive=True)
            gauge.labels(queue).set(declared.method.message_count)
        session.connection.call_later(
            QUEUE_DEPTH_INTERVAL_S, functools.partial(self._watch_queue_depth, session)
        )

    def _drain(self, session: _Session) -> None:
        """Return held deliveries, then wait up to ``stop_grace_s`` for running tasks so their
        acks go out."""
        while session.waiting and session.channel.is_open:
            method, _, _ = session.waiting.popleft()
            session.channel.basic_nack(method.delivery_tag, requeue=True)
        deadline = time.monotonic() + self.config.stop_grace_s
        while session.running and session.connection.is_open:
            if time.monotonic() >= deadline:
                logger.warning(
                    "worker %s abandons %s running tasks after %.1f s; RabbitMQ redelivers them",
                    self.config.replica,
                    len(session.running),
                    self.config.stop_grace_s,
                )
                for future in session.running.values():
                    future.cancel()
                return
            session.connection.process_data_events(time_limit=0.2)

    def _on_message(
        self,
        session: _Session,
        channel: BlockingChannel,
        method: Any,
        properties: Any,
        body: bytes,
    ) -> None:
        task_id = _task_id(body)
        if task_id is None:
            logger.error("rejecting malformed task message %r", body[:200])
            channel.basic_reject(method.delivery_tag, requeue=False)
            return
        if len(session.running) >= self.config.concurrency:
            # Only after a priority change: the old consumer's tasks still hold their slots.
            # The wait is at most one task's hold, which _check_hold leaves room for within
            # the broker's consumer timeout.
            session.waiting.append((method, properties, task_id))
            return
        self._start(session, method, properties, task_id)

    def _start(self, session: _Session, method: Any, properties: Any, task_id: str) -> None:
        assert self.executor is not None
        coroutine = self._execute(self.executor, task_id, method, properties)
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        tag = method.delivery_tag
        session.running[tag] = future
        settle = functools.partial(self._settle, session, tag, task_id)
        future.add_done_callback(
            lambda done: session.call_threadsafe(
                functools.partial(settle, done), f"task {task_id} settled"
            )
        )

    @staticmethod
    async def _execute(executor: TaskExecutor, task_id: str, method: Any, properties: Any) -> None:
        """Run the task in a CONSUMER span that continues the trace which submitted it."""
        headers = properties.headers
        with tracing.consumer_span(method.exchange, method.routing_key, task_id, headers):
            await executor.execute(task_id)

    def _settle(self, session: _Session, tag: int, task_id: str, future: Future[None]) -> None:
        session.running.pop(tag, None)
        if session.waiting and session.channel.is_open and not self._stopping.is_set():
            self._start(session, *session.waiting.popleft())
        if not session.channel.is_open:
            logger.warning("channel closed before task %s settled; RabbitMQ redelivers it", task_id)
            return
        if future.cancelled():
            session.channel.basic_nack(tag, requeue=True)
            return
        error = future.exception()
        if error is None:
            session.channel.basic_ack(tag)
            return
        logger.error(
            "task %s failed unexpectedly; returning it to the queue", task_id, exc_info=error
        )
        session.channel.basic_nack(tag, requeue=True)

    def _on_dead_letter(
        self,
        session: _Session,
        channel: BlockingChannel,
        method: Any,
        properties: Any,
        body: bytes,
    ) -> None:
        task_id = _task_id(body)
        tag = method.delivery_tag
        if task_id is None or self.executor is None:
            channel.basic_ack(tag)
            return
        coroutine = self.executor.mark_dead_lettered(task_id, _death_reason(properties))
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)

        def settle(done: Future[None]) -> None:
            if channel.is_open:
                if done.exception() is None:
                    channel.basic_ack(tag)
                else:
                    channel.basic_nack(tag, requeue=True)

        future.add_done_callback(
            lambda done: session.call_threadsafe(
                functools.partial(settle, done), f"dead letter of {task_id}"
            )
        )

    async def _open(self) -> None:
        self._database = Database(self.config.database_url)
        await self._database.open()
        self._channel = grpc.aio.insecure_channel(
            self.config.upstream_grpc, interceptors=client_interceptors()
        )
        self._cache = StatusCache(self.config.redis_url)
        stub = shipment_pb2_grpc.ShipmentServiceStub(self._channel)
        settings = ExecutorSettings(
            worker=self.config.replica,
            task_timeout_s=self.config.tasks.task_timeout_s,
            retry=self.config.tasks.retry,
            time_scale=self.config.tasks.time_scale,
        )
        store = SqliteTaskStore(self._database, self.names, self.config.site)
        self._outages = OutageLog(self._database, self.config.replica, self._cache)
        self.executor = TaskExecutor(store, self._cache, stub, settings, outages=self._outages)
        if self.config.traffic_admin_url:
            self._traffic_task = asyncio.get_running_loop().create_task(self._follow_traffic())
            self._traffic_task.add_done_callback(self._traffic_stopped)

    async def _close(self) -> None:
        if self._traffic_task is not None:
            self._traffic_task.cancel()
        await self._channel.close()
        await self._outages.close()
        await self._cache.close()
        await self._database.close()


def _reconnect_delay_s(failures: int) -> float:
    ceiling = min(RECONNECT_CAP_S, RECONNECT_BASE_S * 2.0**failures)
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def _task_id(body: bytes) -> str | None:
    try:
        task_id = json.loads(body)["task_id"]
    except (ValueError, KeyError, TypeError):
        return None
    return task_id if isinstance(task_id, str) else None


def _death_reason(properties: Any) -> str:
    """Return why RabbitMQ dead-lettered a message (``delivery_limit``, ``rejected``...)."""
    headers = properties.headers or {}
    deaths = headers.get("x-death") or [{}]
    reason = deaths[0].get("reason", b"unknown")
    return reason.decode() if isinstance(reason, bytes) else str(reason)


def main() -> None:
    try:
        config = WorkerConfig.from_env(os.environ)
    except ConfigError as error:
        print(f"worker: {error}", file=sys.stderr)
        raise SystemExit(2) from error
    configure_logging(config.log_level, "task-worker", config.replica)
    logger.info("starting task worker with %s", describe(config))
    start_tracing("task-worker", config.replica, config.site)
    start_process_metrics(
        MetricsConfig(config.metrics_address, "worker", config.site, config.replica)
    )
    worker = Worker(config)
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    signal.signal(signal.SIGINT, lambda *_: worker.stop())
    try:
        worker.run()
    except TopologyMismatch as error:
        logger.error("worker %s cannot start: %s", config.replica, error)
        raise SystemExit(2) from error
    finally:
        shutdown_tracing()
    logger.info("worker %s stopped", config.replica)


if __name__ == "__main__":
    main()
