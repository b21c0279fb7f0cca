"""Measurement windows and how they add up: requests, errors, latency distribution, CPU, batches.

A cell is measured in several slices (round-robin across servers, so slow
drifts of a shared machine hit every server alike). Each slice yields a
:class:`Window`; windows add, and percentiles come from the merged latency
distribution. A distribution is weighted points: raw latencies (weight 1)
from the built-in generator, or wrk's quantiles, each weighted by the share
of requests it stands for.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["QUANTILE_GRID", "Window", "merge"]


def _grid() -> list[tuple[float, float]]:
    """Return (percentile, mass) points: 1% steps to 98, 0.1% to 99.9, 0.01% to 100."""
    coarse = [(p + 0.5, 0.01) for p in range(98)]
    fine = [(98.0 + 0.1 * i + 0.05, 0.001) for i in range(19)]
    finest = [(99.9 + 0.01 * i + 0.005, 0.0001) for i in range(10)]
    return coarse + fine + finest


# The quantiles wrk reports per slice; their masses add up to 1.
QUANTILE_GRID: list[tuple[float, float]] = _grid()


@dataclass
class Window:
    """What one or more measured slices saw."""

    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: np.ndarray[Any, Any] = field(default_factory=lambda: np.empty(0))
    weights: np.ndarray[Any, Any] = field(default_factory=lambda: np.empty(0))
    cpu_seconds: float | None = None
    generator_cpu_seconds: float | None = None  # the load generator's own, over the window
    machine_cpu_seconds: float | None = None  # every core's busy time, whoever used it
    batch_rows: int | None = None
    batches: int | None = None
    sent_late: int = 0  # open loop: requests the generator itself sent late (> 1 ms)
    tail_seconds: float = 0.0  # open loop: last due time to last reply (max over slices)

    @property
    def throughput(self) -> float:
        """Answered requests per second (errors included, as wrk counts them)."""
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_percent(self) -> float | None:
        """The server's CPU time over the window, as % of one core."""
        return None if self.cpu_seconds is None else 100.0 * self.cpu_seconds / self.seconds

    @property
    def generator_cpu_percent(self) -> float | None:
        """The load generator's CPU time over the window, as % of one core."""
        if self.generator_cpu_seconds is None or not self.seconds:
            return None
        return 100.0 * self.generator_cpu_seconds / self.seconds

    @property
    def other_cpu_percent(self) -> float | None:
        """CPU time of everything but the server and the generator (% of one core)."""
        used = (self.machine_cpu_seconds, self.cpu_seconds, self.generator_cpu_seconds)
        machine, server, generator = used
        if machine is None or server is None or generator is None or not self.seconds:
            return None
        return 100.0 * max(0.0, machine - server - generator) / self.seconds

    @property
    def cpu_per_request(self) -> float | None:
        """Server CPU seconds per answered request: steadier than req/s on a shared core."""
        if self.cpu_seconds is None or not self.requests:
            return None
        return self.cpu_seconds / self.requests

    @property
    def mean_batch(self) -> float | None:
        """Rows per executed batch, if the server reports batches."""
        if not self.batches or self.batch_rows is None:
            return None
        return self.batch_rows / self.batches

    def percentile(self, p: float) -> float:
        """Return the ``p``-th latency percentile in seconds (nan without samples)."""
        if not len(self.latencies):
            return float("nan")
        order = np.argsort(self.latencies, kind="stable")
        values, weights = self.latencies[order], self.weights[order]
        cumulative = np.cumsum(weights)
        index = int(np.searchsorted(cumulative, p / 100.0 * cumulative[-1], side="left"))
        return float(values[min(index, len(values) - 1)])


def _add_opt(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return a if b is None else b
    return a + b


def merge(windows: Iterable[Window]) -> Window:
    """Add windows measured on the same server and load."""
    total = Window()
    latencies, weights = [], []
    for w in windows:
        total.requests += w.requests
        total.errors += w.errors
        total.seconds += w.seconds
        total.sent_late += w.sent_late
        total.tail_seconds = max(total.tail_seconds, w.tail_seconds)
        latencies.append(w.latencies)
        weights.append(w.weights)
        total.cpu_seconds = _add_opt(total.cpu_seconds, w.cpu_seconds)
        total.generator_cpu_seconds = _add_opt(total.generator_cpu_seconds, w.generator_cpu_seconds)
        total.machine_cpu_seconds = _add_opt(total.machine_cpu_seconds, w.machine_cpu_seconds)
        rows = _add_opt(total.batch_rows, w.batch_rows)
        batches = _add_opt(total.batches, w.batches)
        total.batch_rows = None if rows is None else int(rows)
        total.batches = None if batches is None else int(batches)
    if latencies:
        total.latencies = np.concatenate(latencies)
        total.weights = np.concatenate(weights)
    return total
