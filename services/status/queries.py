"""Read-only SQL queries of StatusService on the shared database."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from services.common.database import Database
from services.shipment.domain import STATUSES
from services.shipment.store import state_from_row
from services.status.views import (
    TASK_STATES,
    ShipmentStatusView,
    TaskStatusView,
    check_state,
    parse_results,
)


@dataclass(frozen=True)
class Counts:
    """Row counts by shipment status and by task state.

    Every known status and state is present, with 0 when no row has it. A value found in
    the database but unknown to this code is counted under its own name.
    """

    shipments_by_status: dict[str, int]
    tasks_by_state: dict[str, int]


class SqliteStatusQueries:
    """Status queries on the SQLite file; they only read."""

    def __init__(self, database: Database) -> None:
        self.db = database

    async def shipment(self, shipment_id: str) -> ShipmentStatusView | None:
        """Return the shipment's status, or None when no shipment has the id.

        Raises:
            Unavailable: the database cannot be read.
        """
        return await self.db.run(lambda c: _shipment(c, shipment_id))

    async def task(self, task_id: str) -> TaskStatusView | None:
        """Return the task's state, or None when no task has the id.

        Raises:
            Unavailable: the database cannot be read.
            MalformedEntry: the row contains an unknown state or invalid results JSON.
        """
        return await self.db.run(lambda c: _task(c, task_id))

    async def counts(self) -> Counts:
        """Count shipments by status and tasks by state. Raises Unavailable."""
        return await self.db.run(_counts)


def _shipment(c: sqlite3.Connection, shipment_id: str) -> ShipmentStatusView | None:
    row = c.execute("SELECT * FROM shipments WHERE id = ?", (shipment_id,)).fetchone()
    if row is None:
        return None
    state = state_from_row(row)
    return ShipmentStatusView(
        shipment_id=state.id,
        status=state.status,
        substatus=state.substatus,
        status_time_us=state.status_time_us,
        update_time_us=state.update_time_us,
        etag=state.etag,
        version=state.version,
    )


def _task(c: sqlite3.Connection, task_id: str) -> TaskStatusView | None:
    row = c.execute(
        "SELECT id, state, progress_percent, results, update_time_us, version"
        " FROM tasks WHERE id = ?",
        (task_id,),
    ).fetchone()
    if row is None:
        return None
    return TaskStatusView(
        task_id=row["id"],
        state=check_state(row["state"]),
        progress_percent=row["progress_percent"],
        results=parse_results(row["results"]),
        update_time_us=row["update_time_us"],
        version=row["version"],
    )


def _counts(c: sqlite3.Connection) -> Counts:
    shipments = dict.fromkeys(STATUSES, 0)
    for status, count in c.execute("SELECT status, COUNT(*) FROM shipments GROUP BY status"):
        shipments[status] = count
    tasks = dict.fromkeys(TASK_STATES, 0)
    for state, count in c.execute("SELECT state, COUNT(*) FROM tasks GROUP BY state"):
        tasks[state] = count
    return Counts(shipments, tasks)
