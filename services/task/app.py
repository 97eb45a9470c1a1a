"""TaskService wiring: configuration, task store, the outbox relay and the local runner."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import grpc
from envios.shipment.v1 import shipment_pb2_grpc
from envios.task.v1 import task_pb2, task_pb2_grpc

from services.common.cache import StatusCache
from services.common.cache_outages import OutageLog
from services.common.config import (
    PREFIX,
    EnvReader,
    ServerConfig,
    read_amqp_url,
    read_database_url,
    read_redis_url,
    read_upstream,
)
from services.common.database import Database
from services.common.outbox import OutboxRelay
from services.common.tracing_grpc import client_interceptors
from services.task.executor import ExecutorSettings, TaskExecutor
from services.task.run_here import LocalRunner
from services.task.servicer import TaskServicer
from services.task.settings import TaskSettings
from services.task.store import SqliteTaskStore

SERVICE_NAME = task_pb2.DESCRIPTOR.services_by_name["TaskService"].full_name


@dataclass(frozen=True)
class TaskConfig:
    """Configuration of one TaskService replica."""

    server: ServerConfig
    database_url: str
    """Database of record (``ENVIOS_DATABASE_URL``)."""
    amqp_url: str
    """Broker that receives queued tasks from the outbox (``AMQP_URL``)."""
    redis_url: str = "redis://127.0.0.1:6390/0"
    """Status cache that RunTask writes progress to (``REDIS_URL``)."""
    upstream_grpc: str = "127.0.0.1:9090"
    """Envoy's gRPC listener, through which RunTask reaches ShipmentService."""
    tasks: TaskSettings = field(default_factory=TaskSettings)
    run_slots: int = 16
    """RunTask calls executed at once on this replica (``ENVIOS_TASK_RUN_SLOTS``)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> TaskConfig:
        """Raises ConfigError listing every missing or invalid variable."""
        env = EnvReader(environ)
        config = cls(
            server=ServerConfig.read(env, "task"),
            database_url=read_database_url(env),
            amqp_url=read_amqp_url(env),
            redis_url=read_redis_url(env),
            upstream_grpc=read_upstream(env),
            tasks=TaskSettings.read(env, environ),
            run_slots=env.integer(PREFIX + "TASK_RUN_SLOTS", 16, minimum=1),
        )
        env.check()
        return config


class TaskApp:
    """``ServiceApp`` of TaskService.

    Submitted tasks are committed with an outbox row; the relay publishes them when the
    broker is reachable, so SubmitTask keeps accepting tasks while RabbitMQ is down.
    RunTask executes tasks here, with the same executor the workers use.
    """

    service_name = SERVICE_NAME

    def __init__(self, config: TaskConfig) -> None:
        self.config = config
        self.database = Database(config.database_url)
        self.relay = OutboxRelay(config.database_url, config.amqp_url, config.server.replica)
        self.store = SqliteTaskStore(self.database, config.tasks.names, config.server.site)
        self.cache = StatusCache(config.redis_url)
        self.channel = grpc.aio.insecure_channel(
            config.upstream_grpc, interceptors=client_interceptors()
        )
        settings = ExecutorSettings(
            worker=config.server.replica,
            task_timeout_s=config.tasks.task_timeout_s,
            retry=config.tasks.retry,
            time_scale=config.tasks.time_scale,
        )
        shipments = shipment_pb2_grpc.ShipmentServiceStub(self.channel)
        self.outages = OutageLog(self.database, config.server.replica, self.cache)
        executor = TaskExecutor(self.store, self.cache, shipments, settings, outages=self.outages)
        self.runner = LocalRunner(executor, self.store, config.run_slots)

    def register(self, server: grpc.aio.Server) -> None:
        servicer = TaskServicer(self.store, self.relay.notify, self.runner)
        task_pb2_grpc.add_TaskServiceServicer_to_server(servicer, server)

    async def start(self) -> None:
        await self.database.open()
        self.relay.start()

    async def close(self) -> None:
        self.relay.stop()
        await self.channel.close()
        await self.outages.close()
        await self.cache.close()
        await self.database.close()
