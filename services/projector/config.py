"""Configuration of one status projector process, read from environment variables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.common.config import (
    PREFIX,
    EnvReader,
    read_amqp_url,
    read_database_url,
    read_redis_url,
)
from services.common.outbox import STATUS_EVENTS_QUEUE


@dataclass(frozen=True)
class ProjectorConfig:
    """Configuration of one status projector."""

    replica: str
    """Projector name in logs, for example ``projector-primary``."""
    site: str
    database_url: str
    """Database read for the state an event names (``ENVIOS_DATABASE_URL``)."""
    redis_url: str
    """Status cache the projector writes (``REDIS_URL``)."""
    amqp_url: str
    """Broker holding the transition events (``AMQP_URL``)."""
    queue: str = STATUS_EVENTS_QUEUE
    """Queue consumed (``ENVIOS_PROJECTOR_QUEUE``); the relay declares only the default
    one, so another name only receives events published after a projector declared it."""
    prefetch: int = 100
    """Events RabbitMQ delivers ahead of the acks (``ENVIOS_PROJECTOR_PREFETCH``)."""
    event_marker_ttl_s: float = 86_400.0
    """How long a processed event id is remembered, in seconds
    (``ENVIOS_PROJECTOR_EVENT_TTL_S``); a redelivery later than that is still harmless,
    because the version guard skips it."""
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ProjectorConfig:
        """Build the configuration from ``environ``.

        Raises:
            ConfigError: listing every missing or invalid variable.
        """
        env = EnvReader(environ)
        config = cls(
            replica=env.text(PREFIX + "REPLICA", "projector-local"),
            site=env.text(PREFIX + "SITE", "primary"),
            database_url=read_database_url(env),
            redis_url=read_redis_url(env),
            amqp_url=read_amqp_url(env),
            queue=env.text(PREFIX + "PROJECTOR_QUEUE", STATUS_EVENTS_QUEUE),
            prefetch=env.integer(PREFIX + "PROJECTOR_PREFETCH", 100, minimum=1),
            event_marker_ttl_s=env.seconds(PREFIX + "PROJECTOR_EVENT_TTL_S", 86_400.0),
            log_level=env.choice(
                PREFIX + "LOG_LEVEL", ("DEBUG", "INFO", "WARNING", "ERROR"), "INFO"
            ),
        )
        if config.event_marker_ttl_s <= 0:
            env.problems.append(
                f"{PREFIX}PROJECTOR_EVENT_TTL_S must be a number of seconds > 0,"
                f" got {config.event_marker_ttl_s}"
            )
        env.check()
        return config
