"""PendingWrites: a writer's background tasks, kept until done and awaited together.

The repository's writer and the control-state writer each queue their writes
as tasks, so that a change takes effect at once and is written soon, in
order; a flush then waits for what was queued and raises the first failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

__all__ = ["PendingWrites"]


class PendingWrites:
    """Background write tasks: flush raises the failure of the earliest queued."""

    def __init__(self) -> None:
        # A dict as an ordered set: flush raises the failure of the earliest write.
        self._tasks: dict[asyncio.Task[None], None] = {}

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run ``coroutine`` as a task, kept until it is done."""
        task = asyncio.ensure_future(coroutine)
        self._tasks[task] = None
        task.add_done_callback(lambda done: self._tasks.pop(done, None))
        # Retrieved here so a failure nobody awaits is not reported again at exit: it was logged.
        task.add_done_callback(lambda done: done.cancelled() or done.exception())

    async def flush(self) -> None:
        """Wait for the tasks queued so far; raise the failure of the earliest that failed."""
        if self._tasks:
            results = await asyncio.gather(*self._tasks, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result

    async def settle(self) -> None:
        """Wait for the tasks queued so far, whatever they raise (their writers logged it)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
