"""Status reads: Redis first, the database on a miss or when Redis is down.

A miss reads the database and fills the cache with the row's version, so the
version-guarded write never replaces a newer entry that a writer stored meanwhile. When
Redis fails, the reader returns the database row and skips Redis for
``cache_retry_s`` so that a silent Redis does not cost every call a full timeout.

Misses for the same key share one database read (single flight): the first caller starts
the read as its own task and later callers await the same task. A caller that is
cancelled (deadline, client gone) leaves the read running for the others.

An id the database does not contain is cached as a "not found" entry (``missing``,
version 0) for only ``not_found_ttl_s``; any writer's entry has a version of at least 1,
so the version guard lets it replace the marker at once.

Entries written before a Redis outage can be older than the database once Redis
returns, because writers skip the cache while it is away. The status projector corrects
them from its event backlog; until it has (``verify_after_recovery_s`` after this reader
sees Redis again), the reader treats cache hits as misses and reads the database.
Writers record their own failed writes in the database (``cache_outages``), and
``note_outages`` extends the same verification to a reader that received no read during
the outage.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from services.common.cache import SHIPMENT_KEY, TASK_KEY, CacheUnavailable
from services.common.cache_outages import OutageState
from services.status import views
from services.status.lograte import LogLimiter
from services.status.metrics import StatusMetrics
from services.status.views import MalformedEntry, ShipmentStatusView, TaskStatusView

logger = logging.getLogger(__name__)

MISSING_FIELD = "missing"
"""Field of a cache entry that records that the database has no row with the id."""


class Source(enum.Enum):
    """Source a status was read from; the value is sent in the ``x-envios-source`` header."""

    CACHE = "cache"
    DATABASE = "database"
    """The cache had no entry."""
    FALLBACK = "fallback"
    """Redis failed or was skipped after a recent failure."""


class Cache(Protocol):
    """The part of ``services.common.cache.StatusCache`` the reader uses."""

    async def get(self, key: str) -> dict[str, str] | None: ...

    async def put(
        self,
        key: str,
        version: int,
        fields: Mapping[str, str | int],
        *,
        ttl_s: float | None = None,
    ) -> bool: ...


class Queries(Protocol):
    """Database reads of single rows; ``services.status.queries.SqliteStatusQueries``."""

    async def shipment(self, shipment_id: str) -> ShipmentStatusView | None: ...

    async def task(self, task_id: str) -> TaskStatusView | None: ...


class Versioned(Protocol):
    @property
    def version(self) -> int: ...


V = TypeVar("V", bound=Versioned)


@dataclass(frozen=True)
class Read(Generic[V]):
    """A reader result: the view, or None when no row has the id, and its source."""

    value: V | None
    source: Source


@dataclass(frozen=True)
class _Kind(Generic[V]):
    """How to read one kind of status: its cache key, cache codec and database query."""

    name: str
    """``shipment`` or ``task``: the ``kind`` metric label."""
    key: str
    decode: Callable[[Mapping[str, str]], V]
    encode: Callable[[V], Mapping[str, str | int]]
    load: Callable[[], Awaitable[V | None]]


class StatusReader:
    """Read shipment and task status from the cache, falling back to the database."""

    def __init__(
        self,
        cache: Cache,
        queries: Queries,
        *,
        cache_retry_s: float = 1.0,
        not_found_ttl_s: float = 2.0,
        verify_after_recovery_s: float = 5.0,
        metrics: StatusMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cache = cache
        self.queries = queries
        self.cache_retry_s = cache_retry_s
        self.not_found_ttl_s = not_found_ttl_s
        self.verify_after_recovery_s = verify_after_recovery_s
        self.metrics = metrics if metrics is not None else StatusMetrics()
        self._clock = clock
        self._cache_down_until: float | None = None
        self._verify_until = 0.0
        # Keys differ by kind (shipment or task prefix), so each task yields one view type.
        self._flights: dict[str, asyncio.Task[Any]] = {}
        self._malformed_warnings = LogLimiter(60.0, clock)

    async def shipment(self, shipment_id: str) -> Read[ShipmentStatusView]:
        """Read the status of one shipment.

        Raises:
            Unavailable: the cache has no usable entry and the database cannot be read.
        """
        kind = _Kind(
            name="shipment",
            key=SHIPMENT_KEY.format(shipment_id),
            decode=lambda fields: views.shipment_from_fields(shipment_id, fields),
            encode=views.shipment_fields,
            load=lambda: self.queries.shipment(shipment_id),
        )
        return await self._read(kind)

    async def task(self, task_id: str) -> Read[TaskStatusView]:
        """Read the state of one task.

        Raises:
            Unavailable: the cache has no usable entry and the database cannot be read.
            MalformedEntry: the stored row cannot be decoded.
        """
        kind = _Kind(
            name="task",
            key=TASK_KEY.format(task_id),
            decode=lambda fields: views.task_from_fields(task_id, fields),
            encode=views.task_fields,
            load=lambda: self.queries.task(task_id),
        )
        return await self._read(kind)

    def flights(self) -> int:
        """Return the number of database reads in progress."""
        return len(self._flights)

    def degraded(self) -> bool:
        """Tell whether reads skip Redis now, after a recent Redis failure."""
        return self._cache_down_until is not None and self._clock() < self._cache_down_until

    async def _read(self, kind: _Kind[V]) -> Read[V]:
        read = await self._read_uncounted(kind)
        self.metrics.count_read(kind.name, read.source.value)
        return read

    async def _read_uncounted(self, kind: _Kind[V]) -> Read[V]:
        try:
            fields = await self._cache_get(kind.key)
        except CacheUnavailable:
            return Read(await self._load_once(kind, fill=False), Source.FALLBACK)
        if fields is not None and not self.verifying():
            if fields.get(MISSING_FIELD):
                return Read(None, Source.CACHE)
            try:
                return Read(kind.decode(fields), Source.CACHE)
            except MalformedEntry as error:
                self._warn_malformed(kind.key, error)
        return Read(await self._load_once(kind, fill=True), Source.DATABASE)

    def verifying(self) -> bool:
        """Return True while cache hits are checked against the database."""
        return self._clock() < self._verify_until

    def note_outages(self, state: OutageState, wall_now_us: int) -> None:
        """Verify cache hits while a writer's outage is open and until
        ``verify_after_recovery_s`` after the last one closed (``wall_now_us`` is now)."""
        if state.open:
            remaining_s = self.verify_after_recovery_s
        elif state.last_closed_us is not None:
            elapsed_s = (wall_now_us - state.last_closed_us) / 1_000_000
            remaining_s = self.verify_after_recovery_s - elapsed_s
        else:
            return
        if remaining_s > 0:
            self._verify_until = max(self._verify_until, self._clock() + remaining_s)

    def _warn_malformed(self, key: str, error: MalformedEntry) -> None:
        # NOTE: the fill after this read carries the same version, so the guarded write
        # keeps the bad entry until a writer stores a newer version or the entry expires.
        if self._malformed_warnings.allow():
            logger.warning(
                "ignoring cache entry %s and reading the database: %s"
                " (%s similar warnings suppressed)",
                key,
                error,
                self._malformed_warnings.take_suppressed(),
            )

    async def _cache_get(self, key: str) -> dict[str, str] | None:
        if self.degraded():
            raise CacheUnavailable("skipped after a recent Redis failure")
        try:
            fields = await self.cache.get(key)
        except CacheUnavailable as error:
            self._mark_cache_down(error)
            raise
        self._mark_cache_up()
        return fields

    def _mark_cache_down(self, error: CacheUnavailable) -> None:
        if self._cache_down_until is None:
            logger.warning(
                "status cache unavailable (%s); reading the database, next Redis try in %.1f s",
                error,
                self.cache_retry_s,
            )
        self._cache_down_until = self._clock() + self.cache_retry_s
        self.metrics.degraded.set(1)

    def _mark_cache_up(self) -> None:
        if self._cache_down_until is not None:
            logger.info(
                "status cache reachable again; verifying hits against the database for %.1f s",
                self.verify_after_recovery_s,
            )
            self._cache_down_until = None
            self._verify_until = self._clock() + self.verify_after_recovery_s
            self.metrics.degraded.set(0)

    async def _load_once(self, kind: _Kind[V], *, fill: bool) -> V | None:
        flight = self._flights.get(kind.key)
        if flight is None:
            flight = asyncio.ensure_future(self._load(kind, fill))
            self._flights[kind.key] = flight
            flight.add_done_callback(lambda done: self._land(kind.key, done))
        value: V | None = await asyncio.shield(flight)
        return value

    def _land(self, key: str, flight: asyncio.Task[Any]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if not flight.cancelled():
            # Retrieve the error so that a read whose callers all left is not reported
            # as "exception never retrieved"; the callers that stayed got it already.
            flight.exception()

    async def _load(self, kind: _Kind[V], fill: bool) -> V | None:
        self.metrics.database_reads.inc()
        value = await kind.load()
        if fill:
            await self._fill(kind, value)
        return value

    async def _fill(self, kind: _Kind[V], value: V | None) -> None:
        try:
            if value is None:
                await self.cache.put(kind.key, 0, {MISSING_FIELD: 1}, ttl_s=self.not_found_ttl_s)
            else:
                await self.cache.put(kind.key, value.version, kind.encode(value))
        except CacheUnavailable as error:
            self._mark_cache_down(error)
