"""MemoryState: the built-in control state, in one process's memory.

Every :class:`~turnout.core.service.server.ModelServer` has one unless it is
given another; servers in one process may share one, and then share their
control state (a routing change on one is in force on the others once its
change reaches them). Durability is the server's repository, written as
the state changes (``turnout.core.state.write_queue``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from turnout.core.errors import StateConflictError
from turnout.core.routing.outcomes import OutcomeTotals
from turnout.core.state.control import ChangeListener, ModelState

__all__ = ["MemoryState"]


class MemoryState:
    """Control state in a dict: compare-and-set by revision, changes announced on the loop."""

    def __init__(self) -> None:
        self._models: dict[str, ModelState] = {}
        self._outcomes: dict[str, dict[str, OutcomeTotals]] = {}
        self._listeners: list[ChangeListener] = []
        self._closed = False

    async def read(self, model_id: str) -> ModelState:
        """Return the model's state; revision 0 and no versions if it was never written."""
        return self._models.get(model_id) or ModelState(model_id)

    async def model_ids(self) -> list[str]:
        """Return every model that has a deployed version, sorted."""
        return sorted(m for m, state in self._models.items() if state.exists)

    async def write(self, state: ModelState) -> ModelState:
        """Store ``state`` if the model is still at ``state.revision``; return it at the next."""
        stored = self._models.get(state.model_id)
        actual = 0 if stored is None else stored.revision
        if state.revision != actual:
            raise StateConflictError(
                f"the state of {state.model_id!r} changed since revision {state.revision}:"
                f" it is at revision {actual}",
                model_id=state.model_id,
                expected=state.revision,
                actual=actual,
            )
        written = state.changed(revision=actual + 1)
        self._models[state.model_id] = written
        if not written.exists:
            self._outcomes.pop(state.model_id, None)
        self._announce(state.model_id, written.revision)
        return written

    async def add_outcome(self, model_id: str, version: str, value: float) -> OutcomeTotals:
        """Add one outcome to the version's aggregates; return the new totals."""
        per_version = self._outcomes.setdefault(model_id, {})
        totals = per_version[version] = per_version.get(version, OutcomeTotals()).add(value)
        return totals

    async def outcomes(self, model_id: str) -> dict[str, OutcomeTotals]:
        """Return the model's outcome aggregates per version."""
        return dict(self._outcomes.get(model_id, {}))

    async def subscribe(self, listener: ChangeListener) -> Callable[[], None]:
        """Call ``listener(model_id, revision)`` after each write, on a later loop turn."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def _announce(self, model_id: str, revision: int) -> None:
        if self._closed:
            return
        # On a later turn, as a real feed delivers: never inside the writer's own call.
        loop = asyncio.get_running_loop()
        for listener in list(self._listeners):
            loop.call_soon(listener, model_id, revision)

    async def close(self) -> None:
        """Stop announcing changes; the state itself stays readable."""
        self._closed = True
        self._listeners.clear()
