"""StatusService wiring: configuration, status cache, database and queue depth probe.

The service only reads. It consumes nothing from RabbitMQ and never waits on task
execution. Becoming ready needs only the database, so a Redis outage at start does not
delay readiness.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3

import grpc
from envios.status.v1 import status_pb2, status_pb2_grpc

from services.common.cache import StatusCache
from services.common.cache_outages import read_outages
from services.common.database import Database, now_us
from services.status.config import StatusConfig
from services.status.metrics import StatusMetrics
from services.status.overview import OverviewReader, QueueDepthProbe
from services.status.queries import SqliteStatusQueries
from services.status.reader import StatusReader
from services.status.servicer import StatusServicer

logger = logging.getLogger(__name__)

SERVICE_NAME = status_pb2.DESCRIPTOR.services_by_name["StatusService"].full_name


class StatusApp:
    """``ServiceApp`` of StatusService."""

    service_name = SERVICE_NAME

    def __init__(self, config: StatusConfig) -> None:
        self.config = config
        self.database = Database(config.database_url)
        self.cache = StatusCache(
            config.redis_url, timeout_s=config.redis_timeout_s, ttl_s=config.cache_ttl_s
        )
        queries = SqliteStatusQueries(self.database)
        self.metrics = StatusMetrics()
        self.reader = StatusReader(
            self.cache,
            queries,
            not_found_ttl_s=config.not_found_ttl_s,
            verify_after_recovery_s=config.verify_after_recovery_s,
            metrics=self.metrics,
        )
        self.queue_probe = QueueDepthProbe(config.amqp_url)
        self._outage_watch: asyncio.Task[None] | None = None
        self.overview = OverviewReader(queries, self.queue_probe.depth, config.server.site)

    async def _watch_outages(self) -> None:
        """Tell the reader about the writers' cache outages every ``outage_poll_s``."""
        while True:
            try:
                state = await read_outages(self.database)
            except sqlite3.Error as error:
                logger.warning("reading cache outage records failed: %s", error)
            else:
                self.reader.note_outages(state, now_us())
            await asyncio.sleep(self.config.outage_poll_s)

    def register(self, server: grpc.aio.Server) -> None:
        status_pb2_grpc.add_StatusServiceServicer_to_server(
            StatusServicer(self.reader, self.overview), server
        )

    async def start(self) -> None:
        """Open the database, then ping Redis once and log a warning when it does not reply."""
        await self.database.open()
        # pika logs each failed connection attempt at ERROR, several lines each; the queue
        # depth probe, its only user here, reports failures in one rate-limited warning.
        logging.getLogger("pika").setLevel(logging.CRITICAL)
        if not await self.cache.ping():
            logger.warning(
                "status cache at REDIS_URL is not reachable; reads use the database until it is"
            )
        self._outage_watch = asyncio.create_task(self._watch_outages())

    async def close(self) -> None:
        if self._outage_watch is not None:
            self._outage_watch.cancel()
            await asyncio.gather(self._outage_watch, return_exceptions=True)
        await self.cache.close()
        await self.database.close()
