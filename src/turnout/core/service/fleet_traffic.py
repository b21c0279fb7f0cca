"""What the other servers of a fleet served: their heartbeats' metrics, added up per version.

Each server publishes its versions' :class:`MetricsTotals` in its heartbeat
(once a second). Every server reads the heartbeats as often and keeps, per
process, the last totals it saw, so the controller can judge a canary on
the whole fleet's traffic and take over a judgement with the numbers in
hand. A process's counters start again from zero when it redeploys a
version; a drop is taken as that, and the totals before it are kept, so the
sum never goes back. A process that stopped beating keeps counting what it
served: a step window must not shrink because a worker died.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from turnout.core.execution.metrics import MetricsTotals

__all__ = [
    "RECENT_SECONDS",
    "FleetTraffic",
    "RecentFailures",
    "Traffic",
    "traffic_facts",
    "traffic_of",
]

logger = logging.getLogger("turnout")

# How far back the fleet's recent error rate looks (a server's own looks 100 batches back).
RECENT_SECONDS = 60.0

# (process, model id, version)
_Key = tuple[str, str, str]
# {model id: {version: totals}}
Traffic = dict[str, dict[str, MetricsTotals]]


def traffic_facts(totals: Mapping[str, Mapping[str, MetricsTotals]]) -> dict[str, Any]:
    """Return ``{model: {version: totals}}`` as the plain data a heartbeat carries."""
    return {
        model_id: {version: t.to_data() for version, t in versions.items()}
        for model_id, versions in totals.items()
    }


def traffic_of(facts: Mapping[str, Any]) -> Traffic:
    """Return the traffic a heartbeat's facts carry; ValueError if they carry none we read."""
    try:
        return {
            model_id: {v: MetricsTotals.from_data(data) for v, data in versions.items()}
            for model_id, versions in facts["traffic"].items()
        }
    except (KeyError, AttributeError, TypeError) as exc:
        raise ValueError(f"no traffic in the facts: {exc!r}") from exc


class FleetTraffic:
    """The metrics the other servers sharing a control state last published, per version."""

    def __init__(self, process: str) -> None:
        self._process = process  # this server's name: its own traffic it counts live
        self._last: dict[_Key, MetricsTotals] = {}
        self._before: dict[_Key, MetricsTotals] = {}  # totals before each counter reset
        self._undecodable: set[str] = set()
        self._sums: dict[tuple[str, str], MetricsTotals] = {}  # asked after every batch

    def observe(self, beats: Mapping[str, Mapping[str, Any]]) -> None:
        """Take the traffic each live process's heartbeat (``ControlState.heartbeats``) names."""
        self._sums.clear()
        for process, facts in beats.items():
            if process == self._process:
                continue
            try:
                traffic = traffic_of(facts)
            except ValueError as exc:
                if process not in self._undecodable:  # a server of another release, maybe
                    self._undecodable.add(process)
                    logger.warning("the traffic %s published is not understood: %s", process, exc)
                continue
            for model_id, versions in traffic.items():
                for version, totals in versions.items():
                    self._take((process, model_id, version), totals)

    def _take(self, key: _Key, totals: MetricsTotals) -> None:
        last = self._last.get(key)
        if last is not None and totals.requests < last.requests:
            self._before[key] = self._before.get(key, MetricsTotals()) + last
        self._last[key] = totals

    def totals(self, model_id: str, version: str) -> MetricsTotals:
        """Return what every other process served of the version, as far as heard."""
        total = self._sums.get((model_id, version))
        if total is None:
            total = MetricsTotals()
            for key, last in self._last.items():
                if key[1] == model_id and key[2] == version:
                    total = total + last + self._before.get(key, MetricsTotals())
            self._sums[model_id, version] = total
        return total

    def forget(self, model_id: str, version: str) -> None:
        """Drop what was heard of a version (it was retired)."""
        self._sums.pop((model_id, version), None)
        for table in (self._last, self._before):
            for key in [k for k in table if k[1:] == (model_id, version)]:
                del table[key]


class RecentFailures:
    """The failed share of each version's fleet-wide requests over the last ``seconds``.

    Fleet totals only grow, and arrive a heartbeat at a time: the rate is
    taken between the oldest reading in the window and the newest. With no
    request in the window it stays what it last was, as a server's own
    recent rate does while it is idle.
    """

    def __init__(
        self, seconds: float = RECENT_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._seconds = seconds
        self._clock = clock
        self._readings: dict[tuple[str, str], deque[tuple[float, int, int]]] = {}
        self._rates: dict[tuple[str, str], float] = {}

    def rate(self, model_id: str, version: str, totals: MetricsTotals) -> float:
        """Take the version's fleet ``totals`` now; return its recent failed share."""
        key, now = (model_id, version), self._clock()
        readings = self._readings.setdefault(key, deque())
        readings.append((now, totals.requests, totals.failures))
        # The oldest reading kept is the last one older than the window: it starts it.
        while len(readings) > 1 and readings[1][0] <= now - self._seconds:
            readings.popleft()
        _, first_requests, first_failures = readings[0]
        served = totals.requests - first_requests
        if served > 0:
            self._rates[key] = (totals.failures - first_failures) / served
        elif key not in self._rates:
            self._rates[key] = totals.failures / totals.requests if totals.requests else 0.0
        return self._rates[key]

    def forget(self, model_id: str, version: str) -> None:
        """Drop the readings of a retired version."""
        self._readings.pop((model_id, version), None)
        self._rates.pop((model_id, version), None)
