"""SQLite access shared by the services: one file in WAL mode, versioned migrations.

Every process opens its own connection. Calls run on one worker thread per connection, so
the asyncio loop never blocks on the database and the connection is only used by the
thread that created it. Writers take the write lock up front (``BEGIN IMMEDIATE``) so that
two processes never deadlock upgrading a read lock.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from services.common.errors import Unavailable
from services.common.migrations import MIGRATIONS

logger = logging.getLogger(__name__)

T = TypeVar("T")

BUSY_TIMEOUT_MS = 10_000
"""How long a writer waits for another process's write lock before failing."""


def sqlite_path(url: str) -> str:
    """Return the file path of a ``sqlite:///path`` URL (``sqlite:///:memory:`` too)."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite":
        # TODO: a PostgreSQL store implements the same store interfaces; not written yet.
        raise ValueError(f"only sqlite:/// database URLs are supported so far, got {url!r}")
    return parts.path[1:] if parts.path.startswith("//") else parts.path or ":memory:"


def now_us() -> int:
    """Return the current time in microseconds since the Unix epoch."""
    return time.time_ns() // 1000


class Database:
    """One SQLite connection driven from a single worker thread."""

    def __init__(self, url: str) -> None:
        self.path = sqlite_path(url)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._connection: sqlite3.Connection | None = None

    async def open(self) -> None:
        """Open the file, switch it to WAL mode and apply pending migrations."""
        await self.run(lambda _: None)

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work(connection)`` on the database thread and return its result.

        Raises:
            Unavailable: the database is locked by another writer for longer than
                ``BUSY_TIMEOUT_MS`` or cannot be opened.
        """
        loop = asyncio.get_running_loop()
        # The caller's context variables (the current trace span among them) go with the
        # work, as ``asyncio.to_thread`` does, so outbox rows can record the trace context.
        context = contextvars.copy_context()
        try:
            return await loop.run_in_executor(self._executor, context.run, self._call, work)
        except sqlite3.OperationalError as error:
            logger.warning("database operation failed: %s", error)
            raise Unavailable(f"database unavailable: {error}") from error

    async def transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` inside ``BEGIN IMMEDIATE`` ... ``COMMIT``; roll back on any error."""

        def wrapped(connection: sqlite3.Connection) -> T:
            connection.execute("BEGIN IMMEDIATE")
            try:
                result = work(connection)
            except BaseException:
                connection.rollback()
                raise
            connection.commit()
            return result

        return await self.run(wrapped)

    async def close(self) -> None:
        if self._connection is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._connection.close)
            self._connection = None
        self._executor.shutdown(wait=True)

    def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._connection is None:
            self._connection = connect(self.path)
        return work(self._connection)


def connect(path: str) -> sqlite3.Connection:
    """Open ``path`` ready for use by envios code, migrating the schema if needed."""
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    connection.row_factory = sqlite3.Row
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA foreign_keys=ON")
    migrate(connection)
    return connection


def migrate(connection: sqlite3.Connection) -> int:
    """Apply the migrations newer than the file's ``user_version``; return the new version.

    The version check and the migration run in one write transaction, so processes that
    start together apply each migration once.
    """
    connection.execute("BEGIN IMMEDIATE")
    try:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            for statement in script.split(";\n"):
                if statement.strip():
                    connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {number}")
            logger.info("applied database migration %s", number)
        connection.commit()
    except BaseException:
        connection.rollback()
        raise
    return len(MIGRATIONS)
