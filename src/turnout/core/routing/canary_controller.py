"""The rollout controller: judges each canary step and decides to advance, promote or roll back.

The controller holds, per model, the totals both versions had when the
current step began, so each step is judged on its own traffic only. It is
asked to judge after every batch either version runs, and once a second;
the totals it is given are the whole fleet's (this server's own, live, and
what the others last published: :mod:`turnout.core.service.fleet_traffic`).
The judgement is a few subtractions until the step has seen enough requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from turnout.core.clock import Clock
from turnout.core.execution.metrics import MetricsTotals
from turnout.core.routing.canary_plan import CanaryPlan

__all__ = ["Judgement", "RolloutAction", "RolloutController", "RolloutEvent"]

# Below this, a latency difference is noise on a shared machine, never a regression.
LATENCY_SLACK_S = 0.001
# A baseline with fewer requests in the step window is judged on its whole history.
MIN_BASELINE_WINDOW = 20


class RolloutAction(StrEnum):
    """What the controller decided after judging a step."""

    ADVANCE = "step"
    PROMOTE = "promoted"
    ROLL_BACK = "rolled_back"


@dataclass(frozen=True)
class Judgement:
    """A decision and the reason for it."""

    action: RolloutAction
    reason: str


@dataclass(frozen=True)
class RolloutEvent:
    """One entry of a model's rollout history, as shown in its status."""

    at: datetime
    candidate: str
    step: int
    weight: float
    event: str
    reason: str


@dataclass
class _Step:
    started: float  # the controller's clock, which judges the window
    started_at: datetime  # wall-clock time, which the control state records
    baseline: MetricsTotals  # each version's totals when the step began
    candidate: MetricsTotals


class RolloutController:
    """Keeps each canary model's step window and judges it against the plan's thresholds."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._steps: dict[str, _Step] = {}
        self._history: dict[str, list[RolloutEvent]] = {}

    def begin_step(
        self,
        model_id: str,
        plan: CanaryPlan,
        baseline: MetricsTotals,
        candidate: MetricsTotals,
        *,
        event: str = "step",
        reason: str = "",
    ) -> None:
        """Start judging ``plan.step`` from now, and record it in the history."""
        self._steps[model_id] = _Step(self._clock.now(), datetime.now(UTC), baseline, candidate)
        self.record(model_id, plan, event, reason)

    def record(self, model_id: str, plan: CanaryPlan, event: str, reason: str) -> None:
        """Add an entry to the model's rollout history."""
        entry = RolloutEvent(
            datetime.now(UTC), plan.candidate, plan.step, plan.weight, event, reason
        )
        self._history.setdefault(model_id, []).append(entry)

    def end(self, model_id: str) -> None:
        """Forget the model's step window (the rollout is over); its history stays."""
        self._steps.pop(model_id, None)

    def history(self, model_id: str) -> tuple[RolloutEvent, ...]:
        """Return the model's rollout history, oldest first."""
        return tuple(self._history.get(model_id, ()))

    def adopt_history(self, model_id: str, history: tuple[RolloutEvent, ...]) -> None:
        """Take ``history`` (the control state's) as the model's rollout history."""
        self._history[model_id] = list(history)

    def step_started(self, model_id: str) -> datetime | None:
        """Return when the canary step being judged began (None without one)."""
        step = self._steps.get(model_id)
        return None if step is None else step.started_at

    def judge(
        self,
        model_id: str,
        plan: CanaryPlan,
        baseline: MetricsTotals,
        candidate: MetricsTotals,
        *,
        candidate_broken: bool = False,
    ) -> Judgement | None:
        """Return a decision for the current step, or None while it needs more traffic."""
        step = self._steps.get(model_id)
        if step is None:
            return None
        if candidate_broken:
            return Judgement(RolloutAction.ROLL_BACK, f"{plan.candidate}'s circuit breaker opened")
        requests = candidate.requests - step.candidate.requests
        failures = candidate.failures - step.candidate.failures
        allowed = plan.max_error_rate * max(requests, plan.min_requests)
        if failures > allowed:
            return Judgement(
                RolloutAction.ROLL_BACK,
                f"{failures} of {requests} requests to {plan.candidate} failed at step"
                f" {plan.step} ({plan.weight:.0%}); the limit is {plan.max_error_rate:.1%}",
            )
        elapsed = self._clock.now() - step.started
        if requests < plan.min_requests or elapsed < plan.min_seconds:
            return None
        latency = (candidate - step.candidate).histogram()
        if baseline.requests - step.baseline.requests < MIN_BASELINE_WINDOW:
            base_latency = baseline.histogram()
        else:
            base_latency = (baseline - step.baseline).histogram()
        p99 = latency.quantile(0.99)
        base_p99 = base_latency.quantile(0.99)
        if (
            base_p99 > 0
            and p99 > plan.max_latency_ratio * base_p99
            and (p99 - base_p99 > LATENCY_SLACK_S)
        ):
            return Judgement(
                RolloutAction.ROLL_BACK,
                f"{plan.candidate}'s p99 latency {p99 * 1e3:.2f} ms is over"
                f" {plan.max_latency_ratio}x the baseline's {base_p99 * 1e3:.2f} ms",
            )
        passed = (
            f"step {plan.step} ({plan.weight:.0%}) passed: {requests} requests,"
            f" {failures} failed, p99 {p99 * 1e3:.2f} ms vs baseline {base_p99 * 1e3:.2f} ms"
        )
        if plan.last_step:
            return Judgement(RolloutAction.PROMOTE, passed)
        return Judgement(RolloutAction.ADVANCE, passed)
