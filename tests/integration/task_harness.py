"""Helpers of the task tests: RabbitMQ queue counts, topology clean-up, database checks."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable

import pika
from pika.exceptions import ChannelClosedByBroker

from services.common.amqp import TASKS_EXCHANGE, TaskQueueNames, connection_parameters


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 30.0) -> None:
    """Poll ``check`` until it returns True; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def queue_counts(amqp_url: str, queue: str) -> tuple[int, int]:
    """Return ``(ready messages, consumers)`` of ``queue``, or ``(-1, -1)`` when it is missing."""
    connection = pika.BlockingConnection(connection_parameters(amqp_url))
    try:
        declared = connection.channel().queue_declare(queue, passive=True)
    except ChannelClosedByBroker:
        return -1, -1
    finally:
        if connection.is_open:
            connection.close()
    return declared.method.message_count, declared.method.consumer_count


def delete_task_topology(amqp_url: str, names: TaskQueueNames) -> None:
    """Delete the queues and the dead-letter exchange of a test namespace."""
    assert names.namespace, "only test namespaces are deleted"
    connection = pika.BlockingConnection(connection_parameters(amqp_url))
    try:
        channel = connection.channel()
        for queue in (names.queue, names.dead_letter_queue, names.dead_letter_notify_queue):
            channel.queue_delete(queue)
        channel.exchange_delete(names.dead_letter_exchange)
    finally:
        connection.close()


def transitions_by_task(database_path: str, shipment_id: str, task_id: str) -> int:
    """Return how many applied transitions of ``shipment_id`` the task made."""
    with sqlite3.connect(database_path) as connection:
        row = connection.execute(
            "SELECT COUNT(*) FROM transitions WHERE shipment_id = ? AND task_id = ? AND applied",
            (shipment_id, task_id),
        ).fetchone()
    return int(row[0])


def count_rows(database_path: str, table: str) -> int:
    with sqlite3.connect(database_path) as connection:
        return int(connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def task_messages(database_path: str) -> int:
    """Return how many task queue messages the outbox holds, sent or not."""
    with sqlite3.connect(database_path) as connection:
        row = connection.execute(
            "SELECT COUNT(*) FROM outbox WHERE exchange = ?", (TASKS_EXCHANGE,)
        ).fetchone()
    return int(row[0])
