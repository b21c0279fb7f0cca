"""Each version's recent traffic, sampled at an interval into bounded rings.

The status page draws its sparklines from these: requests per second, the
failed share, and the p50 and p99 latency of each interval. A sample is the
difference between two readings of a version's fleet-wide
:class:`~turnout.core.execution.metrics.MetricsTotals`, so the request path
pays nothing, and memory is fixed: ``span / interval`` samples per version.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from turnout.core.errors import InvalidConfigError
from turnout.core.execution.metrics import MetricsTotals

__all__ = ["TrafficHistory", "TrafficSample"]

# (model id, version)
_Key = tuple[str, str]


@dataclass(frozen=True)
class TrafficSample:
    """One interval of a version's traffic; latencies in milliseconds, None with no request."""

    at: float  # Unix time at the interval's end
    requests_per_second: float
    error_rate: float  # failed share of the interval's requests (timeouts count as failed)
    p50_ms: float | None
    p99_ms: float | None


class TrafficHistory:
    """The last ``span`` seconds of every version's traffic, one sample per ``interval``.

    ``read`` returns every deployed version's totals now; a version it no
    longer names (retired) is forgotten.
    """

    def __init__(
        self,
        read: Callable[[], Mapping[_Key, MetricsTotals]],
        *,
        interval: float = 5.0,
        span: float = 900.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not (isinstance(interval, int | float) and math.isfinite(interval) and interval > 0):
            raise InvalidConfigError(f"interval must be a positive number, got {interval!r}")
        if not (isinstance(span, int | float) and math.isfinite(span) and span >= interval):
            raise InvalidConfigError(f"span must be at least the interval, got {span!r}")
        self.interval = float(interval)
        self._read = read
        self._clock = clock
        self._size = math.ceil(span / interval)
        self._last: dict[_Key, tuple[float, MetricsTotals]] = {}
        self._rings: dict[_Key, deque[TrafficSample]] = {}

    def sample(self) -> None:
        """Take one reading, and add to each version's ring what it served since the last."""
        now = self._clock()
        totals = self._read()
        for gone in set(self._last) - set(totals):
            del self._last[gone]
            self._rings.pop(gone, None)
        for key, current in totals.items():
            previous = self._last.get(key)
            self._last[key] = (now, current)
            if previous is None or now <= previous[0]:
                continue
            at, before = previous
            if current.requests < before.requests:
                before = MetricsTotals()  # redeployed: its counters started again from zero
            ring = self._rings.get(key)
            if ring is None:
                ring = self._rings[key] = deque(maxlen=self._size)
            ring.append(_sample(current - before, at, now))

    def samples(self, model_id: str, version: str) -> tuple[TrafficSample, ...]:
        """Return the version's samples, oldest first (none before two readings)."""
        return tuple(self._rings.get((model_id, version), ()))


def _sample(served: MetricsTotals, start: float, end: float) -> TrafficSample:
    histogram = served.histogram()
    # An idle interval has no latency; 0 ms would draw as the best one yet.
    timed = histogram.count > 0
    return TrafficSample(
        at=end,
        requests_per_second=served.requests / (end - start),
        error_rate=served.failures / served.requests if served.requests else 0.0,
        p50_ms=histogram.quantile(0.50) * 1e3 if timed else None,
        p99_ms=histogram.quantile(0.99) * 1e3 if timed else None,
    )
