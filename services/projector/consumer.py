"""The status projector process: consume transition events and project them into Redis.

The main thread owns the pika ``BlockingConnection`` and an asyncio loop. Each event is
projected with ``loop.run_until_complete`` and then acked. Projecting takes a few Redis
calls and at most one database read, each bounded by its timeout. So an event is acked
only after the cache contains its state, and RabbitMQ delivers the unacked events of a
projector that dies again.

When Redis or the database is unavailable, the projector keeps the event unacked and
tries it again with capped backoff, sleeping through ``connection.sleep`` so heartbeats
keep flowing. Holding the event instead of requeueing it keeps the queue order, so the
events behind it wait instead of overtaking it. The queue has a single active consumer:
the projectors of the other sites wait as standbys and take over when this one's
connection closes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import AMQPError

from services.common import tracing
from services.common.amqp import connection_parameters
from services.common.cache import CacheUnavailable, StatusCache
from services.common.database import Database
from services.common.errors import Unavailable
from services.common.outbox import declare_event_queues
from services.projector.config import ProjectorConfig
from services.projector.projector import (
    MalformedEvent,
    Outcome,
    StatusProjector,
    lag_s,
    parse_event,
)
from services.status.lograte import LogLimiter
from services.status.metrics import ProjectorMetrics
from services.status.queries import SqliteStatusQueries

logger = logging.getLogger(__name__)

RETRY_BACKOFF_S = (0.05, 1.0)
"""First and largest wait between attempts at one event while Redis is unavailable."""

INACTIVITY_S = 0.5
"""How often an idle consumer checks whether it was asked to stop."""


class ProjectorConsumer:
    """Consume the events queue until ``stop()``, reconnecting after failures."""

    def __init__(self, config: ProjectorConfig, metrics: ProjectorMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics if metrics is not None else ProjectorMetrics()
        self.loop = asyncio.new_event_loop()
        self.database = Database(config.database_url)
        self.cache = StatusCache(config.redis_url)
        self.projector = StatusProjector(
            self.cache,
            SqliteStatusQueries(self.database),
            marker_ttl_s=config.event_marker_ttl_s,
        )
        self._stopping = threading.Event()
        self._warnings = LogLimiter(30.0)
        self.handled = 0

    def run(self) -> None:
        """Consume until ``stop()``; reconnect with capped backoff after a lost connection."""
        self.loop.run_until_complete(self.database.open())
        backoff = 0.5
        try:
            while not self._stopping.is_set():
                try:
                    self._consume()
                    backoff = 0.5
                except (AMQPError, OSError) as error:
                    logger.warning(
                        "projector %s lost RabbitMQ (%r); reconnecting in %.1f s",
                        self.config.replica,
                        error,
                        backoff,
                    )
                    self._stopping.wait(backoff)
                    backoff = min(backoff * 2, 10.0)
        finally:
            self.loop.run_until_complete(self._close())
            self.loop.close()

    def stop(self) -> None:
        """Ask the consumer to stop; safe from a signal handler or another thread."""
        self._stopping.set()

    async def _close(self) -> None:
        await self.cache.close()
        await self.database.close()

    def _consume(self) -> None:
        connection = pika.BlockingConnection(connection_parameters(self.config.amqp_url))
        try:
            channel = connection.channel()
            declare_event_queues(channel, self.config.queue)
            channel.basic_qos(prefetch_count=self.config.prefetch)
            logger.info(
                "projector %s consuming %s (prefetch %s)",
                self.config.replica,
                self.config.queue,
                self.config.prefetch,
            )
            messages = channel.consume(self.config.queue, inactivity_timeout=INACTIVITY_S)
            for method, properties, body in messages:
                if self._stopping.is_set():
                    break
                if method is not None:
                    with tracing.consumer_span(
                        method.exchange,
                        method.routing_key,
                        properties.message_id or "",
                        properties.headers,
                    ):
                        self._handle(connection, channel, method, properties, body)
            # Cancelling returns the delivered but unprocessed events to the queue.
            channel.cancel()
        finally:
            if connection.is_open:
                connection.close()

    def _handle(
        self,
        connection: pika.BlockingConnection,
        channel: BlockingChannel,
        method: Any,
        properties: Any,
        body: bytes,
    ) -> None:
        try:
            event = parse_event(body, properties.message_id)
        except MalformedEvent as error:
            logger.error("dropping malformed event: %s", error)
            self.metrics.events.labels(Outcome.MALFORMED.value).inc()
            channel.basic_ack(method.delivery_tag)
            return
        outcome = self._project_with_retries(connection, event)
        if outcome is None:
            return
        self.metrics.events.labels(outcome.value).inc()
        lag = lag_s(event)
        if lag is not None and outcome is not Outcome.DUPLICATE:
            self.metrics.observe_lag(lag)
        channel.basic_ack(method.delivery_tag)
        self.handled += 1

    def _project_with_retries(self, connection: pika.BlockingConnection, event: Any) -> Any:
        """Return the outcome, or None when asked to stop before the event was projected."""
        backoff, largest = RETRY_BACKOFF_S
        while not self._stopping.is_set():
            try:
                return self.loop.run_until_complete(self.projector.project(event))
            except (CacheUnavailable, Unavailable) as error:
                self.metrics.redis_retries.inc()
                if self._warnings.allow():
                    logger.warning(
                        "projector %s cannot project event %s (%s); retrying every %.2f s"
                        " up to %.1f s (%s similar warnings suppressed)",
                        self.config.replica,
                        event.event_id,
                        error,
                        backoff,
                        largest,
                        self._warnings.take_suppressed(),
                    )
                connection.sleep(backoff)
                backoff = min(backoff * 2, largest)
        return None
