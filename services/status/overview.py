"""System overview: counts from the database and the task queue depth from RabbitMQ."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import pika
from pika.exceptions import AMQPError

from services.common.amqp import TASKS_QUEUE, connection_parameters
from services.common.database import now_us
from services.status.lograte import LogLimiter
from services.status.queries import Counts
from services.status.views import IN_FLIGHT_STATES

logger = logging.getLogger(__name__)

UNKNOWN_DEPTH = -1
"""Queue depth reported when RabbitMQ cannot be asked."""


@dataclass(frozen=True)
class OverviewView:
    """Counts that describe the whole system at ``compute_time_us``."""

    shipments_by_status: dict[str, int]
    tasks_by_state: dict[str, int]
    tasks_in_flight: int
    queue_depth: int
    """Messages ready in the task queue, or ``UNKNOWN_DEPTH``."""
    serving_site: str
    compute_time_us: int


class CountQueries(Protocol):
    async def counts(self) -> Counts: ...


class QueueDepthProbe:
    """Ask RabbitMQ how many messages wait in the task queue.

    Each probe opens a short-lived connection on a worker thread and declares the queue
    passively, which reads its message count without creating or changing it. A depth is
    reused for ``reuse_s`` so that a burst of overview calls opens one connection, and a
    failure for ``failure_reuse_s`` so that a broker outage costs one attempt per period.
    """

    def __init__(
        self,
        amqp_url: str,
        *,
        queue: str = TASKS_QUEUE,
        timeout_s: float = 1.0,
        reuse_s: float = 1.0,
        failure_reuse_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.amqp_url = amqp_url
        self.queue = queue
        self.timeout_s = timeout_s
        self.reuse_s = reuse_s
        self.failure_reuse_s = failure_reuse_s
        self._clock = clock
        self._lock = asyncio.Lock()
        self._reuse_until: float | None = None
        self._last = UNKNOWN_DEPTH
        self._warnings = LogLimiter(60.0, clock)

    async def depth(self) -> int:
        """Return the number of ready messages, or ``UNKNOWN_DEPTH`` when RabbitMQ fails."""
        async with self._lock:
            if self._reuse_until is not None and self._clock() < self._reuse_until:
                return self._last
            self._last = await self._probe()
            reuse_s = self.reuse_s if self._last != UNKNOWN_DEPTH else self.failure_reuse_s
            self._reuse_until = self._clock() + reuse_s
            return self._last

    async def _probe(self) -> int:
        try:
            return await asyncio.to_thread(self._declare_passive)
        except (AMQPError, OSError) as error:
            if self._warnings.allow():
                logger.warning(
                    "cannot read the depth of queue %s (%r); reporting %s"
                    " (%s similar warnings suppressed)",
                    self.queue,
                    error,
                    UNKNOWN_DEPTH,
                    self._warnings.take_suppressed(),
                )
            return UNKNOWN_DEPTH

    def _declare_passive(self) -> int:
        parameters = connection_parameters(self.amqp_url)
        parameters.socket_timeout = self.timeout_s
        parameters.stack_timeout = self.timeout_s * 2
        parameters.blocked_connection_timeout = self.timeout_s
        parameters.heartbeat = 0
        connection = pika.BlockingConnection(parameters)
        try:
            frame = connection.channel().queue_declare(self.queue, passive=True)
            return int(frame.method.message_count)
        finally:
            if connection.is_open:
                connection.close()


class OverviewReader:
    """Build the overview from the database counts and the queue depth."""

    def __init__(
        self,
        queries: CountQueries,
        queue_depth: Callable[[], Awaitable[int]],
        site: str,
    ) -> None:
        self.queries = queries
        self.queue_depth = queue_depth
        self.site = site

    async def overview(self) -> OverviewView:
        """Compute the overview now. Raises Unavailable when the database cannot be read."""
        counts, depth = await asyncio.gather(self.queries.counts(), self.queue_depth())
        in_flight = sum(counts.tasks_by_state.get(state, 0) for state in IN_FLIGHT_STATES)
        return OverviewView(
            shipments_by_status=counts.shipments_by_status,
            tasks_by_state=counts.tasks_by_state,
            tasks_in_flight=in_flight,
            queue_depth=depth,
            serving_site=self.site,
            compute_time_us=now_us(),
        )
