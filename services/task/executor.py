"""Execute one task attempt: state changes in the database, progress in the cache."""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

from services.common.cache import TASK_KEY, StatusCache, put_quietly
from services.common.errors import NotFound
from services.task.handlers import HANDLERS, RetryLater
from services.task.model import TERMINAL_STATES, StepResult, TaskRecord
from services.task.store import SqliteTaskStore

logger = logging.getLogger(__name__)


def cache_fields(task: TaskRecord) -> dict[str, str | int]:
    """Fields of the status cache entry of a task."""
    return {
        "state": task.state,
        "progress_percent": task.progress_percent,
        "results": json.dumps([dataclasses.asdict(result) for result in task.results]),
        "update_time_us": task.update_time_us,
    }


class TaskExecutor:
    """Run tasks delivered by the queue; every method is safe to repeat for one task."""

    def __init__(self, store: SqliteTaskStore, cache: StatusCache, shipments: Any) -> None:
        self.store = store
        self.cache = cache
        self.shipments = shipments

    async def execute(self, task_id: str) -> None:
        """Run one attempt of the task.

        Returns when the task is finished (or was already finished or cancelled).

        Raises:
            RetryLater: a dependency failed; the task is RETRYING and the message should
                be delivered again.
        """
        try:
            task = await self.store.get(task_id)
        except NotFound:
            logger.error("task message names unknown task %s; dropping it", task_id)
            return
        if task.state in TERMINAL_STATES:
            logger.info("task %s is already %s; nothing to do", task_id, task.state)
            return
        if task.cancel_requested:
            await self._publish(await self.store.finish(task_id, "CANCELLED"))
            return
        await self._run(await self.store.start_attempt(task_id))

    async def _run(self, task: TaskRecord) -> None:
        await self._publish(task)
        handler = HANDLERS[task.type]
        results: list[StepResult] = []
        cancel = _CancelCheck(self.store, task.id)
        try:
            async for result in handler.run(task, self.shipments, cancel.requested):
                results.append(result)
                progress = 100 * len(results) // len(task.input.shipment_ids)
                await self._publish(await self.store.record_step(task.id, results, progress))
                await cancel.refresh()
        except RetryLater as error:
            logger.warning("task %s attempt %s will be retried: %s", task.id, task.attempts, error)
            await self._publish(await self.store.finish(task.id, "RETRYING", 14, str(error)))
            raise
        await self._publish(await self._final(task, results, cancel.requested()))

    async def _final(
        self, task: TaskRecord, results: list[StepResult], cancelled: bool
    ) -> TaskRecord:
        if cancelled and len(results) < len(task.input.shipment_ids):
            return await self.store.finish(task.id, "CANCELLED")
        failed = [result for result in results if not result.ok]
        if failed:
            message = f"{len(failed)} of {len(results)} shipments were not changed"
            return await self.store.finish(task.id, "FAILED", 9, message)
        return await self.store.finish(task.id, "SUCCEEDED")

    async def _publish(self, task: TaskRecord) -> None:
        await put_quietly(self.cache, TASK_KEY.format(task.id), task.version, cache_fields(task))


class _CancelCheck:
    """Cancellation flag of a running task, refreshed from the database after each step."""

    def __init__(self, store: SqliteTaskStore, task_id: str) -> None:
        self.store = store
        self.task_id = task_id
        self._requested = False

    def requested(self) -> bool:
        return self._requested

    async def refresh(self) -> None:
        self._requested = (await self.store.get(self.task_id)).cancel_requested
