"""Every hook a turnout plugin can implement.

A plugin is any object or module with functions marked ``@turnout.hookimpl``
and named after a hook below. Built-in strategies register through these
same hooks, so a plugin replaces or extends nothing that is closed to it.

The sync/async contract, once: pluggy calls hooks synchronously, on the
server's event loop.

* **Registration hooks** (``register_*``) are called once, when a server
  starts, and return classes. Their instances may have ``async`` methods
  where the protocol says so.
* **Event hooks** are called after the fact, on the event loop, and must
  return quickly: they must not block, sleep or do I/O. A plugin that does
  I/O (a tracking server, a pager) puts the event on its own queue or thread
  and returns. Their return values are ignored. An event hook that raises is
  logged and skipped; it never fails a prediction or a deployment.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from turnout.core.deployments.registry import Deployment
    from turnout.core.execution.batching import BatchReport
    from turnout.core.resilience.breaker import BreakerPolicyFactory, BreakerState
    from turnout.core.resilience.health import HealthCheck, HealthReport
    from turnout.core.routing.config import RoutingConfig, RoutingStrategyFactory
    from turnout.core.routing.outcomes import ABComparison

__all__ = ["PROJECT_NAME", "hookimpl", "hookspec"]

PROJECT_NAME = "turnout"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# -- registration -------------------------------------------------------------------------


@hookspec
def register_routing_strategies() -> Sequence[RoutingStrategyFactory]:
    """Return routing strategy classes to offer, each with a unique ``name``.

    Called once when a server builds its plugin manager. Two strategies with
    the same name, from any two plugins, are an error at start-up.
    """


@hookspec
def register_breaker_policies() -> Sequence[BreakerPolicyFactory]:
    """Return circuit-breaker policy classes to offer, each with a unique ``name``.

    Called once when a server builds its plugin manager. A policy decides when
    a closed breaker trips; ``BreakerConfig(policy=name, params=...)`` picks one.
    Two policies with the same name are an error at start-up.
    """


@hookspec
def register_health_checks() -> Sequence[HealthCheck]:
    """Return health checks to run on every version, each with a unique ``name``.

    Called once when a server builds its plugin manager. Each check is called
    in a worker thread, bounded by a timeout, whenever a version's health is
    assessed; a check that raises or times out counts as failed.
    """


# -- model lifecycle events ------------------------------------------------------------------


@hookspec
def model_deployed(deployment: Deployment) -> None:
    """Called after ``deployment`` was added and can serve requests."""


@hookspec
def model_retired(model_id: str, version: str) -> None:
    """Called after a version was retired; its admitted requests have been answered."""


@hookspec
def active_version_changed(model_id: str, old: str | None, new: str | None) -> None:
    """Called after a model's active version changed (``None``: no active version)."""


@hookspec
def routing_changed(model_id: str, old: RoutingConfig, new: RoutingConfig) -> None:
    """Called after a model's routing configuration was replaced."""


# -- serving events --------------------------------------------------------------------------


@hookspec
def batch_completed(model_id: str, version: str, report: BatchReport) -> None:
    """Called once per executed batch (not per request), with its sizes, latencies and error."""


@hookspec
def breaker_state_changed(
    model_id: str, version: str, old: BreakerState, new: BreakerState, reason: str
) -> None:
    """Called when a version's circuit breaker opens, starts probing or closes."""


@hookspec
def health_changed(
    model_id: str, version: str, old: HealthReport | None, new: HealthReport
) -> None:
    """Called when the health monitor finds a version's status changed.

    ``old`` is None the first time the monitor looks at a version.
    """


@hookspec
def shadow_compared(
    model_id: str, primary: str, shadow: str, difference: float, agreed: bool | None
) -> None:
    """Called when a mirrored request's shadow result was compared with the primary's.

    ``difference`` is the mean absolute difference of the outputs; ``agreed``
    whether the labels all matched (None for a regressor).
    """


@hookspec
def versions_compared(model_id: str, comparison: ABComparison) -> None:
    """Called after ``compare_versions`` compared two versions' recorded outcomes."""


@hookspec
def rollout_step(model_id: str, candidate: str, step: int, weight: float, event: str) -> None:
    """Called when a canary rollout starts, moves on a step, is promoted, rolls back or ends.

    ``event`` is "started", "step", "promoted", "rolled_back" or "ended" (the
    rollout was replaced by other routing or by ``set_active_version``);
    ``weight`` is the share of traffic the candidate gets from now on (0.0
    after a rollback or an end, 1.0 after a promotion).
    """


def all_hook_names() -> list[str]:
    """Return the name of every hook specified in this module."""
    return [
        name
        for name, value in globals().items()
        if callable(value) and hasattr(value, f"{PROJECT_NAME}_spec")
    ]
