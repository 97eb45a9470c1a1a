"""Execute tasks: attempts, retries, timeouts; state in the database, progress in the cache.

An attempt that fails transiently (``RetryLater``, a timeout, the database briefly
unavailable) is retried in the same process after a capped exponential backoff with
jitter, while the queue message stays unacknowledged. After ``max_attempts`` attempts the
task ends FAILED. Every other exception propagates, so the worker returns the message to
the queue, where the delivery limit eventually dead-letters it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from services.common.cache import TASK_KEY, FailureRecorder, StatusCache, put_quietly
from services.common.errors import NotFound, Unavailable
from services.task import metrics
from services.task.handlers import HANDLERS, HandlerContext, Progress, RetryLater
from services.task.model import TERMINAL_STATES, StepResult, TaskRecord
from services.task.store import SqliteTaskStore

logger = logging.getLogger(__name__)

UNAVAILABLE = 14
DEADLINE_EXCEEDED = 4
FAILED_PRECONDITION = 9
ABORTED = 10
"""``google.rpc.Code`` values stored as task errors."""

CANCEL_POLL_S = 1.0
"""How often a task waiting out its backoff checks for a cancel."""


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with capped exponential backoff and jitter."""

    max_attempts: int = 3
    """Attempts of one task, the first included."""
    backoff_base_s: float = 1.0
    """Backoff after the first failed attempt, before jitter."""
    backoff_cap_s: float = 30.0
    """Maximum backoff, before jitter."""

    def delay_s(self, attempt: int, rng: random.Random) -> float:
        """Return the wait after failed attempt ``attempt`` (1-based): "equal jitter",
        uniform between half and all of ``min(cap, base * 2 ** (attempt - 1))``."""
        ceiling = min(self.backoff_cap_s, self.backoff_base_s * 2.0 ** (attempt - 1))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)

    def longest_hold_s(self, timeout_s: float) -> float:
        """Return the longest time one delivery can take: every attempt times out."""
        return self.max_attempts * timeout_s + (self.max_attempts - 1) * self.backoff_cap_s


@dataclass(frozen=True)
class ExecutorSettings:
    """Execution settings of one process."""

    worker: str
    """Name stored as the task's ``worker`` when an attempt starts."""
    task_timeout_s: float = 280.0
    """Maximum run time of one attempt; a longer attempt counts as a transient failure."""
    retry: RetryPolicy = RetryPolicy()
    time_scale: float = 1.0
    """Factor applied to every simulated wait."""


class Transient(Exception):
    """An attempt failed in a way that may go away."""


def cache_fields(task: TaskRecord) -> dict[str, str | int]:
    """Fields of the status cache entry of a task."""
    return {
        "state": task.state,
        "progress_percent": task.progress_percent,
        "results": json.dumps([dataclasses.asdict(result) for result in task.results]),
        "update_time_us": task.update_time_us,
    }


class TaskExecutor:
    """Run tasks; every method is safe to repeat for one task, also from several processes."""

    def __init__(
        self,
        store: SqliteTaskStore,
        cache: StatusCache,
        shipments: Any,
        settings: ExecutorSettings,
        rng: random.Random | None = None,
        outages: FailureRecorder | None = None,
    ) -> None:
        self.store = store
        self.cache = cache
        self.outages = outages
        self.shipments = shipments
        self.settings = settings
        self.rng = rng or random.Random()
        self._locks: dict[str, asyncio.Lock] = {}

    async def execute(self, task_id: str) -> None:
        """Run the task to a final state, retrying transient failures.

        Returns when the task is final (or was already final, or names no task). Two
        calls for one task in this process run one after the other, so a redelivered
        message waits for the running attempt and then finds the task final.
        """
        async with self._exclusive(task_id):
            metrics.IN_FLIGHT.inc()
            try:
                await self._execute(task_id)
            finally:
                metrics.IN_FLIGHT.dec()

    @asynccontextmanager
    async def _exclusive(self, task_id: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(task_id, asyncio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and self._locks.get(task_id) is lock:
                del self._locks[task_id]

    async def _execute(self, task_id: str) -> None:
        while True:
            try:
                task = await self.store.start_attempt(task_id, self.settings.worker)
            except NotFound:
                logger.error("task message names unknown task %s; dropping it", task_id)
                return
            await self.publish(task)
            if task.state != "RUNNING":
                logger.info("task %s is %s; not running it", task_id, task.state)
                return
            try:
                await self._attempt(task)
                return
            except Transient as error:
                if not await self._after_transient(task, str(error)):
                    return

    async def _attempt(self, task: TaskRecord) -> None:
        started = time.monotonic()
        outcome = "error"
        try:
            async with asyncio.timeout(self.settings.task_timeout_s):
                final = await self._run(task)
            outcome = final.state.lower()
        except TimeoutError as error:
            outcome = "timeout"
            limit = self.settings.task_timeout_s
            raise Transient(f"attempt timed out after {limit:g} s") from error
        except (RetryLater, Unavailable) as error:
            outcome = "retry"
            raise Transient(str(error)) from error
        finally:
            metrics.RUN_SECONDS.labels(task.type, outcome).observe(time.monotonic() - started)

    async def _after_transient(self, task: TaskRecord, reason: str) -> bool:
        """Record a transient failure; return True when another attempt should run."""
        if task.attempts >= self.settings.retry.max_attempts:
            message = f"gave up after {task.attempts} attempts: {reason}"
            logger.warning("task %s failed: %s", task.id, message)
            await self.publish(await self.store.finish(task.id, "FAILED", UNAVAILABLE, message))
            return False
        delay_s = self.settings.retry.delay_s(task.attempts, self.rng)
        logger.warning(
            "task %s attempt %s failed (%s); retrying in %.1f s",
            task.id,
            task.attempts,
            reason,
            delay_s,
        )
        metrics.RETRIES.labels(task.type).inc()
        retrying = await self.store.finish(task.id, "RETRYING", UNAVAILABLE, reason)
        await self.publish(retrying)
        return await self._wait_unless_cancelled(task.id, delay_s)

    async def _wait_unless_cancelled(self, task_id: str, delay_s: float) -> bool:
        deadline = time.monotonic() + delay_s
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(left, CANCEL_POLL_S))
            if (await self.store.get(task_id)).state in TERMINAL_STATES:
                return False
        return True

    async def _run(self, task: TaskRecord) -> TaskRecord:
        handler = HANDLERS[task.type]
        cancel = _CancelCheck(self.store, task.id)
        context = HandlerContext(self.shipments, cancel.requested, self.settings.time_scale)
        order = {shipment_id: index for index, shipment_id in enumerate(task.input.shipment_ids)}
        results: list[StepResult] = []
        progress = 0
        async for step in handler.run(task, context):
            if isinstance(step, Progress):
                progress = step.percent
            else:
                results.append(step)
                results.sort(key=lambda result: order[result.shipment_id])
                progress = 100 * len(results) // len(order)
            await self.publish(await self.store.record_step(task.id, results, progress))
            await cancel.refresh()
        final = await self._final(task, results, cancel.requested() and progress < 100)
        await self.publish(final)
        return final

    async def _final(
        self, task: TaskRecord, results: list[StepResult], cancelled: bool
    ) -> TaskRecord:
        if cancelled:
            return await self.store.finish(task.id, "CANCELLED")
        failed = [result for result in results if not result.ok]
        if failed:
            message = f"{len(failed)} of {len(results)} shipments were not changed"
            return await self.store.finish(task.id, "FAILED", FAILED_PRECONDITION, message)
        return await self.store.finish(task.id, "SUCCEEDED")

    async def mark_dead_lettered(self, task_id: str, reason: str) -> None:
        """End an unfinished task FAILED because its queue message was dead-lettered.

        ``reason`` is RabbitMQ's (``delivery_limit`` or ``rejected``). A final task stays
        unchanged.
        """
        message = f"task message dead-lettered by RabbitMQ ({reason})"
        try:
            task = await self.store.finish(task_id, "FAILED", ABORTED, message)
        except NotFound:
            return
        metrics.DEAD_LETTERED.inc()
        logger.error("task %s: %s; now %s", task_id, message, task.state)
        await self.publish(task)

    async def publish(self, task: TaskRecord) -> None:
        """Write the task to the status cache, logging instead of failing when Redis is away."""
        key = TASK_KEY.format(task.id)
        await put_quietly(self.cache, key, task.version, cache_fields(task), self.outages)


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
