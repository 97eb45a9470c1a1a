"""Run-and-wait: execute a task on this TaskService replica within the caller's deadline."""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
from prometheus_client import Histogram

from services.common.errors import DomainError
from services.task.executor import DEADLINE_EXCEEDED, TaskExecutor
from services.task.model import TaskRecord
from services.task.store import SqliteTaskStore

logger = logging.getLogger(__name__)

DEADLINE_MARGIN_S = 0.1
"""Time kept back from the caller's deadline to store the task's state and send the response."""

NO_DEADLINE_S = 600.0
"""Budget of a call that has no deadline."""

SLOT_WAIT_SECONDS = Histogram(
    "envios_task_run_slot_wait_seconds",
    "Time a RunTask call waited for a free run slot on its TaskService replica.",
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)


class DeadlineExceeded(DomainError):
    """The caller's deadline expired before the task finished."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "DEADLINE_EXCEEDED"


class LocalRunner:
    """Run tasks here, at most ``slots`` at once; the other calls wait for a slot."""

    def __init__(self, executor: TaskExecutor, store: SqliteTaskStore, slots: int) -> None:
        self.executor = executor
        self.store = store
        self.slots = asyncio.Semaphore(slots)

    async def run(self, task_id: str, time_remaining_s: float | None) -> TaskRecord:
        """Run the task to a final state and return it.

        Raises:
            DeadlineExceeded: ``time_remaining_s`` (less a margin) passed first; the task
                is then FAILED with DEADLINE_EXCEEDED.
        """
        budget_s = NO_DEADLINE_S if time_remaining_s is None else time_remaining_s
        try:
            async with asyncio.timeout(max(0.0, budget_s - DEADLINE_MARGIN_S)):
                await self._run_in_slot(task_id)
        except TimeoutError as error:
            await self._stop(task_id, "the caller's deadline expired before the task finished")
            raise DeadlineExceeded(
                f"task {task_id} did not finish within the caller's deadline",
                metadata={"task_id": task_id},
            ) from error
        except asyncio.CancelledError:
            await asyncio.shield(self._stop(task_id, "the caller cancelled the call"))
            raise
        return await self.store.get(task_id)

    async def _run_in_slot(self, task_id: str) -> None:
        waiting_since = time.monotonic()
        async with self.slots:
            SLOT_WAIT_SECONDS.observe(time.monotonic() - waiting_since)
            await self.executor.execute(task_id)

    async def _stop(self, task_id: str, message: str) -> None:
        task = await self.store.finish(task_id, "FAILED", DEADLINE_EXCEEDED, message)
        logger.info("run-and-wait task %s is %s: %s", task_id, task.state, message)
        await self.executor.publish(task)
