"""RabbitMQ topology shared by publishers and consumers.

Topology (declared idempotently by every publisher and consumer):

- ``envios.tasks`` direct exchange -> ``envios.tasks`` durable quorum queue, with a
  delivery limit; messages past it are dead-lettered through ``envios.tasks.dlx`` into
  ``envios.tasks.dead``.
- ``envios.events`` topic exchange for shipment transitions (routing key
  ``shipment.<to_status>``).
"""

from __future__ import annotations

import logging

import pika
from pika.adapters.blocking_connection import BlockingChannel

logger = logging.getLogger(__name__)

TASKS_EXCHANGE = "envios.tasks"
TASKS_QUEUE = "envios.tasks"
TASKS_ROUTING_KEY = "task"
DEAD_LETTER_EXCHANGE = "envios.tasks.dlx"
DEAD_LETTER_QUEUE = "envios.tasks.dead"
EVENTS_EXCHANGE = "envios.events"

DELIVERY_LIMIT = 5
"""Deliveries of one task message before RabbitMQ dead-letters it."""


def connection_parameters(url: str) -> pika.URLParameters:
    parameters = pika.URLParameters(url)
    parameters.heartbeat = 30
    parameters.blocked_connection_timeout = 30
    parameters.connection_attempts = 1
    parameters.socket_timeout = 5
    return parameters


def declare_topology(channel: BlockingChannel) -> None:
    """Declare the exchanges and queues; safe to repeat."""
    channel.exchange_declare(DEAD_LETTER_EXCHANGE, "fanout", durable=True)
    channel.queue_declare(DEAD_LETTER_QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
    channel.queue_bind(DEAD_LETTER_QUEUE, DEAD_LETTER_EXCHANGE)
    channel.exchange_declare(TASKS_EXCHANGE, "direct", durable=True)
    channel.queue_declare(
        TASKS_QUEUE,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": DELIVERY_LIMIT,
            "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
        },
    )
    channel.queue_bind(TASKS_QUEUE, TASKS_EXCHANGE, TASKS_ROUTING_KEY)
    channel.exchange_declare(EVENTS_EXCHANGE, "topic", durable=True)
