"""Per-version serving metrics: counters and a fixed-bucket latency histogram.

Everything is updated once per batch (the batcher reports a whole batch at
a time), so the request path pays nothing for metrics. Latency percentiles
come from log-spaced buckets (about 6% wide): memory stays fixed however
many requests are served.
"""

from __future__ import annotations

import bisect
import math
import operator
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "BATCH_SIZE_BOUNDS",
    "LatencyHistogram",
    "MetricsSnapshot",
    "MetricsTotals",
    "VersionMetrics",
]

# Batch sizes are counted in powers of two: 1, 2, 4, ... 4096 rows and more.
BATCH_SIZE_BOUNDS: tuple[int, ...] = tuple(2**i for i in range(13))

# 1 microsecond to ~10 minutes in steps of 6%: 350 buckets, bounded relative error.
_GROWTH = 1.06
_BOUNDS_S: tuple[float, ...] = tuple(1e-6 * _GROWTH**i for i in range(351))


class LatencyHistogram:
    """Counts latencies into log-spaced buckets and answers percentiles."""

    bounds: tuple[float, ...] = _BOUNDS_S

    def __init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)
        self.count = 0
        self.total = 0.0

    def record(self, seconds: Iterable[float]) -> None:
        """Add latencies, in seconds."""
        counts, bounds = self.counts, self.bounds
        n = 0
        total = 0.0
        for value in seconds:
            counts[bisect.bisect_left(bounds, value)] += 1
            total += value
            n += 1
        self.count += n
        self.total += total

    def quantile(self, q: float) -> float:
        """Return the ``q`` quantile (0..1) in seconds, interpolated in its bucket; 0 if empty."""
        if self.count == 0:
            return 0.0
        rank = q * self.count
        seen = 0
        for i, c in enumerate(self.counts):
            if c and seen + c >= rank:
                low = self.bounds[i - 1] if i > 0 else 0.0
                high = self.bounds[i] if i < len(self.bounds) else self.bounds[-1]
                # Geometric interpolation: buckets are log-spaced.
                fraction = (rank - seen) / c
                if low <= 0.0:
                    return high * fraction
                return low * math.exp(fraction * math.log(high / low))
            seen += c
        return self.bounds[-1]

    def mean(self) -> float:
        """Return the mean latency in seconds; 0 if empty."""
        return self.total / self.count if self.count else 0.0

    @classmethod
    def of_counts(cls, counts: tuple[int, ...], total: float = 0.0) -> LatencyHistogram:
        """Return a histogram holding ``counts`` (one per bucket; missing ones are 0)."""
        histogram = cls()
        histogram.counts[: len(counts)] = counts
        histogram.count = sum(counts)
        histogram.total = total
        return histogram


@dataclass(frozen=True)
class MetricsSnapshot:
    """A version's metrics at one moment; latencies in milliseconds."""

    request_count: int = 0
    error_count: int = 0
    error_rate: float = 0.0
    timeout_count: int = 0
    shed_count: int = 0
    avg_latency_ms: float = 0.0
    p50_latency_ms: float = 0.0
    p95_latency_ms: float = 0.0
    p99_latency_ms: float = 0.0
    rows: int = 0
    batches: int = 0
    mean_batch_size: float = 0.0
    queue_depth: int = 0
    last_request_time: datetime | None = None


class VersionMetrics:
    """Accumulates one version's counters; read through :meth:`snapshot`."""

    # Health judges the recent error rate: a version that recovered must not
    # stay unhealthy for its whole life because of an old burst.
    RECENT_BATCHES = 100

    def __init__(self) -> None:
        self.latency = LatencyHistogram()
        self.batch_sizes = [0] * (len(BATCH_SIZE_BOUNDS) + 1)
        self._recent: deque[tuple[int, int]] = deque()
        self._recent_requests = 0
        self._recent_failures = 0
        self.requests = 0
        self.errors = 0
        self.timeouts = 0
        self.shed = 0
        self.rows = 0
        self.batches = 0
        # Seconds: of batches executing, and of the requests answered with an error.
        self.compute_seconds = 0.0
        self.failed_latency_seconds = 0.0
        self.last_request_time: datetime | None = None

    def record_batch(
        self,
        *,
        rows: int,
        latencies: Iterable[float],
        requests: int,
        errors: int = 0,
        duration: float = 0.0,
        failed_latency: float = 0.0,
    ) -> None:
        """Count one executed batch: its rows, duration, requests' latencies, how many failed."""
        self.batches += 1
        self.rows += rows
        self.compute_seconds += duration
        self.failed_latency_seconds += failed_latency
        self.batch_sizes[bisect.bisect_left(BATCH_SIZE_BOUNDS, rows)] += 1
        self.requests += requests
        self.errors += errors
        self._remember(requests, errors)
        self.latency.record(latencies)
        self.last_request_time = datetime.now(UTC)

    def record_timeout(self) -> None:
        """Count a request whose deadline passed before its result was ready."""
        self.requests += 1
        self.timeouts += 1
        self._remember(1, 1)
        self.last_request_time = datetime.now(UTC)

    def _remember(self, requests: int, failures: int) -> None:
        self._recent.append((requests, failures))
        self._recent_requests += requests
        self._recent_failures += failures
        if len(self._recent) > self.RECENT_BATCHES:
            old_requests, old_failures = self._recent.popleft()
            self._recent_requests -= old_requests
            self._recent_failures -= old_failures

    @property
    def recent_error_rate(self) -> float:
        """Failed share of the requests in the last 100 batches (timeouts count as failed)."""
        if not self._recent_requests:
            return 0.0
        return self._recent_failures / self._recent_requests

    def record_shed(self) -> None:
        """Count a request refused for overload before it was admitted."""
        self.shed += 1

    def snapshot(self, *, queue_depth: int = 0) -> MetricsSnapshot:
        """Return the current values as a frozen MetricsSnapshot."""
        latency = self.latency
        failures = self.errors + self.timeouts
        return MetricsSnapshot(
            request_count=self.requests,
            error_count=self.errors,
            error_rate=failures / self.requests if self.requests else 0.0,
            timeout_count=self.timeouts,
            shed_count=self.shed,
            avg_latency_ms=latency.mean() * 1e3,
            p50_latency_ms=latency.quantile(0.50) * 1e3,
            p95_latency_ms=latency.quantile(0.95) * 1e3,
            p99_latency_ms=latency.quantile(0.99) * 1e3,
            rows=self.rows,
            batches=self.batches,
            mean_batch_size=self.rows / self.batches if self.batches else 0.0,
            queue_depth=queue_depth,
            last_request_time=self.last_request_time,
        )


_BUCKETS = len(_BOUNDS_S) + 1


@dataclass(frozen=True)
class MetricsTotals:
    """A version's counters at one moment, as plain numbers that add up across processes.

    What each server of a fleet publishes in its heartbeat: the controller
    judges canaries on their sum, ``/metrics`` shows them per worker.
    """

    requests: int = 0
    errors: int = 0
    timeouts: int = 0
    shed: int = 0
    rows: int = 0
    batches: int = 0
    # LatencyHistogram counts, bucket by bucket; 352 numbers no repr should print.
    latency: tuple[int, ...] = field(default=(0,) * _BUCKETS, repr=False)
    latency_seconds: float = 0.0
    batch_sizes: tuple[int, ...] = (0,) * (len(BATCH_SIZE_BOUNDS) + 1)

    @classmethod
    def of(cls, metrics: VersionMetrics) -> MetricsTotals:
        """Return the totals ``metrics`` holds now."""
        return cls(
            metrics.requests,
            metrics.errors,
            metrics.timeouts,
            metrics.shed,
            metrics.rows,
            metrics.batches,
            tuple(metrics.latency.counts),
            metrics.latency.total,
            tuple(metrics.batch_sizes),
        )

    @property
    def failures(self) -> int:
        """Requests that failed: model errors and timeouts."""
        return self.errors + self.timeouts

    def histogram(self) -> LatencyHistogram:
        """Return the latency histogram these totals hold."""
        return LatencyHistogram.of_counts(self.latency, self.latency_seconds)

    def __add__(self, other: MetricsTotals) -> MetricsTotals:
        return self._combine(other, operator.add)

    def __sub__(self, other: MetricsTotals) -> MetricsTotals:
        return self._combine(other, operator.sub)

    def _combine(self, other: MetricsTotals, op: Callable[[Any, Any], Any]) -> MetricsTotals:
        # map over the operator: the leader adds these after every batch of a canary.
        values: list[Any] = []
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            values.append(
                tuple(map(op, mine, theirs)) if isinstance(mine, tuple) else op(mine, theirs)
            )
        return MetricsTotals(*values)

    def to_data(self) -> dict[str, Any]:
        """Return the totals as JSON-able data; the latency buckets sparse, as most are 0."""
        data: dict[str, Any] = {
            f.name: getattr(self, f.name) for f in fields(self) if f.name != "latency"
        }
        data["batch_sizes"] = list(self.batch_sizes)
        data["latency"] = {str(i): c for i, c in enumerate(self.latency) if c}
        return data

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> MetricsTotals:
        """Return the totals :meth:`to_data` gave; raise ValueError if ``data`` is not that."""
        try:
            latency = [0] * _BUCKETS
            for index, count in data["latency"].items():
                if not 0 <= int(index) < _BUCKETS:
                    raise ValueError(f"no latency bucket {index}")
                latency[int(index)] = int(count)
            sizes = tuple(int(c) for c in data["batch_sizes"])
            if len(sizes) != len(BATCH_SIZE_BOUNDS) + 1:
                raise ValueError(f"{len(sizes)} batch-size buckets")
            return cls(
                int(data["requests"]),
                int(data["errors"]),
                int(data["timeouts"]),
                int(data["shed"]),
                int(data["rows"]),
                int(data["batches"]),
                tuple(latency),
                float(data["latency_seconds"]),
                sizes,
            )
        except (KeyError, TypeError, AttributeError, IndexError) as exc:
            raise ValueError(f"not metrics totals: {exc}") from exc
