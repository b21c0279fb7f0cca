"""The ``canary`` strategy: a candidate gets a stepped share of traffic, the baseline the rest.

Params (every one but baseline and candidate has a default)::

    {"baseline": "v1", "candidate": "v2",
     "steps": [0.05, 0.25, 0.5, 1.0], "step": 0,
     "min_requests": 100, "min_seconds": 0.0,
     "max_error_rate": 0.05, "max_latency_ratio": 1.5}

The params are a :class:`~turnout.core.routing.canary_plan.CanaryPlan`; the
strategy only routes by the current step's weight. The canary controller
(``turnout.core.routing.canary_controller``) judges each step and moves
``step`` on, promotes the candidate after the last step, or rolls back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from turnout.core.hookspecs import hookimpl
from turnout.core.routing.canary_plan import CANARY, DEFAULT_STEPS, CanaryPlan
from turnout.core.routing.config import Route, RouteRequest, RoutingContext, RoutingStrategyFactory

__all__ = ["DEFAULT_STEPS", "CanaryPlan", "CanaryRouting"]


class CanaryRouting:
    """Routes the current step's share of traffic to the candidate, the rest to the baseline."""

    name: ClassVar[str] = CANARY

    def __init__(self, params: Mapping[str, Any], context: RoutingContext) -> None:
        self.plan = CanaryPlan.from_params(params, context)
        self._weight = self.plan.weight
        self._baseline = Route(self.plan.baseline)
        self._candidate = Route(self.plan.candidate)
        self.split = {self.plan.baseline: 1.0 - self._weight, self.plan.candidate: self._weight}

    def route(self, request: RouteRequest) -> Route:
        """Return the candidate with probability of the step's weight, else the baseline."""
        return self._candidate if request.random() < self._weight else self._baseline

    def versions(self) -> frozenset[str]:
        """Baseline and candidate."""
        return frozenset({self.plan.baseline, self.plan.candidate})


@hookimpl(trylast=True)
def register_routing_strategies() -> Sequence[RoutingStrategyFactory]:
    """Offer the ``canary`` strategy."""
    return [CanaryRouting]
