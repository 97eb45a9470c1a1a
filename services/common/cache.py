"""Redis status cache shared by writers (ShipmentService, task workers) and StatusService.

Entries are Redis hashes with a ``version`` field. Writes go through a Lua script that
only replaces an entry with a newer version, so a delayed or repeated write never puts an
older state back. Every entry expires (``ttl_s`` plus jitter), which bounds how long a
write lost while Redis was unreachable can leave a stale entry behind.

Timeouts are short and redis-py's own retries are off: a Redis that is down or silent
costs a caller about ``timeout_s``, after which it reads the database instead.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from typing import Protocol

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

SHIPMENT_KEY = "envios:shipment:{}"
TASK_KEY = "envios:task:{}"
EVENT_KEY = "envios:event:{}"
"""Marker of an event a consumer has processed, keyed by the AMQP ``message_id``."""

PUT_IF_NEWER = """
local current = redis.call('HGET', KEYS[1], 'version')
if current and tonumber(current) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'version', ARGV[1], unpack(ARGV, 3))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

CHECK_EVENT = """
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 2
end
local current = redis.call('HGET', KEYS[1], 'version')
if current and tonumber(current) >= tonumber(ARGV[1]) then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
  return 1
end
return 0
"""


class CacheUnavailable(Exception):
    """Raised when Redis timed out or refused the connection."""


class StatusCache:
    """Versioned hashes in Redis with short timeouts and no retries."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 0.25,
        ttl_s: float = 300.0,
        max_connections: int = 64,
    ) -> None:
        self.ttl_s = ttl_s
        # A burst of calls beyond max_connections waits up to timeout_s for a free
        # connection; redis-py's default pool fails such calls at once instead.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            socket_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
        )
        self.client = aioredis.Redis.from_pool(pool)
        self._put = self.client.register_script(PUT_IF_NEWER)
        self._check_event = self.client.register_script(CHECK_EVENT)

    async def put(
        self,
        key: str,
        version: int,
        fields: Mapping[str, str | int],
        *,
        ttl_s: float | None = None,
    ) -> bool:
        """Store ``fields`` under ``key`` unless a newer or equal version is cached.

        The entry expires after ``ttl_s`` (default: the cache's ``ttl_s``) plus up to 20%
        random jitter, so entries filled together do not expire together.
        Returns True when the entry was written. Raises CacheUnavailable.
        """
        ttl_ms = int((ttl_s or self.ttl_s) * 1000 * random.uniform(1.0, 1.2))
        args: list[str | int] = [version, ttl_ms]
        for name, value in fields.items():
            args += [name, value]
        try:
            return bool(await self._put(keys=[key], args=args))
        except RedisError as error:
            raise CacheUnavailable(str(error)) from error

    async def get(self, key: str) -> dict[str, str] | None:
        """Return the cached fields, or None on a miss. Raises CacheUnavailable."""
        try:
            fields: dict[str, str] = await self.client.hgetall(key)  # type: ignore[assignment]
        except RedisError as error:
            raise CacheUnavailable(str(error)) from error
        return fields or None

    async def check_event(self, key: str, event_key: str, version: int, ttl_s: float) -> int:
        """Tell whether an event of ``version`` for entry ``key`` still needs applying.

        Returns 2 when ``event_key`` marks the event as processed already, and 1 when the
        entry already contains ``version`` or newer, after marking the event processed for
        ``ttl_s``. Returns 0 when the event must be applied. Raises CacheUnavailable.
        """
        ttl_ms = int(ttl_s * 1000)
        try:
            return int(await self._check_event(keys=[key, event_key], args=[version, ttl_ms]))
        except RedisError as error:
            raise CacheUnavailable(str(error)) from error

    async def mark_event(self, event_key: str, ttl_s: float) -> None:
        """Mark an event as processed for ``ttl_s``. Raises CacheUnavailable."""
        try:
            await self.client.set(event_key, "1", px=int(ttl_s * 1000))
        except RedisError as error:
            raise CacheUnavailable(str(error)) from error

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except RedisError:
            return False

    async def close(self) -> None:
        await self.client.aclose()


class FailureRecorder(Protocol):
    """A recipient of each failed write-through (``cache_outages.OutageLog``)."""

    async def record_failure(self) -> None: ...


async def put_quietly(
    cache: StatusCache,
    key: str,
    version: int,
    fields: Mapping[str, str | int],
    outages: FailureRecorder | None = None,
) -> None:
    """Write through to the cache, logging instead of failing when Redis is away.

    The database stays the source of truth; readers fall back to it on a miss. A failed
    write is reported to ``outages``, so that readers stop trusting the cache until it has
    caught up.
    """
    try:
        await cache.put(key, version, fields)
    except CacheUnavailable as error:
        logger.warning("status cache write of %s skipped: %s", key, error)
        if outages is not None:
            await outages.record_failure()
