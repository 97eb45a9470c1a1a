"""Task storage on the shared SQLite file.

Submitting a task stores the task row, its outbox message and the idempotency key in one
transaction; the outbox relay publishes the message to RabbitMQ afterwards. So a task that
SubmitTask accepted is never lost, even when RabbitMQ is down at that moment.

Every state change also stores a snapshot of the row in ``task_history``, from which
WatchTask streams each state in order.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from services.common.amqp import DEFAULT_NAMES, TaskQueueNames
from services.common.database import Database, now_us
from services.common.errors import AlreadyExists, NotFound
from services.common.tracing import message_headers
from services.task.audit import log_task_transition
from services.task.model import TERMINAL_STATES, StepResult, TaskInput, TaskRecord


@dataclasses.dataclass(frozen=True)
class NewTask:
    """A validated task to record."""

    type: str
    input: TaskInput
    request_id: str
    fingerprint: str
    queued: bool = True
    """True to publish it to the task queue (SubmitTask); False to run it here (RunTask)."""


class SqliteTaskStore:
    """Tasks, their queue messages and their progress."""

    def __init__(
        self, database: Database, names: TaskQueueNames = DEFAULT_NAMES, site: str = ""
    ) -> None:
        self.db = database
        self.names = names
        self.site = site
        """Site named in the audit event of each state change."""

    async def submit(self, new: NewTask) -> tuple[TaskRecord, bool]:
        """Record a QUEUED task (and its queue message when ``new.queued``).

        Returns the task and True, or the task of an earlier request with the same
        ``request_id`` and False.

        Raises:
            AlreadyExists: ``request_id`` was used for a different task.
            NotFound: a shipment id names no shipment.
        """
        task, created = await self.db.transaction(lambda c: _submit(c, new, self.names))
        if created:
            log_task_transition(task, "", self.site)
        return task, created

    async def get(self, task_id: str) -> TaskRecord:
        """Raises NotFound when no task has the id."""
        return await self.db.run(lambda c: _load(c, task_id))

    async def cancel(self, task_id: str) -> TaskRecord:
        """Cancel a queued or retrying task at once; ask a running one to stop at its next step."""
        return await self._transition(task_id, lambda c: _cancel(c, task_id))

    async def start_attempt(self, task_id: str, worker: str) -> TaskRecord:
        """Move a task to RUNNING and count the attempt.

        Returns the task unchanged when it is already final, or CANCELLED when a cancel
        was requested; callers run it only when the returned state is RUNNING.
        """
        return await self._transition(task_id, lambda c: _start(c, task_id, worker))

    async def record_step(
        self, task_id: str, results: list[StepResult], progress: int
    ) -> TaskRecord:
        return await self.db.transaction(
            lambda c: _update(c, task_id, results=_results_json(results), progress_percent=progress)
        )

    async def finish(
        self, task_id: str, state: str, error_code: int = 0, error_message: str = ""
    ) -> TaskRecord:
        """Set the final (or RETRYING) state of an attempt; a final task stays unchanged."""
        return await self._transition(
            task_id, lambda c: _finish(c, task_id, state, error_code, error_message)
        )

    async def history(self, task_id: str, after_version: int) -> list[TaskRecord]:
        """Return the state-change snapshots newer than ``after_version``, oldest first."""
        return await self.db.run(lambda c: _history(c, task_id, after_version))

    async def _transition(
        self, task_id: str, work: Callable[[sqlite3.Connection], TaskRecord]
    ) -> TaskRecord:
        """Run ``work`` in a transaction; log an audit event after the commit if the state
        changed."""
        before, task = await self.db.transaction(lambda c: (_load(c, task_id).state, work(c)))
        if task.state != before:
            log_task_transition(task, before, self.site)
        return task


def _submit(c: sqlite3.Connection, new: NewTask, names: TaskQueueNames) -> tuple[TaskRecord, bool]:
    method = "submit_task" if new.queued else "run_task"
    if new.request_id:
        earlier = _earlier(c, method, new)
        if earlier is not None:
            return earlier, False
    _check_shipments_exist(c, new.input.shipment_ids)
    now = now_us()
    task = TaskRecord(
        id=uuid.uuid4().hex,
        type=new.type,
        input=new.input,
        state="QUEUED",
        create_time_us=now,
        update_time_us=now,
    )
    c.execute(
        "INSERT INTO tasks (id, type, input, state, create_time_us, update_time_us)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (task.id, task.type, json.dumps(new.input.to_json()), task.state, now, now),
    )
    _snapshot(c, task.id)
    if new.queued:
        headers = message_headers(names.exchange, names.routing_key)
        c.execute(
            "INSERT INTO outbox (exchange, routing_key, message_id, body, create_time_us, headers)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (names.exchange, names.routing_key, task.id, task_message(task.id), now, headers),
        )
    if new.request_id:
        c.execute(
            "INSERT INTO idempotency_keys"
            " (request_id, method, fingerprint, response, create_time_us)"
            " VALUES (?, ?, ?, ?, ?)",
            (new.request_id, method, new.fingerprint, json.dumps({"task_id": task.id}), now),
        )
    return task, True


def task_message(task_id: str) -> bytes:
    """Return the body of the queue message of a task."""
    return json.dumps({"task_id": task_id}).encode()


def _earlier(c: sqlite3.Connection, method: str, new: NewTask) -> TaskRecord | None:
    row = c.execute(
        "SELECT fingerprint, response FROM idempotency_keys WHERE method = ? AND request_id = ?",
        (method, new.request_id),
    ).fetchone()
    if row is None:
        return None
    if row["fingerprint"] != new.fingerprint:
        raise AlreadyExists(
            f"request_id {new.request_id!r} was already used for a different task",
            reason="REQUEST_ID_REUSED",
            metadata={"request_id": new.request_id},
        )
    return _load(c, json.loads(row["response"])["task_id"])


def _check_shipments_exist(c: sqlite3.Connection, ids: tuple[str, ...]) -> None:
    if not ids:
        return
    marks = ", ".join("?" * len(ids))
    rows = c.execute(f"SELECT id FROM shipments WHERE id IN ({marks})", ids).fetchall()
    found = {row["id"] for row in rows}
    for index, shipment_id in enumerate(ids):
        if shipment_id not in found:
            field = f"task.shipment_ids[{index}]"
            raise NotFound(
                f"{field}: shipment {shipment_id!r} not found",
                reason="SHIPMENT_NOT_FOUND",
                metadata={"field": field, "id": shipment_id},
            )


def _cancel(c: sqlite3.Connection, task_id: str) -> TaskRecord:
    task = _load(c, task_id)
    if task.state in TERMINAL_STATES:
        return task
    if task.state == "RUNNING":
        return _update(c, task_id, cancel_requested=1)
    return _update(c, task_id, state="CANCELLED", cancel_requested=1, end_time_us=now_us())


def _start(c: sqlite3.Connection, task_id: str, worker: str) -> TaskRecord:
    task = _load(c, task_id)
    if task.state in TERMINAL_STATES:
        return task
    if task.cancel_requested:
        return _update(c, task_id, state="CANCELLED", end_time_us=now_us())
    start = task.start_time_us or now_us()
    return _update(
        c,
        task_id,
        state="RUNNING",
        attempts=task.attempts + 1,
        start_time_us=start,
        worker=worker,
        error="",
    )


def _finish(
    c: sqlite3.Connection, task_id: str, state: str, error_code: int, error_message: str
) -> TaskRecord:
    task = _load(c, task_id)
    if task.state in TERMINAL_STATES:
        return task
    end = now_us() if state in TERMINAL_STATES else None
    error = json.dumps({"code": error_code, "message": error_message}) if error_code else ""
    return _update(c, task_id, state=state, error=error, end_time_us=end)


def _update(c: sqlite3.Connection, task_id: str, **columns: object) -> TaskRecord:
    assignments = ", ".join(f"{name} = ?" for name in columns)
    c.execute(
        f"UPDATE tasks SET {assignments}, update_time_us = ?, version = version + 1 WHERE id = ?",
        (*columns.values(), now_us(), task_id),
    )
    if "state" in columns:
        _snapshot(c, task_id)
    return _load(c, task_id)


def _snapshot(c: sqlite3.Connection, task_id: str) -> None:
    row = c.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
    c.execute(
        "INSERT OR REPLACE INTO task_history (task_id, version, snapshot) VALUES (?, ?, ?)",
        (task_id, row["version"], json.dumps(dict(row))),
    )


def _history(c: sqlite3.Connection, task_id: str, after_version: int) -> list[TaskRecord]:
    rows = c.execute(
        "SELECT snapshot FROM task_history WHERE task_id = ? AND version > ? ORDER BY version",
        (task_id, after_version),
    ).fetchall()
    return [task_from_row(json.loads(row["snapshot"])) for row in rows]


def _results_json(results: list[StepResult]) -> str:
    return json.dumps([dataclasses.asdict(result) for result in results])


def _load(c: sqlite3.Connection, task_id: str) -> TaskRecord:
    row = c.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
    if row is None:
        raise NotFound(
            f"task {task_id!r} not found", reason="TASK_NOT_FOUND", metadata={"id": task_id}
        )
    return task_from_row(row)


def task_from_row(row: sqlite3.Row | Mapping[str, Any]) -> TaskRecord:
    """Build a task from a ``tasks`` row or a snapshot of one."""
    return TaskRecord(
        id=row["id"],
        type=row["type"],
        input=TaskInput.from_json(json.loads(row["input"])),
        state=row["state"],
        attempts=row["attempts"],
        progress_percent=row["progress_percent"],
        results=[StepResult(**item) for item in json.loads(row["results"])],
        error_code=_error(row)[0],
        error_message=_error(row)[1],
        cancel_requested=bool(row["cancel_requested"]),
        create_time_us=row["create_time_us"],
        start_time_us=row["start_time_us"],
        end_time_us=row["end_time_us"],
        update_time_us=row["update_time_us"],
        version=row["version"],
        worker=row["worker"],
    )


def _error(row: sqlite3.Row | Mapping[str, Any]) -> tuple[int, str]:
    if not row["error"]:
        return 0, ""
    data = json.loads(row["error"])
    return int(data["code"]), str(data["message"])


def requeue_dead_lettered(c: sqlite3.Connection, task_id: str) -> TaskRecord | None:
    """Set a task that failed because it was dead-lettered back to QUEUED, in one transaction.

    Returns the task as stored afterwards, or None when no task has the id. A task in
    another state is returned unchanged, so the caller republishes only QUEUED ones.

    NOTE: unlike the ``SqliteTaskStore`` methods, this change logs no audit event.
    """
    c.execute("BEGIN IMMEDIATE")
    try:
        task = _load(c, task_id)
        if task.state == "FAILED" and "dead-lettered" in task.error_message:
            task = _update(c, task_id, state="QUEUED", error="", end_time_us=None)
        c.commit()
    except NotFound:
        c.rollback()
        return None
    except BaseException:
        c.rollback()
        raise
    return task
