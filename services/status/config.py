"""Configuration of one StatusService replica, read from environment variables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.common.config import (
    PREFIX,
    EnvReader,
    ServerConfig,
    read_amqp_url,
    read_database_url,
    read_redis_url,
)


@dataclass(frozen=True)
class StatusConfig:
    """Configuration of one StatusService replica."""

    server: ServerConfig
    database_url: str
    """Database read on a cache miss or when Redis is down (``ENVIOS_DATABASE_URL``)."""
    redis_url: str
    """Status cache read first and filled after a miss (``REDIS_URL``)."""
    amqp_url: str
    """Broker asked for the task queue depth in the overview (``AMQP_URL``)."""
    cache_ttl_s: float = 300.0
    """Lifetime of a cache entry filled from the database, in seconds (``ENVIOS_CACHE_TTL_S``)."""
    redis_timeout_s: float = 0.25
    """Connect and read timeout of each Redis call, in seconds (``ENVIOS_REDIS_TIMEOUT_S``)."""
    not_found_ttl_s: float = 2.0
    """Lifetime of a cached "not found", in seconds (``ENVIOS_NOT_FOUND_TTL_S``)."""
    verify_after_recovery_s: float = 5.0
    """Seconds after Redis returns from an outage during which cache hits are checked
    against the database, while the projector corrects entries written before the outage
    (``ENVIOS_CACHE_VERIFY_S``)."""
    outage_poll_s: float = 0.5
    """Interval between reads of the writers' cache outage records, in seconds
    (``ENVIOS_CACHE_OUTAGE_POLL_S``). A reader that received no read during an outage may
    trust a stale entry for this long after Redis returns."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> StatusConfig:
        """Build the configuration from ``environ``.

        Raises:
            ConfigError: listing every missing or invalid variable.
        """
        env = EnvReader(environ)
        config = cls(
            server=ServerConfig.read(env, "status"),
            database_url=read_database_url(env),
            redis_url=read_redis_url(env),
            amqp_url=read_amqp_url(env),
            cache_ttl_s=env.seconds(PREFIX + "CACHE_TTL_S", 300.0),
            redis_timeout_s=env.seconds(PREFIX + "REDIS_TIMEOUT_S", 0.25),
            not_found_ttl_s=env.seconds(PREFIX + "NOT_FOUND_TTL_S", 2.0),
            verify_after_recovery_s=env.seconds(PREFIX + "CACHE_VERIFY_S", 5.0),
            outage_poll_s=env.seconds(PREFIX + "CACHE_OUTAGE_POLL_S", 0.5),
        )
        # Redis deletes an entry with a TTL of 0 at once, and a timeout of 0 fails every call.
        for name, value in (
            ("CACHE_TTL_S", config.cache_ttl_s),
            ("REDIS_TIMEOUT_S", config.redis_timeout_s),
            ("NOT_FOUND_TTL_S", config.not_found_ttl_s),
            ("CACHE_OUTAGE_POLL_S", config.outage_poll_s),
        ):
            if value <= 0:
                env.problems.append(f"{PREFIX}{name} must be a number of seconds > 0, got {value}")
        env.check()
        return config
