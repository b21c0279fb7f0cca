"""A canary rollout's plan: its two versions, traffic steps and judging thresholds, validated.

The plan is the ``canary`` routing config's params, read once. The canary
strategy routes by it, and the canary controller (``canary_controller.py``)
judges its steps: both read this one definition, so core never needs the
strategy class.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from turnout.core.errors import InvalidRoutingError
from turnout.core.routing.config import RoutingConfig, RoutingContext, check_versions

__all__ = ["CANARY", "DEFAULT_STEPS", "CanaryPlan", "same_rollout"]

# The routing strategy whose params are a CanaryPlan.
CANARY = "canary"

DEFAULT_STEPS = (0.05, 0.25, 0.5, 1.0)


@dataclass(frozen=True)
class CanaryPlan:
    """A validated canary rollout: the two versions, the steps and the judging thresholds."""

    baseline: str
    candidate: str
    steps: tuple[float, ...] = DEFAULT_STEPS
    step: int = 0
    min_requests: int = 100
    min_seconds: float = 0.0
    max_error_rate: float = 0.05
    max_latency_ratio: float = 1.5

    @property
    def weight(self) -> float:
        """The candidate's share of traffic at the current step."""
        return self.steps[self.step]

    @property
    def last_step(self) -> bool:
        """True at the final step, after which the candidate is promoted."""
        return self.step == len(self.steps) - 1

    @classmethod
    def from_params(cls, params: Mapping[str, Any], context: RoutingContext) -> CanaryPlan:
        """Validate canary params against the model's deployed versions."""
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(params) - known
        if unknown:
            raise InvalidRoutingError(f"'canary' routing: unknown params {sorted(unknown)}")
        baseline, candidate = check_versions(
            [params.get("baseline"), params.get("candidate")], context
        )
        steps = params.get("steps", DEFAULT_STEPS)
        if isinstance(steps, str) or not isinstance(steps, Sequence) or not steps:
            raise InvalidRoutingError("steps must be a non-empty list of traffic shares")
        for share in steps:
            if not _number(share) or not 0.0 < share <= 1.0:
                raise InvalidRoutingError(f"each step must be a share in (0, 1], got {share!r}")
        if list(steps) != sorted(steps):
            raise InvalidRoutingError("steps must not decrease")
        step = params.get("step", 0)
        if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < len(steps):
            raise InvalidRoutingError(f"step must index steps (0..{len(steps) - 1}), got {step!r}")
        plan = cls(
            baseline=baseline,
            candidate=candidate,
            steps=tuple(float(s) for s in steps),
            step=step,
            min_requests=params.get("min_requests", cls.min_requests),
            min_seconds=params.get("min_seconds", cls.min_seconds),
            max_error_rate=params.get("max_error_rate", cls.max_error_rate),
            max_latency_ratio=params.get("max_latency_ratio", cls.max_latency_ratio),
        )
        if isinstance(plan.min_requests, bool) or not isinstance(plan.min_requests, int):
            raise InvalidRoutingError("min_requests must be an integer")
        if plan.min_requests < 1:
            raise InvalidRoutingError("min_requests must be at least 1")
        if not _number(plan.min_seconds) or plan.min_seconds < 0:
            raise InvalidRoutingError("min_seconds must be a number >= 0")
        if not _number(plan.max_error_rate) or not 0.0 <= plan.max_error_rate <= 1.0:
            raise InvalidRoutingError("max_error_rate must be in [0, 1]")
        if not _number(plan.max_latency_ratio) or plan.max_latency_ratio <= 0:
            raise InvalidRoutingError("max_latency_ratio must be a number > 0")
        return plan

    def to_params(self) -> dict[str, Any]:
        """Return the plan as routing params."""
        return {
            "baseline": self.baseline,
            "candidate": self.candidate,
            "steps": list(self.steps),
            "step": self.step,
            "min_requests": self.min_requests,
            "min_seconds": self.min_seconds,
            "max_error_rate": self.max_error_rate,
            "max_latency_ratio": self.max_latency_ratio,
        }


def same_rollout(old: RoutingConfig, new: RoutingConfig) -> bool:
    """True if ``new`` is a step of the canary rollout ``old`` (same baseline and candidate)."""
    return (
        old.strategy == new.strategy == CANARY
        and old.params.get("baseline") == new.params.get("baseline")
        and old.params.get("candidate") == new.params.get("candidate")
    )


def _number(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False  # an int too large for a float, which JSON allows
