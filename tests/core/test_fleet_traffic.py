"""The fleet's traffic: metrics totals published in heartbeats, added up per version."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from turnout.core.execution.metrics import MetricsTotals, VersionMetrics
from turnout.core.service.fleet_traffic import FleetTraffic, RecentFailures, traffic_facts


def served(requests: int, *, errors: int = 0, seconds: float = 0.002) -> MetricsTotals:
    metrics = VersionMetrics()
    metrics.record_batch(
        rows=requests, latencies=[seconds] * requests, requests=requests, errors=errors
    )
    return MetricsTotals.of(metrics)


def beat(**versions: MetricsTotals) -> dict[str, object]:
    return {"pid": 1, "traffic": traffic_facts({"m": versions})}


@given(
    st.lists(st.floats(1e-6, 100.0), max_size=50),
    st.integers(0, 1000),
    st.integers(0, 1000),
)
def test_totals_survive_the_heartbeat_encoding(
    latencies: list[float], errors: int, shed: int
) -> None:
    metrics = VersionMetrics()
    metrics.record_batch(rows=len(latencies), latencies=latencies, requests=len(latencies))
    metrics.errors = errors
    metrics.shed = shed
    totals = MetricsTotals.of(metrics)
    assert MetricsTotals.from_data(totals.to_data()) == totals
    assert (totals + totals - totals) == totals


@pytest.mark.parametrize(
    "data",
    [{}, {"requests": 1}, {**served(1).to_data(), "latency": {"9999": 1}}, "totals"],
)
def test_what_is_not_totals_is_refused(data: object) -> None:
    with pytest.raises(ValueError, match=r"not metrics totals|no latency bucket"):
        MetricsTotals.from_data(data)  # type: ignore[arg-type]


def test_the_fleet_adds_every_other_process_and_not_its_own() -> None:
    fleet = FleetTraffic("me")
    fleet.observe({"me": beat(v1=served(100)), "a": beat(v1=served(3)), "b": beat(v1=served(4))})
    totals = fleet.totals("m", "v1")
    assert totals.requests == 7
    assert totals.histogram().count == 7
    assert fleet.totals("m", "v2") == MetricsTotals()


def test_a_process_whose_counters_restart_never_takes_the_sum_back() -> None:
    fleet = FleetTraffic("me")
    fleet.observe({"a": beat(v1=served(50, errors=5))})
    fleet.observe({"a": beat(v1=served(2))})  # it redeployed v1: its counters began again
    totals = fleet.totals("m", "v1")
    assert (totals.requests, totals.failures) == (52, 5)


def test_a_process_that_stopped_beating_still_counts_what_it_served() -> None:
    fleet = FleetTraffic("me")
    fleet.observe({"a": beat(v1=served(10)), "b": beat(v1=served(5))})
    fleet.observe({"b": beat(v1=served(6))})
    assert fleet.totals("m", "v1").requests == 16
    fleet.forget("m", "v1")
    assert fleet.totals("m", "v1").requests == 0


def test_traffic_a_newer_release_publishes_differently_is_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fleet = FleetTraffic("me")
    odd = {"pid": 2, "traffic": {"m": {"v1": {"requests": "many"}}}}
    fleet.observe({"a": odd})
    fleet.observe({"a": odd})
    assert fleet.totals("m", "v1").requests == 0
    assert len([r for r in caplog.records if "not understood" in r.message]) == 1


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_fleets_recent_error_rate_is_taken_over_the_last_minute() -> None:
    clock = Clock()
    recent = RecentFailures(seconds=60.0, clock=clock)

    # A burst of failures, then a minute and more of clean traffic: the burst leaves the window.
    assert recent.rate("m", "v1", served(100, errors=50)) == 0.5
    clock.now += 30
    assert recent.rate("m", "v1", served(200, errors=50)) == 0.0  # 100 served since, none failed
    clock.now += 40
    assert recent.rate("m", "v1", served(300, errors=80)) == pytest.approx(30 / 200)
    clock.now += 70
    assert recent.rate("m", "v1", served(400, errors=80)) == 0.0
    # Idle: the rate stays what it last was, as a server's own recent rate does.
    clock.now += 120
    assert recent.rate("m", "v1", served(400, errors=80)) == 0.0
    recent.forget("m", "v1")
    assert recent.rate("m", "v1", served(400, errors=80)) == pytest.approx(0.2)
