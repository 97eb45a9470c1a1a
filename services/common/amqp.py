"""RabbitMQ topology shared by publishers and consumers.

Topology (declared idempotently by every publisher and consumer):

- ``envios.tasks`` direct exchange -> ``envios.tasks`` durable quorum queue (routing key
  ``task``) with a delivery limit. A message returned more than ``DELIVERY_LIMIT`` times
  (a worker crashed or failed unexpectedly on it each time) is dead-lettered through the
  ``envios.tasks.dlx`` fanout exchange into two bounded quorum queues:
  ``envios.tasks.dead``, which operators inspect with ``envios tasks dlq``, and
  ``envios.tasks.dead.notify``, from which workers mark the task FAILED.
- ``envios.events`` topic exchange for shipment transitions (routing key
  ``shipment.<to_status>``).

A namespace (``ENVIOS_TASK_NAMESPACE``) gives a separate queue, routing key and dead-letter
set on the same exchange, so tests that share one broker do not take each other's tasks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import AMQPError, ChannelClosedByBroker

TASKS_EXCHANGE = "envios.tasks"
TASKS_QUEUE = "envios.tasks"
TASKS_ROUTING_KEY = "task"
DEAD_LETTER_EXCHANGE = "envios.tasks.dlx"
DEAD_LETTER_QUEUE = "envios.tasks.dead"
EVENTS_EXCHANGE = "envios.events"

DELIVERY_LIMIT = 5
"""Returns of one task message (crash or unexpected error) before RabbitMQ dead-letters it."""

DEAD_LETTER_MAX_LENGTH = 10_000
"""Messages kept in each dead-letter queue; beyond it RabbitMQ drops the oldest (drop-head)."""

HEARTBEAT_S = 30
"""Default AMQP heartbeat timeout negotiated by envios connections, in seconds."""

PRECONDITION_FAILED = 406
"""AMQP reply code of a declaration whose arguments differ from the existing entity."""


class TopologyMismatch(AMQPError):
    """A queue or exchange exists with arguments that differ from the ones envios declares."""


@dataclass(frozen=True)
class TaskQueueNames:
    """Names of the task queue and its dead-letter set for one namespace."""

    namespace: str = ""

    def _suffix(self, base: str) -> str:
        return f"{base}.{self.namespace}" if self.namespace else base

    @property
    def exchange(self) -> str:
        return TASKS_EXCHANGE

    @property
    def queue(self) -> str:
        return self._suffix(TASKS_QUEUE)

    @property
    def routing_key(self) -> str:
        return self._suffix(TASKS_ROUTING_KEY)

    @property
    def dead_letter_exchange(self) -> str:
        return self._suffix(TASKS_QUEUE) + ".dlx"

    @property
    def dead_letter_queue(self) -> str:
        return self._suffix(TASKS_QUEUE) + ".dead"

    @property
    def dead_letter_notify_queue(self) -> str:
        return self._suffix(TASKS_QUEUE) + ".dead.notify"


DEFAULT_NAMES = TaskQueueNames()


def connection_parameters(url: str, heartbeat_s: int = HEARTBEAT_S) -> pika.URLParameters:
    """Return pika parameters for ``url`` with envios timeouts and ``heartbeat_s``."""
    parameters = pika.URLParameters(url)
    parameters.heartbeat = heartbeat_s
    parameters.blocked_connection_timeout = 30
    parameters.connection_attempts = 1
    parameters.socket_timeout = 5
    return parameters


def task_queue_arguments() -> dict[str, Any]:
    """Return the arguments of the task queue (the dead-letter exchange is added per name)."""
    return {"x-queue-type": "quorum", "x-delivery-limit": DELIVERY_LIMIT}


def dead_letter_queue_arguments() -> dict[str, Any]:
    return {"x-queue-type": "quorum", "x-max-length": DEAD_LETTER_MAX_LENGTH}


def declare_topology(channel: BlockingChannel, names: TaskQueueNames = DEFAULT_NAMES) -> None:
    """Declare the exchanges and queues; safe to repeat.

    Raises:
        TopologyMismatch: a queue or exchange exists with other arguments (RabbitMQ closes
            the channel); the message names it and how to fix it.
    """
    try:
        _declare(channel, names)
    except ChannelClosedByBroker as error:
        if error.reply_code != PRECONDITION_FAILED:
            raise
        raise TopologyMismatch(
            f"RabbitMQ rejected the task topology: {error.reply_text}. An existing queue or "
            "exchange was declared with other arguments; drain it and delete it (for example "
            "`rabbitmqctl delete_queue NAME`) so that envios can declare it again"
        ) from error


def _declare(channel: BlockingChannel, names: TaskQueueNames) -> None:
    channel.exchange_declare(names.dead_letter_exchange, "fanout", durable=True)
    for queue in (names.dead_letter_queue, names.dead_letter_notify_queue):
        channel.queue_declare(queue, durable=True, arguments=dead_letter_queue_arguments())
        channel.queue_bind(queue, names.dead_letter_exchange)
    channel.exchange_declare(names.exchange, "direct", durable=True)
    arguments = {**task_queue_arguments(), "x-dead-letter-exchange": names.dead_letter_exchange}
    channel.queue_declare(names.queue, durable=True, arguments=arguments)
    channel.queue_bind(names.queue, names.exchange, names.routing_key)
    channel.exchange_declare(EVENTS_EXCHANGE, "topic", durable=True)
