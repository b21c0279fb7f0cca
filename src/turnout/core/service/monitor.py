"""Health assessment and the optional background monitor that acts on it.

A version's report combines the built-in verdicts (``health.assess``), the
health-check plugins and the deployment's own ``health_check_fn``. Checks
that are not turnout's own run in worker threads, each bounded by a timeout:
one that raises or hangs counts as failed and cannot stall the server.

A version other servers of the fleet serve too is judged on the fleet's
numbers: requests, the failed share over the last minute, and p99 latency,
from this server's live metrics plus the others' last heartbeats. So the
controller, the one server that rolls back, rolls back on what every
client sees, not on its own share of the traffic.

The monitor evaluates every version each interval, emits ``health_changed``
when a status moves, remembers which versions were healthy while active,
and, with ``auto_rollback``, moves a model whose active version turned
UNHEALTHY back to the last version that was healthy while active.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, replace
from typing import Any

import anyio

from turnout.core.deployments.registry import Deployment, ModelRegistry
from turnout.core.execution.metrics import MetricsTotals
from turnout.core.resilience.health import (
    HealthCheck,
    HealthFacts,
    HealthReport,
    HealthStatus,
    HealthVerdict,
    assess,
    worst,
)
from turnout.core.service.fleet_traffic import RecentFailures
from turnout.core.service.plugins import EventEmitter

__all__ = ["HEALTH_CHECK_TIMEOUT", "HealthMonitor", "MonitorSettings"]

logger = logging.getLogger("turnout")

HEALTH_CHECK_TIMEOUT = 5.0


@dataclass(frozen=True)
class MonitorSettings:
    """How often the monitor looks, and whether it rolls back by itself."""

    interval: float
    auto_rollback: bool


class HealthMonitor:
    """Assesses versions' health and, when started, watches them in the background."""

    def __init__(
        self,
        registry: ModelRegistry,
        checks: Mapping[str, HealthCheck],
        events: EventEmitter,
        rollback: Callable[[str, str, str], None],
        elsewhere: Callable[[str, str], MetricsTotals] | None = None,
    ) -> None:
        self._registry = registry
        self._elsewhere = elsewhere
        self._recent = RecentFailures()
        self._checks = checks
        self._events = events
        self._rollback = rollback
        self._last: dict[tuple[str, str], HealthReport] = {}
        self._hung: set[str] = set()
        self._stable: dict[str, list[str]] = {}
        self._scope: anyio.CancelScope | None = None
        self.settings: MonitorSettings | None = None

    # -- one version ---------------------------------------------------------------------

    async def report(self, deployment: Deployment) -> HealthReport:
        """Return ``deployment``'s health now, with the reasons behind it."""
        facts = self._fleet_facts(deployment, _facts(deployment))
        verdicts = assess(facts)
        where = f"of {deployment.model_id}:{deployment.version}"
        for name, check in self._checks.items():
            verdict = await self._run_bounded(f"{name!r} {where}", functools.partial(check, facts))
            if isinstance(verdict, HealthVerdict):
                verdicts.append(verdict)
            elif verdict is _FAILED:
                verdicts.append(
                    HealthVerdict(HealthStatus.UNHEALTHY, f"health check {name!r} failed")
                )
        if deployment.health_check_fn is not None:
            check_fn = deployment.health_check_fn
            ok = await self._run_bounded(
                where, lambda: _truth(check_fn(deployment.model, deployment.version))
            )
            if ok is _FAILED or not ok:
                verdicts.append(
                    HealthVerdict(
                        HealthStatus.UNHEALTHY, "the deployment's health_check_fn reported failure"
                    )
                )
        status = worst(verdicts)
        return HealthReport(
            model_id=deployment.model_id,
            version=deployment.version,
            status=status,
            circuit_breaker_open=facts.breaker_state == "open",
            last_request_time=facts.last_request_time,
            request_count=facts.request_count,
            error_rate=facts.error_rate,
            reasons=tuple(v.reason for v in verdicts),
        )

    def _fleet_facts(self, deployment: Deployment, facts: HealthFacts) -> HealthFacts:
        """The facts on the fleet's numbers, when other servers serve the version too."""
        if self._elsewhere is None:
            return facts
        model_id, version = deployment.model_id, deployment.version
        elsewhere = self._elsewhere(model_id, version)
        if not elsewhere.requests:
            return facts
        fleet = MetricsTotals.of(deployment.metrics) + elsewhere
        return replace(
            facts,
            request_count=fleet.requests,
            error_rate=self._recent.rate(model_id, version, fleet),
            p99_latency_ms=fleet.histogram().quantile(0.99) * 1e3,
        )

    async def _run_bounded(self, label: str, call: Callable[[], Any]) -> Any:
        """Run a foreign check in a thread; return its result, or _FAILED if it raised or hung.

        A check whose last call timed out and has not returned is not called
        again until it does: every call would strand one more thread.
        """
        if label in self._hung:
            logger.warning("health check %s is still hung from an earlier call", label)
            return _FAILED

        def tracked() -> Any:
            try:
                return call()
            finally:
                self._hung.discard(label)

        self._hung.add(label)
        try:
            with anyio.fail_after(HEALTH_CHECK_TIMEOUT):
                return await anyio.to_thread.run_sync(tracked, abandon_on_cancel=True)
        except TimeoutError:
            logger.warning("health check %s timed out after %s s", label, HEALTH_CHECK_TIMEOUT)
            return _FAILED
        except Exception:
            logger.exception("health check %s raised", label)
        self._hung.discard(label)
        return _FAILED

    # -- every version -------------------------------------------------------------------

    async def evaluate(self, *, auto_rollback: bool = False) -> list[HealthReport]:
        """Assess every version once; emit changes; roll back an unhealthy active version."""
        reports = []
        for deployment in list(self._registry):
            report = await self.report(deployment)
            reports.append(report)
            key = (deployment.model_id, deployment.version)
            old = self._last.get(key)
            self._last[key] = report
            if old is None or old.status is not report.status:
                self._events.emit(
                    "health_changed",
                    model_id=deployment.model_id,
                    version=deployment.version,
                    old=old,
                    new=report,
                )
            if self._registry.active.get(deployment.model_id) != deployment.version:
                continue
            if report.status is HealthStatus.HEALTHY:
                stable = self._stable.setdefault(deployment.model_id, [])
                if deployment.version in stable:
                    stable.remove(deployment.version)
                stable.append(deployment.version)
            elif report.status is HealthStatus.UNHEALTHY and auto_rollback:
                self._roll_back(report)
        return reports

    def _roll_back(self, report: HealthReport) -> None:
        model_id, bad = report.model_id, report.version
        for version in reversed(self._stable.get(model_id, [])):
            if version == bad or not self._registry.contains(model_id, version):
                continue
            if self._registry.get(model_id, version).breaker.state.value == "open":
                continue
            last = self._last.get((model_id, version))
            if last is not None and last.status is HealthStatus.UNHEALTHY:
                # Healthy while active once, unhealthy now (its error rate, a check):
                # rolling back to it would swap two unhealthy versions every interval.
                continue
            reason = f"{bad} is unhealthy ({'; '.join(report.reasons)})"
            logger.warning("rolling %s back from %s to %s: %s", model_id, bad, version, reason)
            self._rollback(model_id, version, reason)
            return
        logger.error(
            "%s:%s is UNHEALTHY (%s) and there is no stable version to roll back to;"
            " it keeps serving",
            model_id,
            bad,
            "; ".join(report.reasons),
        )

    def forget(self, model_id: str, version: str) -> None:
        """Drop what the monitor remembers of a retired version."""
        self._last.pop((model_id, version), None)
        self._recent.forget(model_id, version)
        stable = self._stable.get(model_id)
        if stable and version in stable:
            stable.remove(version)

    # -- the background task -------------------------------------------------------------

    def start(self, settings: MonitorSettings) -> Coroutine[Any, Any, None]:
        """Mark the monitor as running with ``settings``; return the coroutine that runs it.

        Marked at once, not when the task first runs: a second start, a stop or
        a close in the same loop turn must see it. (When :meth:`run` marked it,
        a second start launched a second monitor that nothing could stop, and a
        stop or a close before the task began missed it: close then waited on
        the monitor forever.)
        """
        self.settings = settings
        return self.run(settings)

    async def run(self, settings: MonitorSettings) -> None:
        """Evaluate every ``settings.interval`` seconds until stopped."""
        if self.settings is not settings:
            return  # stopped (or restarted) before this task began
        scope = self._scope = anyio.CancelScope()
        try:
            with scope:
                while True:
                    try:
                        await self.evaluate(auto_rollback=settings.auto_rollback)
                    except Exception:
                        logger.exception("the health monitor failed an evaluation; it goes on")
                    await anyio.sleep(settings.interval)
        finally:
            # Unless a stop and a new start came in the meantime: that monitor is not this one.
            if self._scope is scope:
                self._scope = None
                self.settings = None

    def stop(self) -> None:
        """Stop the background task, if it runs; it may be started again at once."""
        self.settings = None
        if self._scope is not None:
            self._scope.cancel()
            self._scope = None


_FAILED: Any = object()


def _truth(value: object) -> bool:
    """The truth of a check's answer, in the check's thread, so an ambiguous one
    (a numpy array) fails that check instead of the whole assessment."""
    return bool(value)


def _facts(deployment: Deployment) -> HealthFacts:
    metrics = deployment.metrics.snapshot()
    breaker = deployment.breaker.snapshot()
    batcher = deployment.batcher.statistics()
    return HealthFacts(
        model_id=deployment.model_id,
        version=deployment.version,
        model=deployment.model,
        request_count=metrics.request_count,
        error_rate=deployment.metrics.recent_error_rate,
        error_threshold=deployment.error_threshold,
        p99_latency_ms=metrics.p99_latency_ms,
        last_request_time=metrics.last_request_time,
        breaker_state=breaker.state.value,
        breaker_reason=breaker.reason,
        oldest_batch_seconds=batcher.oldest_batch_seconds,
        queued_requests=batcher.queued_requests,
    )
