"""PendingWrites: a writer's background tasks, kept until done and awaited together.

The repository's writer and the control-state writer each queue their writes
as tasks, so that a change takes effect at once and is written soon, in
order; a flush then waits for what was queued and raises the first failure.

:func:`stop_task` ends a background loop (a heartbeat, a lease's renewal, a
change feed) in bounded time, where one cancel is not always enough.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["STOP_SECONDS", "PendingWrites", "stop_task"]

logger = logging.getLogger("turnout")

# Seconds a cancelled background task may take to end before it is left behind.
STOP_SECONDS = 5.0
# Seconds between two cancels of a task that lives on after the first.
RECANCEL_SECONDS = 0.05


class PendingWrites:
    """Background write tasks: flush raises the failure of the earliest queued."""

    def __init__(self) -> None:
        # A dict as an ordered set: flush raises the failure of the earliest write.
        self._tasks: dict[asyncio.Task[None], None] = {}
        # What a flush raises for a task given up (abandon): not the CancelledError,
        # which would read, to the flushing caller, as its own cancellation.
        self._given_up: Callable[[], Exception] | None = None

    def spawn(self, coroutine: Coroutine[Any, Any, None], name: str | None = None) -> None:
        """Run ``coroutine`` as a task (named ``name``: what it does), kept until it is done."""
        task = asyncio.ensure_future(coroutine)
        if name is not None:
            task.set_name(name)
        self._tasks[task] = None
        task.add_done_callback(lambda done: self._tasks.pop(done, None))
        # Retrieved here so a failure nobody awaits is not reported again at exit: it was logged.
        task.add_done_callback(lambda done: done.cancelled() or done.exception())

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        """The tasks not done yet, oldest first."""
        return list(self._tasks)

    async def flush(self) -> None:
        """Wait for the tasks queued so far; raise the failure of the earliest that failed."""
        if self._tasks:
            results = await asyncio.gather(*self._tasks, return_exceptions=True)
            for result in results:
                if isinstance(result, asyncio.CancelledError) and self._given_up is not None:
                    raise self._given_up() from result
                if isinstance(result, BaseException):
                    raise result

    async def settle(self) -> None:
        """Wait for the tasks queued so far, whatever they raise (their writers logged it)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def abandon(self, error: Callable[[], Exception]) -> list[str]:
        """Cancel every task not done, each until it ends; return their names.

        A flush waiting for one of them raises ``error()``.
        """
        self._given_up = error
        left = self.tasks
        await asyncio.gather(*(stop_task(task, task.get_name()) for task in left))
        return [task.get_name() for task in left]


async def stop_task(task: asyncio.Task[Any], what: str, timeout: float = STOP_SECONDS) -> bool:
    """Cancel ``task`` and wait for it to end, at most ``timeout`` seconds; False if it did not.

    It is cancelled again every RECANCEL_SECONDS while it lives on, as one
    cancel can be lost: on Python 3.11 ``asyncio.wait_for`` returns the result
    of a future that completed in the loop turn the cancel came in, and drops
    the cancel (https://github.com/python/cpython/issues/86296). redis-py sends
    each command under it, so a loop around a Redis call went on as if never
    cancelled, and awaiting it after one cancel never ended. A task still
    running at ``timeout`` is left behind, and the log says so.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    cancels = 0
    while not task.done():
        remaining = deadline - loop.time()
        if remaining <= 0:
            logger.error(
                "%s did not end within %g s of being cancelled; left running", what, timeout
            )
            return False
        if cancels == 1:
            logger.debug("%s lived on after it was cancelled; cancelling it again", what)
        task.cancel()
        cancels += 1
        await asyncio.wait((task,), timeout=min(RECANCEL_SECONDS, remaining))
    if not task.cancelled() and task.exception() is not None:
        logger.error("%s failed as it was stopped", what, exc_info=task.exception())
    return True
