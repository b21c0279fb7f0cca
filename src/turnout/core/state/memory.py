"""MemoryState: the built-in control state, in one process's memory.

Every :class:`~turnout.core.service.server.ModelServer` has one unless it is
given another; servers in one process may share one, and then share their
control state (a routing change on one is in force on the others once its
change reaches them). Durability is the server's repository, written as
the state changes (``turnout.core.state.write_queue``).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from turnout.core.routing.outcomes import OutcomeTotals
from turnout.core.state.control import (
    OUTCOME_ID_SECONDS,
    ChangeListener,
    Fence,
    ModelState,
    fenced_out,
    stale_revision,
)

__all__ = ["OUTCOME_IDS_KEPT", "MemoryState"]

# Request ids that got an outcome, kept per model (besides the day's limit). A day of a
# steady 100 outcomes a second is 8.6 million ids, some 1.6 GB of this process's memory
# (~190 bytes an id). The last 10,000 are 2 MB and still refuse what a client retrying
# sends again seconds later; the issuing server refuses its own ids' second outcome by
# itself. Redis and SQLite keep the whole day, outside the server's memory.
OUTCOME_IDS_KEPT = 10_000


class MemoryState:
    """Control state in a dict: compare-and-set by revision, changes announced on the loop."""

    def __init__(self) -> None:
        self._models: dict[str, ModelState] = {}
        self._outcomes: dict[str, dict[str, OutcomeTotals]] = {}
        # model -> request id -> when it may take an outcome again (monotonic clock).
        self._outcome_ids: dict[str, OrderedDict[str, float]] = {}
        self._listeners: list[ChangeListener] = []
        self._closed = False
        # name -> (holder, token, expiry on the monotonic clock); name -> last token given.
        self._leases: dict[str, tuple[str, int, float]] = {}
        self._tokens: dict[str, int] = {}
        self._beats: dict[str, tuple[dict[str, Any], float]] = {}

    async def read(self, model_id: str) -> ModelState:
        """Return the model's state; revision 0 and no versions if it was never written."""
        return self._models.get(model_id) or ModelState(model_id)

    async def model_ids(self) -> list[str]:
        """Return every model that has a deployed version, sorted."""
        return sorted(m for m, state in self._models.items() if state.exists)

    async def write(self, state: ModelState, *, fence: Fence | None = None) -> ModelState:
        """Store ``state`` if the model is still at ``state.revision``; return it at the next."""
        if fence is not None and self._live_token(fence[0]) != fence[1]:
            raise fenced_out(state.model_id, fence)
        stored = self._models.get(state.model_id)
        actual = 0 if stored is None else stored.revision
        if state.revision != actual:
            raise stale_revision(state, int(actual))
        written = state.changed(revision=actual + 1)
        self._models[state.model_id] = written
        if not written.exists:
            self._outcomes.pop(state.model_id, None)
        self._announce(state.model_id, written.revision)
        return written

    async def hold_lease(self, name: str, holder: str, seconds: float) -> int | None:
        """Take or renew lease ``name`` for ``holder``; return its token (None: held by another)."""
        now = time.monotonic()
        current = self._leases.get(name)
        if current is not None and current[0] != holder and current[2] > now:
            return None
        if current is None or current[0] != holder:
            self._tokens[name] = self._tokens.get(name, 0) + 1
        token = self._tokens[name]
        self._leases[name] = (holder, token, now + seconds)
        return token

    async def heartbeat(self, process: str, facts: Mapping[str, Any], seconds: float) -> None:
        """Say that ``process`` lives, with ``facts``, for the next ``seconds``."""
        now = time.time()
        self._beats[process] = ({**facts, "at": now}, now + seconds)

    async def heartbeats(self) -> dict[str, dict[str, Any]]:
        """Return each live process's last facts, with ``"at"``."""
        now = time.time()
        self._beats = {p: beat for p, beat in self._beats.items() if beat[1] > now}
        return {process: dict(facts) for process, (facts, _) in self._beats.items()}

    def _live_token(self, name: str) -> int | None:
        current = self._leases.get(name)
        return None if current is None or current[2] <= time.monotonic() else current[1]

    async def add_outcome(
        self, model_id: str, version: str, value: float, *, once: str | None = None
    ) -> OutcomeTotals | None:
        """Add one outcome to the version's aggregates; return the new totals.

        None, and nothing added, if ``once`` already took an outcome: one of the
        model's last ``OUTCOME_IDS_KEPT`` ids of the last ``OUTCOME_ID_SECONDS``.
        """
        if once is not None:
            now = time.monotonic()
            claimed = self._outcome_ids.setdefault(model_id, OrderedDict())
            # Every id is kept equally long, so the oldest are first: expired ones leave in order.
            while claimed and next(iter(claimed.values())) <= now:
                claimed.popitem(last=False)
            if once in claimed:
                return None
            claimed[once] = now + OUTCOME_ID_SECONDS
            if len(claimed) > OUTCOME_IDS_KEPT:
                claimed.popitem(last=False)
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
