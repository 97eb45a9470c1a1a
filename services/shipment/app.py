"""ShipmentService wiring: configuration, store, status cache write-through, outbox relay."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import grpc
from envios.shipment.v1 import shipment_pb2, shipment_pb2_grpc

from services.common.cache import SHIPMENT_KEY, StatusCache, put_quietly
from services.common.cache_outages import OutageLog
from services.common.config import (
    EnvReader,
    ServerConfig,
    read_amqp_url,
    read_database_url,
    read_redis_url,
)
from services.common.database import Database
from services.common.outbox import OutboxRelay
from services.shipment.audit import AuditLog
from services.shipment.domain import Change, ShipmentState
from services.shipment.metrics import default_transition_metrics
from services.shipment.observed import ObservedStore
from services.shipment.servicer import ShipmentServicer
from services.shipment.store import ShipmentStore, ShipmentView, SqliteShipmentStore

SERVICE_NAME = shipment_pb2.DESCRIPTOR.services_by_name["ShipmentService"].full_name


@dataclass(frozen=True)
class ShipmentConfig:
    """Configuration of one ShipmentService replica."""

    server: ServerConfig
    database_url: str
    """Database of record (``ENVIOS_DATABASE_URL``)."""
    redis_url: str
    """Status cache written through after each commit (``REDIS_URL``)."""
    amqp_url: str
    """Broker that receives transition events from the outbox (``AMQP_URL``)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ShipmentConfig:
        """Raises ConfigError listing every missing or invalid variable."""
        env = EnvReader(environ)
        config = cls(
            server=ServerConfig.read(env, "shipment"),
            database_url=read_database_url(env),
            redis_url=read_redis_url(env),
            amqp_url=read_amqp_url(env),
        )
        env.check()
        return config


def cache_fields(view: ShipmentView) -> dict[str, str | int]:
    """Fields of the status cache entry of a shipment."""
    state = view.state
    return {
        "status": state.status,
        "substatus": state.substatus,
        "status_time_us": state.status_time_us,
        "update_time_us": state.update_time_us,
        "etag": state.etag,
    }


class CachingStore:
    """A ``ShipmentStore`` that writes each committed state through to the status cache
    and wakes the outbox relay."""

    def __init__(
        self,
        inner: ShipmentStore,
        cache: StatusCache,
        relay: OutboxRelay | None,
        outages: OutageLog | None = None,
    ) -> None:
        self.inner = inner
        self.cache = cache
        self.relay = relay
        self.outages = outages

    async def create(self, state: ShipmentState, request_id: str, fingerprint: str) -> ShipmentView:
        return await self._written(await self.inner.create(state, request_id, fingerprint))

    async def update(
        self, shipment_id: str, change: Change, request_id: str, fingerprint: str, etag: str
    ) -> ShipmentView:
        view = await self.inner.update(shipment_id, change, request_id, fingerprint, etag)
        return await self._written(view)

    async def get(self, shipment_id: str) -> ShipmentView:
        return await self.inner.get(shipment_id)

    async def list(self, status: str, after_id: str, limit: int) -> list[ShipmentState]:
        return await self.inner.list(status, after_id, limit)

    async def _written(self, view: ShipmentView) -> ShipmentView:
        if self.relay is not None:
            self.relay.notify()
        key = SHIPMENT_KEY.format(view.state.id)
        await put_quietly(self.cache, key, view.state.version, cache_fields(view), self.outages)
        return view


class ShipmentApp:
    """``ServiceApp`` of ShipmentService."""

    service_name = SERVICE_NAME

    def __init__(self, config: ShipmentConfig, *, relay: bool = True) -> None:
        self.config = config
        self.database = Database(config.database_url)
        self.cache = StatusCache(config.redis_url)
        self.relay = (
            OutboxRelay(config.database_url, config.amqp_url, config.server.replica)
            if relay
            else None
        )
        observers = (default_transition_metrics(), AuditLog(config.server.site))
        observed = ObservedStore(SqliteShipmentStore(self.database), observers)
        self.outages = OutageLog(self.database, config.server.replica, self.cache)
        self.store = CachingStore(observed, self.cache, self.relay, self.outages)

    def register(self, server: grpc.aio.Server) -> None:
        shipment_pb2_grpc.add_ShipmentServiceServicer_to_server(
            ShipmentServicer(self.store), server
        )

    async def start(self) -> None:
        await self.database.open()
        if self.relay is not None:
            self.relay.start()

    async def close(self) -> None:
        if self.relay is not None:
            self.relay.stop()
        await self.outages.close()
        await self.cache.close()
        await self.database.close()
