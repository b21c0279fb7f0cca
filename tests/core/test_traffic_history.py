"""TrafficHistory: what each version served per interval, in rings bounded by their span."""

from __future__ import annotations

import pytest

from turnout.core.errors import InvalidConfigError
from turnout.core.execution.metrics import MetricsTotals, VersionMetrics
from turnout.core.service.traffic_history import TrafficHistory


class Readings:
    """Counters a test moves by hand, read as a server's fleet-wide totals."""

    def __init__(self) -> None:
        self.metrics = {("m", "v1"): VersionMetrics(), ("m", "v2"): VersionMetrics()}
        self.now = 1000.0

    def read(self) -> dict[tuple[str, str], MetricsTotals]:
        return {key: MetricsTotals.of(metrics) for key, metrics in self.metrics.items()}

    def serve(self, version: str, requests: int, latency: float, errors: int = 0) -> None:
        self.metrics[("m", version)].record_batch(
            rows=requests, latencies=[latency] * requests, requests=requests, errors=errors
        )


@pytest.fixture
def readings() -> Readings:
    return Readings()


def history_of(readings: Readings, **options: float) -> TrafficHistory:
    return TrafficHistory(readings.read, clock=lambda: readings.now, **options)


def test_each_sample_is_what_the_version_served_since_the_last(readings: Readings) -> None:
    history = history_of(readings, interval=5.0)
    history.sample()
    readings.serve("v1", 50, 0.002, errors=5)
    readings.now += 5.0
    history.sample()
    readings.serve("v1", 10, 0.010)
    readings.now += 5.0
    history.sample()

    first, second = history.samples("m", "v1")
    assert first.requests_per_second == pytest.approx(10.0)
    assert first.error_rate == pytest.approx(0.1)
    assert first.p50_ms == pytest.approx(2.0, rel=0.07)  # buckets are 6% wide
    assert second.requests_per_second == pytest.approx(2.0)
    assert second.error_rate == 0.0
    assert second.p99_ms == pytest.approx(10.0, rel=0.07)
    assert second.at == readings.now
    idle = history.samples("m", "v2")
    assert [s.requests_per_second for s in idle] == [0.0, 0.0]
    assert [s.p50_ms for s in idle] == [None, None], "an idle interval has no latency"


def test_no_sample_before_two_readings_and_none_for_an_unknown_version(
    readings: Readings,
) -> None:
    history = history_of(readings)
    history.sample()
    assert history.samples("m", "v1") == ()
    assert history.samples("m", "nope") == ()


def test_the_ring_keeps_only_the_span(readings: Readings) -> None:
    history = history_of(readings, interval=1.0, span=10.0)
    for _ in range(25):
        readings.serve("v1", 1, 0.001)
        history.sample()
        readings.now += 1.0
    samples = history.samples("m", "v1")
    assert len(samples) == 10, f"{len(samples)} samples kept for a 10 s span at 1 s"
    assert samples[-1].at - samples[0].at == 9.0


def test_a_redeployed_version_counts_from_zero_again_and_a_retired_one_is_forgotten(
    readings: Readings,
) -> None:
    history = history_of(readings)
    readings.serve("v1", 40, 0.001)
    history.sample()
    readings.metrics[("m", "v1")] = VersionMetrics()  # redeployed: counters restart
    readings.serve("v1", 5, 0.001)
    readings.now += 5.0
    history.sample()
    assert history.samples("m", "v1")[-1].requests_per_second == pytest.approx(1.0)

    del readings.metrics[("m", "v2")]
    readings.now += 5.0
    history.sample()
    assert history.samples("m", "v2") == ()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"interval": 0.0}, "interval"),
        ({"interval": float("nan")}, "interval"),
        ({"interval": 10.0, "span": 5.0}, "span"),
    ],
)
def test_a_bad_interval_or_span_is_refused(
    readings: Readings, options: dict[str, float], message: str
) -> None:
    with pytest.raises(InvalidConfigError, match=message):
        history_of(readings, **options)
