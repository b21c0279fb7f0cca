"""Health of a deployed version: HealthStatus and the HealthReport that explains it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

__all__ = ["HealthReport", "HealthStatus"]


class HealthStatus(StrEnum):
    """How a version is doing, from serving normally to not serving at all."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class HealthReport:
    """A version's health, with the numbers and reasons behind its status."""

    model_id: str
    version: str
    status: HealthStatus
    circuit_breaker_open: bool
    last_request_time: datetime | None
    request_count: int
    error_rate: float
    reasons: tuple[str, ...] = ()
