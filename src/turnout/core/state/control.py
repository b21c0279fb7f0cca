"""The control-state seam: what every process serving a model must agree on, behind one protocol.

:class:`ControlState` holds, per model, one :class:`ModelState`:

- the catalogue of deployed versions (:class:`VersionEntry`: artifact digest,
  metadata, deploy options);
- the active version;
- the routing config (a blue-green pair is its params, a canary's step too)
  and the fallback;
- the rollout: when the canary step in force began, and the rollout history;

and, beside it, each version's outcome aggregates
(:class:`~turnout.core.routing.outcomes.OutcomeTotals`), which the A/B
comparison reads and from which a bandit's Beta posterior follows, and the
request ids that got an outcome (for a day), so that each gets one.

A model's state is written whole, by compare-and-set on its revision: a
writer whose revision is stale gets :class:`~turnout.core.errors.StateConflictError`
and nothing is overwritten. Every write is announced to the subscribers as
"model M is now at revision R"; they re-read. Outcome aggregates are
counters: additions commute, so they are added atomically and bump no
revision.

What stays in each process, and is never shared: batchers, breakers, latency
histograms, shadow sample buffers, health-monitor timers, and the map of
request ids to the version that served them (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from turnout.core.errors import InvalidConfigError, StateConflictError
from turnout.core.resilience.fallback import Fallback
from turnout.core.routing.canary_controller import RolloutEvent
from turnout.core.routing.config import RoutingConfig
from turnout.core.routing.outcomes import OutcomeTotals
from turnout.core.routing.router import ACTIVE

__all__ = [
    "EVERY_MODEL",
    "HISTORY_LIMIT",
    "OUTCOME_ID_SECONDS",
    "ChangeListener",
    "ControlState",
    "Fence",
    "ModelState",
    "VersionEntry",
    "fenced_out",
    "stale_revision",
]

# Rollout events a model keeps: enough for every step of several rollouts.
HISTORY_LIMIT = 200
# How long a request id that got an outcome is remembered, so that no server takes a second.
OUTCOME_ID_SECONDS = 24 * 3600.0

# listener(model_id, revision): the model's state is now at that revision; re-read it.
ChangeListener = Callable[[str, int], None]
# (lease name, fencing token) that a controller's write carries.
Fence = tuple[str, int]

# The model id a feed announces when it may have missed changes: re-read every model.
EVERY_MODEL = ""


@dataclass(frozen=True)
class VersionEntry:
    """One deployed version in the catalogue: what a process needs to know to serve it."""

    version: str
    digest: str  # sha256 of the ONNX bytes; "" for a Python model (mock mode)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)  # as deploy_model takes them


@dataclass(frozen=True)
class ModelState:
    """One model's shared control state at one revision (0: never written)."""

    model_id: str
    revision: int = 0
    versions: Mapping[str, VersionEntry] = field(default_factory=dict)
    active: str | None = None
    routing: RoutingConfig = ACTIVE
    fallback: Fallback | None = None
    step_started: datetime | None = None  # when the canary step in force began
    history: tuple[RolloutEvent, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.revision, int) or self.revision < 0:
            raise InvalidConfigError(f"revision must be an integer >= 0, got {self.revision!r}")
        for name in (self.active, self.fallback.version if self.fallback else None):
            if name is not None and name not in self.versions:
                raise InvalidConfigError(
                    f"the state of {self.model_id!r} names {name!r}, which is not in its catalogue"
                )

    @property
    def exists(self) -> bool:
        """True if the model has a deployed version; a state without one is a removal."""
        return bool(self.versions)

    def changed(self, **changes: Any) -> ModelState:
        """Return a copy with ``changes``, at the same revision (the one a write is based on)."""
        if "history" in changes:
            changes["history"] = tuple(changes["history"])[-HISTORY_LIMIT:]
        return replace(self, **changes)


class ControlState(Protocol):
    """Where the control state of every model lives: read, compare-and-set, and watched.

    :class:`~turnout.core.state.memory.MemoryState` is the built-in one.
    The contract tests in ``tests/core/state/test_control_contract.py`` say
    what any implementation must do.
    """

    async def read(self, model_id: str) -> ModelState:
        """Return the model's state; revision 0 and no versions if it was never written."""
        ...

    async def model_ids(self) -> list[str]:
        """Return every model that has a deployed version, sorted."""
        ...

    async def write(self, state: ModelState, *, fence: Fence | None = None) -> ModelState:
        """Store ``state`` if the model is still at ``state.revision``; return it at the next.

        Raise StateConflictError if another write moved the model past that
        revision: nothing is stored. A state with no versions removes the
        model; its revision still counts on. With ``fence`` (lease name,
        token), the write is also refused unless that lease is live and
        still at that token: a controller that lost its lease writes nothing.
        """
        ...

    async def hold_lease(self, name: str, holder: str, seconds: float) -> int | None:
        """Take or renew lease ``name`` for ``holder`` for ``seconds``; return its fencing token.

        None while another holder's lease is live. The token grows each time
        the lease changes hands, so a write fenced by an old one is refused.
        """
        ...

    async def add_outcome(
        self, model_id: str, version: str, value: float, *, once: str | None = None
    ) -> OutcomeTotals | None:
        """Add one outcome to the version's aggregates, atomically; return the new totals.

        With ``once`` (a request id), the outcome is added only if no outcome
        with that id was added to the model in the last ``OUTCOME_ID_SECONDS``:
        otherwise nothing changes and the answer is None. The check and the
        addition are one atomic step, across every process sharing the store.
        A store in the server's own memory may keep fewer ids, to bound that
        memory: ``MemoryState`` keeps each model's last ``OUTCOME_IDS_KEPT``.
        """
        ...

    async def outcomes(self, model_id: str) -> dict[str, OutcomeTotals]:
        """Return the model's outcome aggregates per version."""
        ...

    async def subscribe(self, listener: ChangeListener) -> Callable[[], None]:
        """Call ``listener(model_id, revision)`` after each write, from the event loop.

        Returns, once subscribed, the function that unsubscribes. A listener
        learns of every write from then on, its own subscriber's included,
        and re-reads what it needs. A feed that lost its connection calls
        ``listener(EVERY_MODEL, 0)`` on its return: re-read every model you
        know (the store may even have lost them). A lost notification costs a
        re-read, never a missed change.
        """
        ...

    async def heartbeat(self, process: str, facts: Mapping[str, Any], seconds: float) -> None:
        """Say that ``process`` lives, with ``facts`` (plain data), for the next ``seconds``."""
        ...

    async def heartbeats(self) -> dict[str, dict[str, Any]]:
        """Return each live process's last facts, with ``"at"``: when it said them (epoch s)."""
        ...

    async def close(self) -> None:
        """Release what the store holds (connections); subscribers hear no more."""
        ...


def fenced_out(model_id: str, fence: Fence) -> StateConflictError:
    """The error of a write whose fencing token is no longer its lease's."""
    name, token = fence
    return StateConflictError(
        f"the write to {model_id!r} was fenced out: lease {name!r} is no longer at token {token}",
        model_id=model_id,
        expected=token,
        actual=-1,
    )


def stale_revision(state: ModelState, stored: int) -> StateConflictError:
    """The error of a write based on ``state.revision`` when the store is at ``stored``."""
    return StateConflictError(
        f"the state of {state.model_id!r} changed since revision {state.revision}:"
        f" it is at revision {stored}",
        model_id=state.model_id,
        expected=state.revision,
        actual=stored,
    )
