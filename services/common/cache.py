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

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

SHIPMENT_KEY = "envios:shipment:{}"
TASK_KEY = "envios:task:{}"

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


class CacheUnavailable(Exception):
    """Redis did not answer in time or refused the connection."""


class StatusCache:
    """Versioned hashes in Redis with short timeouts and no retries."""

    def __init__(self, url: str, *, timeout_s: float = 0.25, ttl_s: float = 300.0) -> None:
        self.ttl_s = ttl_s
        self.client = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=timeout_s,
            socket_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
        )
        self._put = self.client.register_script(PUT_IF_NEWER)

    async def put(self, key: str, version: int, fields: Mapping[str, str | int]) -> bool:
        """Store ``fields`` under ``key`` unless a newer or equal version is cached.

        Returns True when the entry was written. Raises CacheUnavailable.
        """
        ttl_ms = int(self.ttl_s * 1000 * random.uniform(1.0, 1.2))
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

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except RedisError:
            return False

    async def close(self) -> None:
        await self.client.aclose()


async def put_quietly(
    cache: StatusCache, key: str, version: int, fields: Mapping[str, str | int]
) -> None:
    """Write through to the cache, logging instead of failing when Redis is away.

    The database stays the source of truth; readers fall back to it on a miss.
    """
    try:
        await cache.put(key, version, fields)
    except CacheUnavailable as error:
        logger.warning("status cache write of %s skipped: %s", key, error)
