"""Shipment storage: the store interface and its SQLite implementation.

Each write runs in one transaction that stores the shipment, its transition record, an
outbox event for the relay and the idempotency key, so a crash never leaves one without
the others. A PostgreSQL store fills the same ``ShipmentStore`` interface.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import uuid
from dataclasses import dataclass
from typing import Protocol

from services.common.database import Database, now_us
from services.common.errors import Aborted, AlreadyExists, NotFound
from services.common.tracing import message_headers
from services.shipment.domain import Change, Outcome, ShipmentState, plan_change

EVENTS_EXCHANGE = "envios.events"
"""Topic exchange that receives every recorded shipment transition."""


@dataclass(frozen=True)
class TransitionRecord:
    """One stored status event of a shipment."""

    event_id: str
    from_status: str
    to_status: str
    from_substatus: str
    to_substatus: str
    occurred_at_us: int
    record_time_us: int
    applied: bool
    late: bool
    task_id: str
    seq: int = 0


@dataclass(frozen=True)
class ShipmentView:
    """A shipment with the history that belongs with it."""

    state: ShipmentState
    history: list[TransitionRecord]
    recorded: TransitionRecord | None = None
    """The transition this call stored; ``None`` for reads and for idempotent replays."""


class ShipmentStore(Protocol):
    """What ShipmentService needs from a database."""

    async def create(
        self, state: ShipmentState, request_id: str, fingerprint: str
    ) -> ShipmentView: ...

    async def get(self, shipment_id: str) -> ShipmentView: ...

    async def list(self, status: str, after_id: str, limit: int) -> list[ShipmentState]: ...

    async def update(
        self, shipment_id: str, change: Change, request_id: str, fingerprint: str, etag: str
    ) -> ShipmentView: ...


class SqliteShipmentStore:
    """``ShipmentStore`` on the shared SQLite file."""

    def __init__(self, database: Database) -> None:
        self.db = database

    async def create(self, state: ShipmentState, request_id: str, fingerprint: str) -> ShipmentView:
        """Insert a new shipment in ``pending``.

        Raises:
            AlreadyExists: the id is taken, or ``request_id`` was used for another request.
        """
        return await self.db.transaction(lambda c: _create(c, state, request_id, fingerprint))

    async def get(self, shipment_id: str) -> ShipmentView:
        """Raises NotFound when no shipment has the id."""
        return await self.db.run(lambda c: _view(c, _load(c, shipment_id)))

    async def list(self, status: str, after_id: str, limit: int) -> list[ShipmentState]:
        return await self.db.run(lambda c: _list(c, status, after_id, limit))

    async def update(
        self, shipment_id: str, change: Change, request_id: str, fingerprint: str, etag: str
    ) -> ShipmentView:
        """Apply ``change`` under the state machine rules.

        Raises:
            NotFound, Aborted (etag mismatch), AlreadyExists (request id reused),
            FailedPrecondition (transition not allowed).
        """
        return await self.db.transaction(
            lambda c: _update(c, shipment_id, change, request_id, fingerprint, etag)
        )


def _create(
    c: sqlite3.Connection, state: ShipmentState, request_id: str, fingerprint: str
) -> ShipmentView:
    replayed = _replay(c, "create", request_id, fingerprint)
    if replayed is not None:
        return replayed
    if c.execute("SELECT 1 FROM shipments WHERE id = ?", (state.id,)).fetchone():
        raise AlreadyExists(
            f"shipment {state.id!r} already exists",
            reason="SHIPMENT_EXISTS",
            metadata={"id": state.id},
        )
    _write_state(c, state, insert=True)
    event = TransitionRecord(
        event_id=request_id or uuid.uuid4().hex,
        from_status="",
        to_status=state.status,
        from_substatus="",
        to_substatus=state.substatus,
        occurred_at_us=state.status_time_us,
        record_time_us=state.create_time_us,
        applied=True,
        late=False,
        task_id="",
    )
    _record(c, state, event)
    view = _view(c, state)
    _remember(c, "create", request_id, fingerprint, view)
    return dataclasses.replace(view, recorded=event)


def _update(
    c: sqlite3.Connection,
    shipment_id: str,
    change: Change,
    request_id: str,
    fingerprint: str,
    etag: str,
) -> ShipmentView:
    replayed = _replay(c, "update", request_id, fingerprint)
    if replayed is not None:
        return replayed
    current = _load(c, shipment_id)
    if etag and etag != current.etag:
        raise Aborted(
            f"etag {etag!r} does not match the current {current.etag!r}; read the shipment again",
            reason="ETAG_MISMATCH",
            metadata={"id": shipment_id, "current_etag": current.etag},
        )
    now = now_us()
    outcome = plan_change(current, change, now)
    state = outcome.state or current
    if outcome.state is not None:
        _write_state(c, outcome.state, insert=False)
    event = _event(outcome, change, request_id, now)
    _record(c, state, event)
    view = _view(c, state)
    _remember(c, "update", request_id, fingerprint, view)
    return dataclasses.replace(view, recorded=event)


def _event(outcome: Outcome, change: Change, request_id: str, now: int) -> TransitionRecord:
    return TransitionRecord(
        event_id=request_id or uuid.uuid4().hex,
        from_status=outcome.from_status,
        to_status=outcome.to_status,
        from_substatus=outcome.from_substatus,
        to_substatus=outcome.to_substatus,
        occurred_at_us=change.occurred_at_us or now,
        record_time_us=now,
        applied=outcome.applied,
        late=outcome.late,
        task_id=change.task_id,
    )


def _write_state(c: sqlite3.Connection, s: ShipmentState, insert: bool) -> None:
    values = (
        s.status,
        s.substatus,
        s.tracking_number,
        s.status_time_us,
        json.dumps(s.status_times_us, sort_keys=True),
        s.create_time_us,
        s.update_time_us,
        s.version,
        s.id,
    )
    if insert:
        c.execute(
            "INSERT INTO shipments (status, substatus, tracking_number, status_time_us,"
            " status_times, create_time_us, update_time_us, version, id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            values,
        )
    else:
        c.execute(
            "UPDATE shipments SET status = ?, substatus = ?, tracking_number = ?,"
            " status_time_us = ?, status_times = ?, create_time_us = ?, update_time_us = ?,"
            " version = ? WHERE id = ?",
            values,
        )


def _record(c: sqlite3.Connection, state: ShipmentState, event: TransitionRecord) -> None:
    """Store the transition and its outbox event in the caller's transaction."""
    c.execute(
        "INSERT INTO transitions (shipment_id, event_id, from_status, to_status, from_substatus,"
        " to_substatus, occurred_at_us, record_time_us, applied, late, task_id)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            state.id,
            event.event_id,
            event.from_status,
            event.to_status,
            event.from_substatus,
            event.to_substatus,
            event.occurred_at_us,
            event.record_time_us,
            int(event.applied),
            int(event.late),
            event.task_id,
        ),
    )
    body = {"shipment_id": state.id, "version": state.version, **dataclasses.asdict(event)}
    body.pop("seq")
    routing_key = f"shipment.{event.to_status}"
    c.execute(
        "INSERT INTO outbox (exchange, routing_key, message_id, body, create_time_us, headers)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (
            EVENTS_EXCHANGE,
            routing_key,
            uuid.uuid4().hex,
            json.dumps(body, sort_keys=True).encode(),
            event.record_time_us,
            message_headers(EVENTS_EXCHANGE, routing_key),
        ),
    )


def _load(c: sqlite3.Connection, shipment_id: str) -> ShipmentState:
    row = c.execute("SELECT * FROM shipments WHERE id = ?", (shipment_id,)).fetchone()
    if row is None:
        raise NotFound(
            f"shipment {shipment_id!r} not found",
            reason="SHIPMENT_NOT_FOUND",
            metadata={"id": shipment_id},
        )
    return state_from_row(row)


def state_from_row(row: sqlite3.Row) -> ShipmentState:
    return ShipmentState(
        id=row["id"],
        status=row["status"],
        substatus=row["substatus"],
        tracking_number=row["tracking_number"],
        status_time_us=row["status_time_us"],
        status_times_us=json.loads(row["status_times"]),
        create_time_us=row["create_time_us"],
        update_time_us=row["update_time_us"],
        version=row["version"],
    )


def _history(
    c: sqlite3.Connection, shipment_id: str, up_to_seq: int | None = None
) -> list[TransitionRecord]:
    rows = c.execute(
        "SELECT * FROM transitions WHERE shipment_id = ? AND seq <= ? ORDER BY seq",
        (shipment_id, up_to_seq if up_to_seq is not None else 2**62),
    ).fetchall()
    return [
        TransitionRecord(
            event_id=row["event_id"],
            from_status=row["from_status"],
            to_status=row["to_status"],
            from_substatus=row["from_substatus"],
            to_substatus=row["to_substatus"],
            occurred_at_us=row["occurred_at_us"],
            record_time_us=row["record_time_us"],
            applied=bool(row["applied"]),
            late=bool(row["late"]),
            task_id=row["task_id"],
            seq=row["seq"],
        )
        for row in rows
    ]


def _view(c: sqlite3.Connection, state: ShipmentState) -> ShipmentView:
    return ShipmentView(state, _history(c, state.id))


def _list(c: sqlite3.Connection, status: str, after_id: str, limit: int) -> list[ShipmentState]:
    query = "SELECT * FROM shipments WHERE id > ?"
    params: list[object] = [after_id]
    if status:
        query += " AND status = ?"
        params.append(status)
    rows = c.execute(query + " ORDER BY id LIMIT ?", [*params, limit]).fetchall()
    return [state_from_row(row) for row in rows]


def _remember(
    c: sqlite3.Connection, method: str, request_id: str, fingerprint: str, view: ShipmentView
) -> None:
    """Store what a request returned, so a retry with the same request id gets it again."""
    if not request_id:
        return
    snapshot = {
        "state": dataclasses.asdict(view.state),
        "history_seq": view.history[-1].seq if view.history else 0,
    }
    c.execute(
        "INSERT INTO idempotency_keys (request_id, method, fingerprint, response, create_time_us)"
        " VALUES (?, ?, ?, ?, ?)",
        (request_id, method, fingerprint, json.dumps(snapshot).encode(), now_us()),
    )


def _replay(
    c: sqlite3.Connection, method: str, request_id: str, fingerprint: str
) -> ShipmentView | None:
    """Return the stored result of an earlier request with the same id, if any.

    Raises:
        AlreadyExists: the id was used for a request with different content.
    """
    if not request_id:
        return None
    row = c.execute(
        "SELECT fingerprint, response FROM idempotency_keys WHERE method = ? AND request_id = ?",
        (method, request_id),
    ).fetchone()
    if row is None:
        return None
    if row["fingerprint"] != fingerprint:
        raise AlreadyExists(
            f"request_id {request_id!r} was already used for a different request",
            reason="REQUEST_ID_REUSED",
            metadata={"request_id": request_id},
        )
    snapshot = json.loads(row["response"])
    state = ShipmentState(**snapshot["state"])
    return ShipmentView(state, _history(c, state.id, snapshot["history_seq"]))
