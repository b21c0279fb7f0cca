"""Health of a deployed version: HealthStatus, the facts it is judged on, and the verdicts.

A version's status is the worst of the verdicts about it: the built-in ones
(:func:`assess`: its breaker, its error rate, a batch stuck in the runtime,
no traffic yet) and those of health-check plugins and the deployment's own
``health_check_fn``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

__all__ = [
    "HealthCheck",
    "HealthFacts",
    "HealthReport",
    "HealthStatus",
    "HealthVerdict",
    "assess",
    "worst",
]


class HealthStatus(StrEnum):
    """How a version is doing, from serving normally to not serving at all."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"
    UNKNOWN = "unknown"


_SEVERITY = {
    HealthStatus.HEALTHY: 0,
    HealthStatus.UNKNOWN: 1,
    HealthStatus.DEGRADED: 2,
    HealthStatus.UNHEALTHY: 3,
}


@dataclass(frozen=True)
class HealthVerdict:
    """One check's opinion of a version, and why."""

    status: HealthStatus
    reason: str


@dataclass(frozen=True)
class HealthFacts:
    """What a health check may look at: the version's numbers, state and model.

    ``error_rate`` is recent: the failed share of the last 100 batches' requests.
    For a version other servers of the fleet serve too, the numbers are the
    fleet's: ``request_count`` and ``p99_latency_ms`` over every server, and
    ``error_rate`` the failed share of the last minute's requests.
    """

    model_id: str
    version: str
    model: Any
    request_count: int
    error_rate: float
    error_threshold: float
    p99_latency_ms: float
    last_request_time: datetime | None
    breaker_state: str
    breaker_reason: str
    oldest_batch_seconds: float
    queued_requests: int


class HealthCheck(Protocol):
    """A health-check plugin: ``name`` and a call that returns a verdict or None."""

    @property
    def name(self) -> str:
        """The check's name, shown in reasons."""
        ...

    def __call__(self, facts: HealthFacts) -> HealthVerdict | None:
        """Judge one version; None means no opinion. Runs in a worker thread."""
        ...


@dataclass(frozen=True)
class HealthReport:
    """A version's health, with the numbers and reasons behind its status.

    ``error_rate`` is recent (the last 100 batches); the lifetime rate is in
    the version's metrics.
    """

    model_id: str
    version: str
    status: HealthStatus
    circuit_breaker_open: bool
    last_request_time: datetime | None
    request_count: int
    error_rate: float
    reasons: tuple[str, ...] = ()


# A batch in the runtime for longer than this is reported as stuck.
STUCK_BATCH_SECONDS = 10.0


def assess(facts: HealthFacts) -> list[HealthVerdict]:
    """Return the built-in verdicts: breaker, error rate, stuck batches, no traffic."""
    verdicts: list[HealthVerdict] = []
    if facts.breaker_state == "open":
        verdicts.append(
            HealthVerdict(HealthStatus.UNHEALTHY, f"circuit breaker open: {facts.breaker_reason}")
        )
    elif facts.breaker_state == "half_open":
        verdicts.append(HealthVerdict(HealthStatus.DEGRADED, "circuit breaker probing recovery"))
    if facts.request_count and facts.error_rate > facts.error_threshold:
        verdicts.append(
            HealthVerdict(
                HealthStatus.UNHEALTHY,
                f"error rate {facts.error_rate:.1%} is above {facts.error_threshold:.1%}",
            )
        )
    elif facts.request_count and facts.error_rate > facts.error_threshold / 2:
        verdicts.append(
            HealthVerdict(
                HealthStatus.DEGRADED,
                f"error rate {facts.error_rate:.1%} is above half of {facts.error_threshold:.1%}",
            )
        )
    if facts.oldest_batch_seconds > STUCK_BATCH_SECONDS:
        verdicts.append(
            HealthVerdict(
                HealthStatus.UNHEALTHY,
                f"a batch has been running for {facts.oldest_batch_seconds:.0f} s",
            )
        )
    if facts.request_count == 0:
        verdicts.append(HealthVerdict(HealthStatus.UNKNOWN, "no requests served yet"))
    return verdicts


def worst(verdicts: Iterable[HealthVerdict]) -> HealthStatus:
    """Return the most severe status among ``verdicts`` (HEALTHY when there are none)."""
    status = HealthStatus.HEALTHY
    for verdict in verdicts:
        if _SEVERITY[verdict.status] > _SEVERITY[status]:
            status = verdict.status
    return status
