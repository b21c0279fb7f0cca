"""What happens after a version's batch ran, overran its deadline, or tripped its breaker.

A collaborator of :class:`~turnout.core.service.server.ModelServer`: each
deployment it builds calls these back (from the event loop). They feed the
version's metrics and breaker, tell plugins, and have a canary in progress
judged on the new evidence.
"""

from __future__ import annotations

import logging

from turnout.core.deployments.registry import Deployment
from turnout.core.execution.batching import BatchReport
from turnout.core.resilience.breaker import BreakerState
from turnout.core.routing.canary_plan import CANARY
from turnout.core.service.parts import ServerParts
from turnout.core.service.rollout_operations import RolloutOperations

__all__ = ["BatchEvents"]

logger = logging.getLogger("turnout")


class BatchEvents:
    """The callbacks a server's deployments make: batch done, deadline overrun, breaker change."""

    def __init__(self, parts: ServerParts, rollouts: RolloutOperations) -> None:
        self._events = parts.events
        self._router = parts.router
        self._rollouts = rollouts

    def batch_done(self, deployment: Deployment, report: BatchReport) -> None:
        """Record a finished batch in the version's metrics and breaker; judge its canary."""
        deployment.metrics.record_batch(
            rows=report.rows,
            latencies=report.latencies,
            requests=report.requests,
            errors=report.failed_requests,
            duration=report.duration,
            failed_latency=report.failed_latency,
        )
        if not report.overran:  # an overrun was counted when its deadline passed
            deployment.breaker.record(report.error is not None, report.duration)
        if self._events.has_listeners("batch_completed"):
            self._events.emit(
                "batch_completed",
                model_id=deployment.model_id,
                version=deployment.version,
                report=report,
            )
        if self._router.config(deployment.model_id).strategy == CANARY:
            self._rollouts.judge_canary(deployment.model_id)

    def overrun(self, deployment: Deployment) -> None:
        """Count a batch that passed its deadline as a failure, now."""
        # Counted when the deadline passes, not when (if ever) the batch ends:
        # a model that hangs must trip its breaker all the same.
        # The second argument is the execution's duration, as policies (slow_calls,
        # plugins) read it: how long the batch has run so far, not the clock's
        # reading (which was passed here before). The oldest batch in flight is
        # the overrunning one whenever a version runs one batch at a time.
        elapsed = deployment.batcher.statistics().oldest_batch_seconds
        deployment.breaker.record(True, elapsed)

    def breaker_changed(
        self, deployment: Deployment, old: BreakerState, new: BreakerState, reason: str
    ) -> None:
        """Log and announce a breaker's new state; an opened candidate fails its canary."""
        log = logger.warning if new is BreakerState.OPEN else logger.info
        log(
            "circuit breaker of %s:%s is %s: %s",
            deployment.model_id,
            deployment.version,
            new.value,
            reason,
        )
        self._events.emit(
            "breaker_state_changed",
            model_id=deployment.model_id,
            version=deployment.version,
            old=old,
            new=new,
            reason=reason,
        )
        if new is BreakerState.OPEN and self._router.config(deployment.model_id).strategy == CANARY:
            self._rollouts.judge_canary(deployment.model_id)
