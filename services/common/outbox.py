"""The outbox relay: publish committed outbox rows to RabbitMQ.

The relay runs on its own thread with a pika ``BlockingConnection``: it claims unsent
outbox rows, publishes each as a persistent message with publisher confirms, and marks a
row sent only after the broker confirmed it. A crash between the confirm and the mark
publishes the row again, so consumers deduplicate by ``message_id``.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

import pika
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import AMQPError

from services.common.amqp import TASKS_EXCHANGE, connection_parameters, declare_topology
from services.common.database import connect, now_us, sqlite_path

logger = logging.getLogger(__name__)

CLAIM_S = 30.0
"""How long a relay owns the rows it claimed; another relay may take them after that."""


class OutboxRelay:
    """Publish outbox rows to RabbitMQ from a background thread."""

    def __init__(self, database_url: str, amqp_url: str, name: str, batch: int = 100) -> None:
        self.database_path = sqlite_path(database_url)
        self.amqp_url = amqp_url
        self.name = name
        self.batch = batch
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"outbox-{name}", daemon=True)
        self.published = 0

    def start(self) -> None:
        self._thread.start()

    def notify(self) -> None:
        """Wake the relay after a commit so new rows go out without waiting for the poll."""
        self._wake.set()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        database = connect(self.database_path)
        backoff = 0.5
        while not self._stop.is_set():
            try:
                self._serve(database)
                backoff = 0.5
            except (AMQPError, OSError) as error:
                logger.warning(
                    "outbox relay %s lost RabbitMQ (%s); retrying in %.1f s",
                    self.name,
                    error,
                    backoff,
                )
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
            except sqlite3.OperationalError as error:
                logger.warning("outbox relay %s database error: %s", self.name, error)
                self._stop.wait(1.0)
        database.close()

    def _serve(self, database: sqlite3.Connection) -> None:
        connection = pika.BlockingConnection(connection_parameters(self.amqp_url))
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            declare_topology(channel)
            logger.info("outbox relay %s connected to RabbitMQ", self.name)
            while not self._stop.is_set():
                if not self._publish_batch(database, channel):
                    connection.process_data_events(time_limit=0)
                    self._wake.wait(0.5)
                    self._wake.clear()
        finally:
            if connection.is_open:
                connection.close()

    def _publish_batch(self, database: sqlite3.Connection, channel: BlockingChannel) -> int:
        rows = claim(database, self.batch)
        for row in rows:
            channel.basic_publish(
                exchange=row["exchange"],
                routing_key=row["routing_key"],
                body=row["body"],
                properties=pika.BasicProperties(
                    delivery_mode=pika.DeliveryMode.Persistent,
                    content_type="application/json",
                    message_id=row["message_id"],
                ),
                mandatory=row["exchange"] == TASKS_EXCHANGE,
            )
            mark_sent(database, row["seq"])
            self.published += 1
        return len(rows)


def claim(database: sqlite3.Connection, limit: int) -> list[sqlite3.Row]:
    """Claim up to ``limit`` unsent rows for ``CLAIM_S`` and return them in order."""
    now = now_us()
    database.execute("BEGIN IMMEDIATE")
    try:
        rows = database.execute(
            "UPDATE outbox SET claimed_until_us = ? WHERE seq IN (SELECT seq FROM outbox"
            " WHERE sent_time_us IS NULL AND claimed_until_us < ? ORDER BY seq LIMIT ?)"
            " RETURNING seq, exchange, routing_key, message_id, body",
            (now + int(CLAIM_S * 1_000_000), now, limit),
        ).fetchall()
        database.commit()
    except BaseException:
        database.rollback()
        raise
    return sorted(rows, key=lambda row: row["seq"])


def mark_sent(database: sqlite3.Connection, seq: int) -> None:
    database.execute("UPDATE outbox SET sent_time_us = ? WHERE seq = ?", (now_us(), seq))
