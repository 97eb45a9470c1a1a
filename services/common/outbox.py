"""The outbox relay: publish committed outbox rows to RabbitMQ, in commit order.

Every ShipmentService and TaskService replica runs a relay on its own thread, but only
one relay publishes at a time: the holder of the ``outbox_lease`` row in the database.
The holder publishes the unsent rows in ``seq`` order (commit order), each as a
persistent message with publisher confirms, and marks a row sent only after the broker
confirmed it. So the events of one shipment reach each queue in the order they were
committed, and a row is never skipped.

Failure cases:

- The relay dies between the confirm and the mark: the next holder publishes that row
  again, so consumers deduplicate by ``message_id`` (and by the event's version).
- The broker is unreachable: the holder releases the lease and retries with capped
  backoff; rows wait in the outbox.
- The holder stops renewing (killed, paused): another relay takes the lease once it
  expires (``lease_s``). A holder checks its own lease time before each publish, so a
  relay that resumes after its lease expired stops instead of publishing beside the new
  holder.

The other relays only read the lease row while they wait, so they add no write load.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import uuid

import pika
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import AMQPError

from services.common.amqp import (
    EVENTS_EXCHANGE,
    connection_parameters,
    declare_topology,
)
from services.common.database import connect, now_us, sqlite_path
from services.common.tracing import stored_headers

logger = logging.getLogger(__name__)

LEASE_NAME = "outbox"
"""Name of the lease row of the shared outbox table."""

LEASE_S = 5.0
"""Default lease time: how long after its last renewal a stopped relay blocks the others."""

POLL_S = 0.1
"""How often the holder looks for rows written by other processes, and how often a
waiting relay reads the lease row."""

STATUS_EVENTS_QUEUE = "envios.status.events"
"""Quorum queue of the status projector, bound to every shipment event."""


def declare_event_queues(channel: BlockingChannel, queue: str = STATUS_EVENTS_QUEUE) -> None:
    """Declare ``queue``, which every shipment event must reach; safe to repeat.

    The relay declares it too, so events committed before the first projector starts
    are queued, not dropped by an exchange with no binding. Single active consumer keeps
    one projector at a time consuming, in queue order; the others wait as standbys.
    """
    channel.exchange_declare(EVENTS_EXCHANGE, "topic", durable=True)
    channel.queue_declare(
        queue,
        durable=True,
        arguments={"x-queue-type": "quorum", "x-single-active-consumer": True},
    )
    channel.queue_bind(queue, EVENTS_EXCHANGE, "shipment.#")


class OutboxLease:
    """The right to publish the outbox, held by one relay for ``lease_s`` at a time."""

    def __init__(self, holder: str, lease_s: float = LEASE_S) -> None:
        self.holder = holder
        self.lease_us = int(lease_s * 1_000_000)
        self.expires_us = 0

    def held(self) -> bool:
        """Tell whether this relay's lease is still valid with a quarter of it to spare."""
        return now_us() < self.expires_us - self.lease_us // 4

    def acquire(self, database: sqlite3.Connection) -> bool:
        """Take or renew the lease unless another holder's lease is still valid.

        Reads first and writes only when the lease is free, expired, ours, or due for
        renewal, so waiting relays do not take the database write lock every poll.
        """
        if self.held() and now_us() < self.expires_us - self.lease_us // 2:
            return True
        row = database.execute(
            "SELECT holder, expires_us FROM outbox_lease WHERE name = ?", (LEASE_NAME,)
        ).fetchone()
        if row is not None and row["holder"] != self.holder and row["expires_us"] > now_us():
            return False
        return self._write(database)

    def _write(self, database: sqlite3.Connection) -> bool:
        now = now_us()
        expires = now + self.lease_us
        taken = database.execute(
            "INSERT INTO outbox_lease (name, holder, expires_us) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,"
            " expires_us = excluded.expires_us"
            " WHERE outbox_lease.holder = excluded.holder OR outbox_lease.expires_us <= ?"
            " RETURNING holder",
            (LEASE_NAME, self.holder, expires, now),
        ).fetchone()
        if taken is None:
            return False
        if self.expires_us < now:
            logger.info("outbox relay %s took the outbox lease", self.holder)
        self.expires_us = expires
        return True

    def release(self, database: sqlite3.Connection) -> None:
        """Give the lease up so that another relay takes over at once."""
        if self.expires_us == 0:
            return
        self.expires_us = 0
        database.execute(
            "UPDATE outbox_lease SET expires_us = 0 WHERE name = ? AND holder = ?",
            (LEASE_NAME, self.holder),
        )


class OutboxRelay:
    """Publish outbox rows to RabbitMQ from a background thread while holding the lease."""

    def __init__(
        self,
        database_url: str,
        amqp_url: str,
        name: str,
        batch: int = 100,
        *,
        lease_s: float = LEASE_S,
    ) -> None:
        self.database_path = sqlite_path(database_url)
        self.amqp_url = amqp_url
        self.name = name
        self.batch = batch
        holder = f"{name}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease = OutboxLease(holder, lease_s)
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
        """Stop publishing and release the lease so that another relay takes over."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        database = connect(self.database_path)
        backoff = 0.5
        while not self._stop.is_set():
            try:
                if self.lease.acquire(database):
                    self._serve(database)
                    backoff = 0.5
                else:
                    self._stop.wait(POLL_S)
            except (AMQPError, OSError) as error:
                logger.warning(
                    "outbox relay %s lost RabbitMQ (%r); retrying in %.1f s",
                    self.name,
                    error,
                    backoff,
                )
                self._release_quietly(database)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
            except sqlite3.OperationalError as error:
                logger.warning("outbox relay %s database error: %s", self.name, error)
                self._stop.wait(1.0)
        self._release_quietly(database)
        database.close()

    def _release_quietly(self, database: sqlite3.Connection) -> None:
        try:
            self.lease.release(database)
        except sqlite3.OperationalError as error:
            logger.warning("outbox relay %s could not release its lease: %s", self.name, error)

    def _serve(self, database: sqlite3.Connection) -> None:
        """Publish while the lease is held; return when it is lost or the relay stops."""
        connection = pika.BlockingConnection(connection_parameters(self.amqp_url))
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            declare_topology(channel)
            declare_event_queues(channel)
            logger.info("outbox relay %s connected to RabbitMQ", self.name)
            while not self._stop.is_set() and self.lease.acquire(database):
                if not self._publish_batch(database, channel):
                    connection.process_data_events(time_limit=0)
                    self._wake.wait(POLL_S)
                    self._wake.clear()
        finally:
            if connection.is_open:
                connection.close()

    def _publish_batch(self, database: sqlite3.Connection, channel: BlockingChannel) -> int:
        """Publish up to ``batch`` unsent rows in commit order; return how many went out."""
        count = 0
        for row in unsent(database, self.batch):
            if not self.lease.held() or self._stop.is_set():
                break
            self._publish_row(channel, row)
            self._mark_sent(database, row)
            self.published += 1
            count += 1
        return count

    def _publish_row(self, channel: BlockingChannel, row: sqlite3.Row) -> None:
        # With confirms on, basic_publish returns once the broker confirmed the message,
        # and raises when the broker returned it as unroutable or nacked it.
        channel.basic_publish(
            exchange=row["exchange"],
            routing_key=row["routing_key"],
            body=row["body"],
            properties=pika.BasicProperties(
                delivery_mode=pika.DeliveryMode.Persistent,
                content_type="application/json",
                message_id=row["message_id"],
                headers=stored_headers(row["headers"]),
            ),
            mandatory=True,
        )

    def _mark_sent(self, database: sqlite3.Connection, row: sqlite3.Row) -> None:
        mark_sent(database, row["seq"])


def unsent(database: sqlite3.Connection, limit: int) -> list[sqlite3.Row]:
    """Return up to ``limit`` unsent rows, oldest first."""
    return database.execute(
        "SELECT seq, exchange, routing_key, message_id, body, headers FROM outbox"
        " WHERE sent_time_us IS NULL ORDER BY seq LIMIT ?",
        (limit,),
    ).fetchall()


def mark_sent(database: sqlite3.Connection, seq: int) -> None:
    database.execute("UPDATE outbox SET sent_time_us = ? WHERE seq = ?", (now_us(), seq))
