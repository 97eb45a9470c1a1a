"""TaskService wiring: configuration, task store and the outbox relay to RabbitMQ."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import grpc
from envios.task.v1 import task_pb2, task_pb2_grpc

from services.common.config import EnvReader, ServerConfig, read_amqp_url, read_database_url
from services.common.database import Database
from services.common.outbox import OutboxRelay
from services.task.servicer import TaskServicer
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

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> TaskConfig:
        """Raises ConfigError listing every missing or invalid variable."""
        env = EnvReader(environ)
        config = cls(
            server=ServerConfig.read(env, "task"),
            database_url=read_database_url(env),
            amqp_url=read_amqp_url(env),
        )
        env.check()
        return config


class TaskApp:
    """``ServiceApp`` of TaskService.

    Submitted tasks are committed with an outbox row; the relay publishes them when the
    broker is reachable, so SubmitTask keeps accepting tasks while RabbitMQ is down.
    """

    service_name = SERVICE_NAME

    def __init__(self, config: TaskConfig) -> None:
        self.config = config
        self.database = Database(config.database_url)
        self.relay = OutboxRelay(config.database_url, config.amqp_url, config.server.replica)
        self.store = SqliteTaskStore(self.database)

    def register(self, server: grpc.aio.Server) -> None:
        servicer = TaskServicer(self.store, self.relay.notify)
        task_pb2_grpc.add_TaskServiceServicer_to_server(servicer, server)

    async def start(self) -> None:
        await self.database.open()
        self.relay.start()

    async def close(self) -> None:
        self.relay.stop()
        await self.database.close()
