"""Task storage on the shared SQLite file.

Submitting a task stores the task row, its outbox message and the idempotency key in one
transaction; the outbox relay publishes the message to RabbitMQ afterwards. So a task that
SubmitTask accepted is never lost, even when RabbitMQ is down at that moment.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import uuid

from services.common.amqp import TASKS_EXCHANGE, TASKS_ROUTING_KEY
from services.common.database import Database, now_us
from services.common.errors import AlreadyExists, NotFound
from services.task.model import TERMINAL_STATES, StepResult, TaskInput, TaskRecord


class SqliteTaskStore:
    """Tasks, their queue messages and their progress."""

    def __init__(self, database: Database) -> None:
        self.db = database

    async def submit(
        self, task_type: str, task_input: TaskInput, request_id: str, fingerprint: str
    ) -> TaskRecord:
        """Record a QUEUED task and its queue message.

        Raises:
            AlreadyExists: ``request_id`` was used for a different task.
        """
        return await self.db.transaction(
            lambda c: _submit(c, task_type, task_input, request_id, fingerprint)
        )

    async def get(self, task_id: str) -> TaskRecord:
        """Raises NotFound when no task has the id."""
        return await self.db.run(lambda c: _load(c, task_id))

    async def cancel(self, task_id: str) -> TaskRecord:
        """Cancel a queued task at once; ask a running one to stop at its next step."""
        return await self.db.transaction(lambda c: _cancel(c, task_id))

    async def start_attempt(self, task_id: str) -> TaskRecord:
        """Move a task to RUNNING and count the attempt."""
        return await self.db.transaction(lambda c: _start(c, task_id))

    async def record_step(
        self, task_id: str, results: list[StepResult], progress: int
    ) -> TaskRecord:
        return await self.db.transaction(
            lambda c: _update(c, task_id, results=_results_json(results), progress_percent=progress)
        )

    async def finish(
        self, task_id: str, state: str, error_code: int = 0, error_message: str = ""
    ) -> TaskRecord:
        """Set the final (or RETRYING) state of an attempt."""
        end = now_us() if state in TERMINAL_STATES else None
        error = json.dumps({"code": error_code, "message": error_message}) if error_code else ""
        return await self.db.transaction(
            lambda c: _update(c, task_id, state=state, error=error, end_time_us=end)
        )


def _submit(
    c: sqlite3.Connection, task_type: str, task_input: TaskInput, request_id: str, fingerprint: str
) -> TaskRecord:
    if request_id:
        row = c.execute(
            "SELECT fingerprint, response FROM idempotency_keys"
            " WHERE method = 'submit_task' AND request_id = ?",
            (request_id,),
        ).fetchone()
        if row is not None:
            if row["fingerprint"] != fingerprint:
                raise AlreadyExists(
                    f"request_id {request_id!r} was already used for a different task",
                    reason="REQUEST_ID_REUSED",
                    metadata={"request_id": request_id},
                )
            return _load(c, json.loads(row["response"])["task_id"])
    now = now_us()
    task = TaskRecord(
        id=uuid.uuid4().hex,
        type=task_type,
        input=task_input,
        state="QUEUED",
        create_time_us=now,
        update_time_us=now,
    )
    c.execute(
        "INSERT INTO tasks (id, type, input, state, create_time_us, update_time_us)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (task.id, task.type, json.dumps(task_input.to_json()), task.state, now, now),
    )
    c.execute(
        "INSERT INTO outbox (exchange, routing_key, message_id, body, create_time_us)"
        " VALUES (?, ?, ?, ?, ?)",
        (
            TASKS_EXCHANGE,
            TASKS_ROUTING_KEY,
            task.id,
            json.dumps({"task_id": task.id}).encode(),
            now,
        ),
    )
    if request_id:
        c.execute(
            "INSERT INTO idempotency_keys"
            " (request_id, method, fingerprint, response, create_time_us)"
            " VALUES (?, 'submit_task', ?, ?, ?)",
            (request_id, fingerprint, json.dumps({"task_id": task.id}).encode(), now),
        )
    return task


def _cancel(c: sqlite3.Connection, task_id: str) -> TaskRecord:
    task = _load(c, task_id)
    if task.state in TERMINAL_STATES:
        return task
    if task.state == "RUNNING":
        return _update(c, task_id, cancel_requested=1)
    return _update(c, task_id, state="CANCELLED", cancel_requested=1, end_time_us=now_us())


def _start(c: sqlite3.Connection, task_id: str) -> TaskRecord:
    task = _load(c, task_id)
    start = task.start_time_us or now_us()
    return _update(c, task_id, state="RUNNING", attempts=task.attempts + 1, start_time_us=start)


def _update(c: sqlite3.Connection, task_id: str, **columns: object) -> TaskRecord:
    assignments = ", ".join(f"{name} = ?" for name in columns)
    c.execute(
        f"UPDATE tasks SET {assignments}, update_time_us = ?, version = version + 1 WHERE id = ?",
        (*columns.values(), now_us(), task_id),
    )
    return _load(c, task_id)


def _results_json(results: list[StepResult]) -> str:
    return json.dumps([dataclasses.asdict(result) for result in results])


def _load(c: sqlite3.Connection, task_id: str) -> TaskRecord:
    row = c.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
    if row is None:
        raise NotFound(
            f"task {task_id!r} not found", reason="TASK_NOT_FOUND", metadata={"id": task_id}
        )
    return task_from_row(row)


def task_from_row(row: sqlite3.Row) -> TaskRecord:
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
    )


def _error(row: sqlite3.Row) -> tuple[int, str]:
    if not row["error"]:
        return 0, ""
    data = json.loads(row["error"])
    return data["code"], data["message"]
