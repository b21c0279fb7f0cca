"""Canary rollouts and blue-green switches: the operations that drive them.

A collaborator of :class:`~turnout.core.service.server.ModelServer`, which
exposes these operations; the state it works on (registry, router, rollout
controller, events) is the server's, shared through :class:`ServerParts`.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np

from turnout.core.errors import (
    InvalidConfigError,
    InvalidRoutingError,
    SmokeTestError,
    TurnoutError,
)
from turnout.core.names import check_name
from turnout.core.resilience.breaker import BreakerState
from turnout.core.routing.canary_controller import RolloutAction
from turnout.core.routing.canary_plan import CANARY, CanaryPlan
from turnout.core.routing.config import RoutingConfig
from turnout.core.routing.router import ACTIVE
from turnout.core.service.parts import ServerCalls, ServerParts

__all__ = ["BLUE_GREEN", "RolloutOperations", "SmokeTestFn"]

logger = logging.getLogger("turnout")

# smoke_test(server, model_id, green), called with the ModelServer: server.SmokeTest
# names that type; this module cannot, as the server imports it.
SmokeTestFn = Callable[[Any, str, str], Awaitable[bool] | bool]

# The routing strategy a blue-green switch applies: {"blue", "green", "live"}.
BLUE_GREEN = "blue_green"


class RolloutOperations:
    """Starts, steps, judges and ends canary rollouts; switches blue-green and back."""

    def __init__(self, parts: ServerParts, server: ServerCalls) -> None:
        self._registry = parts.registry
        self._router = parts.router
        self._rollouts = parts.rollouts
        self._events = parts.events
        self._server = server

    # -- canary rollouts -----------------------------------------------------------------

    async def start_canary(
        self,
        model_id: str,
        candidate: str,
        *,
        baseline: str | None,
        steps: Sequence[float],
        min_requests: int,
        min_seconds: float,
        max_error_rate: float,
        max_latency_ratio: float,
    ) -> None:
        """Route the model by a canary plan from its first step (see ModelServer.start_canary)."""
        if baseline is None:
            baseline = self._registry.get(model_id).version
        params = {
            "baseline": baseline,
            "candidate": candidate,
            "steps": list(steps),
            "step": 0,
            "min_requests": min_requests,
            "min_seconds": min_seconds,
            "max_error_rate": max_error_rate,
            "max_latency_ratio": max_latency_ratio,
        }
        await self._server.set_routing(model_id, RoutingConfig(CANARY, params))

    async def abort_canary(self, model_id: str) -> None:
        """Stop a canary rollout and send all traffic back to its baseline."""
        self._registry.versions(check_name("model_id", model_id))
        plan = self.canary_plan(model_id)
        if plan is None:
            raise InvalidRoutingError(f"model '{model_id}' has no canary rollout in progress")
        self._finish_canary(model_id, plan, RolloutAction.ROLL_BACK, "aborted by request")
        # Like every operation that changes state, it returns once the change is stored.
        await self._server._flush_changes()

    def canary_plan(self, model_id: str) -> CanaryPlan | None:
        """Return the canary rollout in force for the model, or None."""
        if self._router.config(model_id).strategy != CANARY:
            return None
        # The strategy built from the config holds it parsed: parsing it again after every
        # batch would cost more than the judgement. Core knows the plan, not the class.
        plan = getattr(self._router.traffic(model_id).strategy, "plan", None)
        return plan if isinstance(plan, CanaryPlan) else None

    def begin_canary_step(self, model_id: str, *, started: bool, reason: str) -> None:
        """Open a new judgement window for the canary step now in force."""
        plan = self.canary_plan(model_id)
        assert plan is not None
        self._rollouts.begin_step(
            model_id,
            plan,
            self._server.traffic_totals(model_id, plan.baseline),
            self._server.traffic_totals(model_id, plan.candidate),
            event="started" if started else "step",
            reason=reason,
        )
        self._emit_rollout(model_id, plan, "started" if started else "step")

    def judge_canary(self, model_id: str) -> None:
        """Judge the step in force, if its window is full: advance, promote or roll back."""
        plan = self.canary_plan(model_id)
        if plan is None or not self._server._control_available() or not self._server._leads():
            # While the control state is unreachable rollouts pause; and one server of
            # a fleet, its controller, judges: the others follow what it writes.
            return
        candidate = self._registry.get(model_id, plan.candidate)
        judgement = self._rollouts.judge(
            model_id,
            plan,
            self._server.traffic_totals(model_id, plan.baseline),
            self._server.traffic_totals(model_id, plan.candidate),
            candidate_broken=candidate.breaker.state is BreakerState.OPEN,
        )
        if judgement is None:
            return
        with self._server._as_controller():
            if judgement.action is RolloutAction.ADVANCE:
                params = {**plan.to_params(), "step": plan.step + 1}
                logger.info("canary of %s: %s", model_id, judgement.reason)
                config = RoutingConfig(CANARY, params)
                self._server._apply_routing(model_id, config, judgement.reason)
            else:
                self._finish_canary(model_id, plan, judgement.action, judgement.reason)

    def _finish_canary(
        self, model_id: str, plan: CanaryPlan, action: RolloutAction, reason: str
    ) -> None:
        winner = plan.candidate if action is RolloutAction.PROMOTE else plan.baseline
        log = logger.info if action is RolloutAction.PROMOTE else logger.warning
        log("canary of %s %s: %s", model_id, action.value, reason)
        self._rollouts.record(model_id, plan, action.value, reason)
        self._rollouts.end(model_id)
        self._server._set_active(model_id, winner)
        self._server._apply_routing(model_id, ACTIVE)
        self._emit_rollout(model_id, plan, action.value)

    def end_rollout(self, model_id: str, reason: str) -> None:
        """Record that the model's canary (if any) ends for ``reason``, without choosing."""
        plan = self.canary_plan(model_id)
        if plan is not None:
            self._rollouts.record(model_id, plan, "ended", reason)
            self._rollouts.end(model_id)
            self._emit_rollout(model_id, plan, "ended")

    def _emit_rollout(self, model_id: str, plan: CanaryPlan, event: str) -> None:
        # The share the candidate gets from now on: all of it once promoted, even
        # when the plan's last step is below 1.0; none once rolled back.
        if event == RolloutAction.PROMOTE:
            weight = 1.0
        elif event in (RolloutAction.ROLL_BACK, "ended"):
            weight = 0.0
        else:
            weight = plan.weight
        self._events.emit(
            "rollout_step",
            model_id=model_id,
            candidate=plan.candidate,
            step=plan.step,
            weight=weight,
            event=event,
        )

    # -- blue-green ----------------------------------------------------------------------

    async def blue_green_switch(
        self,
        model_id: str,
        green: str,
        *,
        smoke_test: SmokeTestFn | None = None,
        samples: object = None,
        expected: object = None,
        tolerance: float = 1e-6,
    ) -> None:
        """Test ``green``, then switch all traffic to it at once, keeping blue for rollback.

        Smoke tests: ``smoke_test(server, model_id, green)`` returning true,
        and/or ``samples`` whose predictions on green must equal ``expected``
        within ``tolerance``. On failure SmokeTestError is raised and blue
        keeps serving.
        """
        self._registry.get(model_id, green)
        blue = self._registry.get(model_id).version
        if blue == green:
            raise InvalidRoutingError(f"'{green}' is already the live version of '{model_id}'")
        await self._smoke_test(model_id, green, smoke_test, samples, expected, tolerance)
        self.end_rollout(model_id, "replaced by a blue-green switch")
        self._server._set_active(model_id, green)
        params = {"blue": blue, "green": green, "live": "green"}
        self._server._apply_routing(model_id, RoutingConfig(BLUE_GREEN, params))
        await self._server._flush_changes()

    async def blue_green_rollback(self, model_id: str) -> None:
        """Send all traffic back to the blue version of the last blue-green switch."""
        # The config in force was validated when it was applied: its params are sound.
        config = self._router.config(check_name("model_id", model_id))
        if config.strategy != BLUE_GREEN or config.params.get("live") != "green":
            raise InvalidRoutingError(f"model '{model_id}' has no blue-green switch to roll back")
        blue, green = config.params["blue"], config.params["green"]
        self._server._set_active(model_id, blue)
        params = {"blue": blue, "green": green, "live": "blue"}
        self._server._apply_routing(model_id, RoutingConfig(BLUE_GREEN, params))
        await self._server._flush_changes()

    async def _smoke_test(
        self,
        model_id: str,
        green: str,
        smoke_test: SmokeTestFn | None,
        samples: object,
        expected: object,
        tolerance: float,
    ) -> None:
        if smoke_test is None and samples is None:
            raise InvalidConfigError("a blue-green switch needs a smoke_test or samples to run")
        if smoke_test is not None:
            try:
                verdict: Any = smoke_test(self._server, model_id, green)
                # Not "if not a bool": a sync test may well return numpy's bool_ or a count.
                if inspect.isawaitable(verdict):
                    verdict = await verdict
                passed = bool(verdict)  # an array's truth is ambiguous: that raises, here
            except Exception as exc:
                raise SmokeTestError(f"the smoke test of {model_id}:{green} raised: {exc}") from exc
            if not passed:
                raise SmokeTestError(f"the smoke test of {model_id}:{green} failed")
        if samples is not None:
            if expected is None:
                raise InvalidConfigError("samples need expected outputs to compare with")
            try:
                got = await self._server.predict(model_id, samples, version=green)
            except TurnoutError as exc:
                # Green failing to answer at all fails its smoke test like a wrong answer.
                raise SmokeTestError(
                    f"{model_id}:{green} could not answer the smoke-test samples: {exc}"
                ) from exc
            want = np.asarray(expected)
            if got.shape != want.shape or not np.allclose(got, want, atol=tolerance, rtol=0):
                raise SmokeTestError(
                    f"{model_id}:{green} gave outputs that differ from the expected ones"
                    f" by more than {tolerance}"
                )
