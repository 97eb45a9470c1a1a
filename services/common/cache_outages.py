"""Cache outages recorded in the database, so that every status reader learns of them.

A writer whose write-through to Redis failed leaves an entry in Redis older than the
database. A status reader that saw Redis fail itself verifies cache hits against the
database for a while after Redis returns, but a reader that received no read during the
outage would not know. So the writer records the outage in the ``cache_outages`` table
(one row per process), pings Redis until a ping succeeds, and marks the row closed. Readers
poll the table and verify their cache hits while any outage is open and for
``verify_s`` after the last one closed.

A row whose writer stopped probing (the process died) counts as open only until
``STALE_AFTER_S`` after its last probe.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
from dataclasses import dataclass

from services.common.cache import StatusCache
from services.common.database import Database, now_us

logger = logging.getLogger(__name__)

STALE_AFTER_S = 10.0
"""Seconds after its last probe that an open outage row stops counting as open."""


@dataclass(frozen=True)
class OutageState:
    """The state of the ``cache_outages`` table at one moment."""

    open: bool
    """True while a writer has seen Redis fail and no ping has succeeded since."""
    last_closed_us: int | None
    """Wall-clock time (microseconds) when the most recent outage closed, if any did."""


class OutageLog:
    """The writer side: records this process's failed write-throughs until a ping succeeds."""

    def __init__(
        self, database: Database, process: str, cache: StatusCache, probe_s: float = 0.25
    ) -> None:
        self.database = database
        self.process = process
        self.cache = cache
        self.probe_s = probe_s
        self._probe: asyncio.Task[None] | None = None

    async def record_failure(self) -> None:
        """Open this process's outage row (once per outage) and start probing Redis.

        A database error is logged, not raised: the write that failed to reach Redis has
        already committed.
        """
        if self._probe is not None and not self._probe.done():
            return
        try:
            await self.database.transaction(self._open_row)
        except sqlite3.Error as error:
            logger.error("recording the cache outage of %s failed: %s", self.process, error)
            return
        logger.warning("status cache outage recorded for %s; probing Redis", self.process)
        self._probe = asyncio.create_task(self._probe_until_up())

    async def close(self) -> None:
        """Stop probing; an open row then goes stale after ``STALE_AFTER_S``."""
        if self._probe is not None:
            self._probe.cancel()
            await asyncio.gather(self._probe, return_exceptions=True)

    def _open_row(self, connection: sqlite3.Connection) -> None:
        now = now_us()
        connection.execute(
            "INSERT INTO cache_outages (process, opened_us, checked_us, closed_us)"
            " VALUES (?, ?, ?, NULL) ON CONFLICT (process) DO UPDATE SET"
            " opened_us = excluded.opened_us, checked_us = excluded.checked_us, closed_us = NULL",
            (self.process, now, now),
        )

    async def _probe_until_up(self) -> None:
        while True:
            await asyncio.sleep(self.probe_s)
            answered = await self.cache.ping()
            try:
                await self.database.transaction(functools.partial(self._mark, answered=answered))
            except sqlite3.Error as error:
                logger.error("updating the cache outage of %s failed: %s", self.process, error)
                continue
            if answered:
                logger.info("status cache reachable again; outage of %s closed", self.process)
                return

    def _mark(self, connection: sqlite3.Connection, *, answered: bool) -> None:
        now = now_us()
        closed = now if answered else None
        connection.execute(
            "UPDATE cache_outages SET checked_us = ?, closed_us = ? WHERE process = ?",
            (now, closed, self.process),
        )


async def read_outages(database: Database) -> OutageState:
    """Return whether any cache outage is open and when the last one closed."""
    return await database.run(_read_outages)


def _read_outages(connection: sqlite3.Connection) -> OutageState:
    fresh_us = now_us() - int(STALE_AFTER_S * 1_000_000)
    row = connection.execute(
        "SELECT COUNT(*) FILTER (WHERE closed_us IS NULL AND checked_us >= ?), MAX(closed_us)"
        " FROM cache_outages",
        (fresh_us,),
    ).fetchone()
    return OutageState(open=row[0] > 0, last_closed_us=row[1])
