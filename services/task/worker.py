"""Task worker process: ``python -m services.task.worker``.

Threads and ownership:

- The main thread owns the pika ``BlockingConnection``. It consumes with a prefetch of
  ``concurrency`` (RabbitMQ hands a worker a new task only when it has a free slot) and
  keeps heartbeats flowing, because no callback on it ever blocks.
- An asyncio loop on a second thread runs the tasks, so many 1-5 s tasks overlap.
- When a task finishes, its ack (or nack) is handed back to the connection's thread with
  ``add_callback_threadsafe``, the only pika call that is safe from another thread. The ack
  is sent only after the task's effect is committed. A delivery tag is only acked on the
  channel that delivered it; after a reconnect, old tags are dropped and RabbitMQ
  redelivers those messages, which the executor handles idempotently.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import grpc
import pika
from envios.shipment.v1 import shipment_pb2_grpc
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import AMQPError

from services.common.amqp import TASKS_QUEUE, connection_parameters, declare_topology
from services.common.cache import StatusCache
from services.common.config import (
    PREFIX,
    ConfigError,
    EnvReader,
    describe,
    read_amqp_url,
    read_database_url,
    read_redis_url,
    read_upstream,
)
from services.common.database import Database
from services.common.logs import configure_logging
from services.task.executor import TaskExecutor
from services.task.handlers import RetryLater
from services.task.store import SqliteTaskStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerConfig:
    """Configuration of one task worker process."""

    replica: str
    """Worker name in logs, for example ``worker-primary-1``."""
    site: str
    database_url: str
    redis_url: str
    amqp_url: str
    upstream_grpc: str
    """Envoy's gRPC listener, through which the handlers reach ShipmentService."""
    concurrency: int = 16
    """Tasks run at once (the AMQP prefetch count)."""
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
            concurrency=env.integer(PREFIX + "WORKER_CONCURRENCY", 16, minimum=1),
            log_level=env.choice(
                PREFIX + "LOG_LEVEL", ("DEBUG", "INFO", "WARNING", "ERROR"), "INFO"
            ),
        )
        env.check()
        return config


class Worker:
    """Consume the task queue and run each task on the asyncio thread."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(
            target=self.loop.run_forever, name="tasks", daemon=True
        )
        self._stopping = threading.Event()
        self._connection: pika.BlockingConnection | None = None
        self._consuming: BlockingChannel | None = None
        self._running: set[Future[None]] = set()
        self.executor: TaskExecutor | None = None

    def run(self) -> None:
        """Consume until ``stop()``; reconnect with capped backoff after a lost connection."""
        self._loop_thread.start()
        asyncio.run_coroutine_threadsafe(self._open(), self.loop).result()
        backoff = 0.5
        while not self._stopping.is_set():
            try:
                self._consume()
                backoff = 0.5
            except (AMQPError, OSError) as error:
                logger.warning(
                    "worker %s lost RabbitMQ (%s); reconnecting in %.1f s",
                    self.config.replica,
                    error,
                    backoff,
                )
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 10.0)
        asyncio.run_coroutine_threadsafe(self._close(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._loop_thread.join()
        self.loop.close()

    def stop(self) -> None:
        """Stop consuming; safe from a signal handler on the main thread."""
        self._stopping.set()
        if self._connection is not None and self._connection.is_open:
            self._connection.add_callback_threadsafe(self._stop_consuming)

    def _stop_consuming(self) -> None:
        if self._consuming is not None and self._consuming.is_open:
            self._consuming.stop_consuming()

    def _consume(self) -> None:
        connection = pika.BlockingConnection(connection_parameters(self.config.amqp_url))
        self._connection = connection
        try:
            channel = connection.channel()
            self._consuming = channel
            declare_topology(channel)
            channel.basic_qos(prefetch_count=self.config.concurrency)
            channel.basic_consume(TASKS_QUEUE, functools.partial(self._on_message, connection))
            logger.info(
                "worker %s consuming %s with prefetch %s",
                self.config.replica,
                TASKS_QUEUE,
                self.config.concurrency,
            )
            if not self._stopping.is_set():
                channel.start_consuming()
            self._drain(connection)
        finally:
            if connection.is_open:
                connection.close()

    def _drain(self, connection: pika.BlockingConnection) -> None:
        """Wait for running tasks so their acks go out before the connection closes."""
        while self._running and connection.is_open:
            connection.process_data_events(time_limit=0.2)

    def _on_message(
        self,
        connection: pika.BlockingConnection,
        channel: BlockingChannel,
        method: Any,
        properties: Any,
        body: bytes,
    ) -> None:
        try:
            task_id = json.loads(body)["task_id"]
        except (ValueError, KeyError, TypeError):
            logger.error("rejecting malformed task message %r", body[:200])
            channel.basic_reject(method.delivery_tag, requeue=False)
            return
        assert self.executor is not None
        future = asyncio.run_coroutine_threadsafe(self.executor.execute(task_id), self.loop)
        self._running.add(future)
        done = functools.partial(self._settle, connection, channel, method.delivery_tag, task_id)
        future.add_done_callback(
            lambda finished: connection.add_callback_threadsafe(functools.partial(done, finished))
        )

    def _settle(
        self,
        connection: pika.BlockingConnection,
        channel: BlockingChannel,
        tag: int,
        task_id: str,
        future: Future[None],
    ) -> None:
        self._running.discard(future)
        if not channel.is_open:
            logger.warning(
                "channel closed before task %s settled; RabbitMQ will redeliver it", task_id
            )
            return
        error = future.exception()
        if error is None:
            channel.basic_ack(tag)
        elif isinstance(error, RetryLater):
            channel.basic_nack(tag, requeue=True)
        else:
            logger.error("task %s failed unexpectedly; requeueing it", task_id, exc_info=error)
            channel.basic_nack(tag, requeue=True)

    async def _open(self) -> None:
        database = Database(self.config.database_url)
        await database.open()
        self._channel = grpc.aio.insecure_channel(self.config.upstream_grpc)
        self._cache = StatusCache(self.config.redis_url)
        stub = shipment_pb2_grpc.ShipmentServiceStub(self._channel)
        self._database = database
        self.executor = TaskExecutor(SqliteTaskStore(database), self._cache, stub)

    async def _close(self) -> None:
        await self._channel.close()
        await self._cache.close()
        await self._database.close()


def main() -> None:
    try:
        config = WorkerConfig.from_env(os.environ)
    except ConfigError as error:
        print(f"worker: {error}", file=sys.stderr)
        raise SystemExit(2) from error
    configure_logging(config.log_level, "task-worker", config.replica)
    logger.info("starting task worker with %s", describe(config))
    worker = Worker(config)
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    signal.signal(signal.SIGINT, lambda *_: worker.stop())
    worker.run()
    logger.info("worker %s stopped", config.replica)


if __name__ == "__main__":
    main()
