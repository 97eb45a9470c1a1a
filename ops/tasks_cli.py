"""``envios tasks dlq list|requeue|purge``: work the dead-letter queue of the task queue.

The dead-letter queue contains the task messages that RabbitMQ dead-lettered after the
delivery limit, because workers crashed or failed unexpectedly on them each time, and the
messages that a worker rejected as malformed. Workers have already marked those tasks FAILED.

- ``list`` prints one JSON line per message (task id, RabbitMQ's reason, the task's state
  in the database) and leaves the messages in the queue.
- ``requeue`` sets each task back to QUEUED and publishes it to the task queue again
  (with publisher confirms), then removes it from the dead-letter queue.
- ``purge`` drops every message of the dead-letter queue.

NOTE: workers learn of a dead letter from a copy in the notification queue. A task
requeued before a worker consumed that copy (no worker running) is marked FAILED again
when a worker does.
"""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import AMQPError

from services.common.amqp import TaskQueueNames, connection_parameters, declare_topology
from services.common.database import connect, sqlite_path
from services.task.store import requeue_dead_lettered, task_from_row, task_message

logger = logging.getLogger(__name__)

StackFactory = Callable[[argparse.Namespace], Any]


def add_parser(commands: Any, stack_factory: StackFactory) -> None:
    """Register ``tasks`` on the CLI's subparsers; ``stack_factory`` builds the ``Stack``."""
    tasks = commands.add_parser(
        "tasks",
        help="operate the task queue (dead-letter queue)",
        description="Operate the task queue of the stack's RabbitMQ and database.",
    )
    tasks.add_argument("--amqp-url", help="broker (default: the stack's)")
    tasks.add_argument("--database-url", help="database (default: the stack's)")
    tasks.add_argument(
        "--namespace", default="", help="task queue namespace (ENVIOS_TASK_NAMESPACE; default none)"
    )
    actions = tasks.add_subparsers(dest="tasks_command", required=True, metavar="COMMAND")
    dlq = actions.add_parser("dlq", help="list, requeue or purge dead-lettered task messages")
    dlq_actions = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    for name, handler, text in (
        ("list", _list, "print the dead-lettered messages as JSON lines; changes nothing"),
        ("requeue", _requeue, "set the tasks back to QUEUED and publish them again"),
        ("purge", _purge, "drop every dead-lettered message"),
    ):
        parser = dlq_actions.add_parser(name, help=text, description=text)
        if name != "purge":
            parser.add_argument(
                "--limit", type=int, default=1000, help="messages to handle at most (default 1000)"
            )
        parser.set_defaults(handler=_guarded(handler, stack_factory))


def _guarded(handler: Callable[..., int], stack_factory: StackFactory) -> Callable[..., int]:
    def run(args: argparse.Namespace) -> int:
        if args.amqp_url is None or args.database_url is None:
            stack = stack_factory(args)
            args.amqp_url = args.amqp_url or stack.amqp_url
            args.database_url = args.database_url or stack.database_url
        try:
            return handler(args, TaskQueueNames(args.namespace))
        except AMQPError as error:
            logger.error("RabbitMQ at %s failed: %r; is the stack up?", args.amqp_url, error)
            return 1

    return run


@contextmanager
def _channel(amqp_url: str, names: TaskQueueNames) -> Iterator[BlockingChannel]:
    connection = pika.BlockingConnection(connection_parameters(amqp_url))
    try:
        channel = connection.channel()
        declare_topology(channel, names)
        yield channel
    finally:
        if connection.is_open:
            connection.close()


def _list(args: argparse.Namespace, names: TaskQueueNames) -> int:
    database = connect(sqlite_path(args.database_url))
    try:
        with _channel(args.amqp_url, names) as channel:
            # Unacknowledged gets return to the queue when the channel closes.
            for _, properties, body in _get(channel, names.dead_letter_queue, args.limit):
                print(json.dumps(describe_message(database, properties, body)))
    finally:
        database.close()
    return 0


def _requeue(args: argparse.Namespace, names: TaskQueueNames) -> int:
    database = connect(sqlite_path(args.database_url))
    requeued = 0
    try:
        with _channel(args.amqp_url, names) as channel:
            channel.confirm_delivery()
            for method, _, body in _get(channel, names.dead_letter_queue, args.limit):
                requeued += _requeue_one(database, channel, names, body)
                channel.basic_ack(method.delivery_tag)
    finally:
        database.close()
    print(f"requeued {requeued} tasks")
    return 0


def _requeue_one(
    database: sqlite3.Connection, channel: BlockingChannel, names: TaskQueueNames, body: bytes
) -> int:
    task_id = _task_id(body)
    task = requeue_dead_lettered(database, task_id) if task_id else None
    if task is None or task.state != "QUEUED":
        logger.warning("dropping dead letter %r: no task to requeue", body[:100])
        return 0
    channel.basic_publish(
        names.exchange,
        names.routing_key,
        task_message(task.id),
        pika.BasicProperties(
            delivery_mode=pika.DeliveryMode.Persistent,
            content_type="application/json",
            message_id=task.id,
        ),
        mandatory=True,
    )
    return 1


def _purge(args: argparse.Namespace, names: TaskQueueNames) -> int:
    with _channel(args.amqp_url, names) as channel:
        purged = channel.queue_purge(names.dead_letter_queue)
    print(f"purged {purged.method.message_count} messages from {names.dead_letter_queue}")
    return 0


def _get(channel: BlockingChannel, queue: str, limit: int) -> Iterator[tuple[Any, Any, bytes]]:
    for _ in range(limit):
        method, properties, body = channel.basic_get(queue, auto_ack=False)
        if method is None:
            return
        yield method, properties, body


def describe_message(database: sqlite3.Connection, properties: Any, body: bytes) -> dict[str, Any]:
    """Return the task id, RabbitMQ's dead-letter reason and the task's stored state."""
    task_id = _task_id(body)
    deaths = (properties.headers or {}).get("x-death") or [{}]
    reason = deaths[0].get("reason", "unknown")
    row = database.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
    task = task_from_row(row) if row is not None else None
    return {
        "task_id": task_id,
        "reason": reason.decode() if isinstance(reason, bytes) else reason,
        "state": task.state if task else "NOT_FOUND",
        "error": task.error_message if task else "",
        "type": task.type if task else "",
    }


def _task_id(body: bytes) -> str:
    try:
        value = json.loads(body).get("task_id", "")
    except (ValueError, AttributeError):
        return ""
    return value if isinstance(value, str) else ""
