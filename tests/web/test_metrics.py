"""GET /metrics: the Prometheus text format, read back with prometheus-client's own parser."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from turnout import BatchingConfig, ModelServer, OverloadedError, RoutingConfig
from turnout.core.deployments.faults import FaultInjectingRuntime
from turnout.web.metrics import routing_weights


async def scrape(http: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Return every sample of /metrics as {(name, sorted labels): value}."""
    response = await http.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def labels(version: str, **extra: str) -> tuple[tuple[str, str], ...]:
    """The labels of a series of this worker's (a test server is one process)."""
    return fleet_labels(version, worker=str(os.getpid()), **extra)


def fleet_labels(version: str, **extra: str) -> tuple[tuple[str, str], ...]:
    """The labels of a series the fleet shares (routing weights)."""
    return tuple(sorted({"model": "cancer", "version": version, **extra}.items()))


async def test_counters_latency_batches_breaker_and_weights_per_version(
    cancer: ModelServer, http: Any, binary_data: Any
) -> None:
    rows = binary_data.records(20)
    await asyncio.gather(*(cancer.predict("cancer", [row]) for row in rows))
    await cancer.setup_ab_test("cancer", ["v1", "v2"], [0.75, 0.25])

    samples = await scrape(http)

    assert samples[("turnout_requests_total", labels("v1"))] == 20
    assert samples[("turnout_errors_total", labels("v1"))] == 0
    assert samples[("turnout_requests_total", labels("v2"))] == 0
    assert samples[("turnout_request_latency_seconds_count", labels("v1"))] == 20
    assert samples[("turnout_request_latency_seconds_bucket", labels("v1", le="+Inf"))] == 20
    batches = samples[("turnout_batch_rows_count", labels("v1"))]
    assert 1 <= batches < 20  # concurrent single-row requests were batched
    assert samples[("turnout_batch_rows_sum", labels("v1"))] == 20
    assert samples[("turnout_circuit_breaker_state", labels("v1", state="closed"))] == 1
    assert samples[("turnout_circuit_breaker_state", labels("v1", state="open"))] == 0
    assert samples[("turnout_routing_weight", fleet_labels("v1"))] == 0.75
    assert samples[("turnout_routing_weight", fleet_labels("v2"))] == 0.25
    assert samples[("turnout_queue_rows", labels("v1"))] == 0


async def test_shed_and_errors_are_counted(
    server: ModelServer, make_client: Any, binary_model: Any, binary_data: Any
) -> None:
    deployment = await server.deploy_model(
        "cancer",
        "v1",
        binary_model,
        batching=BatchingConfig(max_queue_rows=1, max_request_rows=1),
    )
    faults = FaultInjectingRuntime(deployment.runtime)
    deployment.runtime = faults
    faults.hang()
    row = binary_data.records(1)
    # Each task runs up to its first await in one loop turn: by then it is admitted.
    running = asyncio.create_task(server.predict("cancer", row))
    await asyncio.sleep(0)
    assert deployment.batcher.statistics().batches_in_flight == 1
    queued = asyncio.create_task(server.predict("cancer", row))
    await asyncio.sleep(0)
    assert deployment.batcher.statistics().queued_requests == 1
    with pytest.raises(OverloadedError):
        await server.predict("cancer", row)
    faults.fail_next(1)
    faults.release()
    await asyncio.gather(running, queued, return_exceptions=True)

    samples = await scrape(await make_client())
    assert samples[("turnout_shed_total", labels("v1"))] == 1
    assert samples[("turnout_errors_total", labels("v1"))] == 1


@pytest.mark.parametrize(
    ("routing", "expected"),
    [
        ({"strategy": "active", "params": {}}, {"v1": 1.0, "v2": 0.0}),
        (
            {"strategy": "sticky", "params": {"versions": ["v1", "v2"], "weights": [1, 3]}},
            {"v1": 0.25, "v2": 0.75},
        ),
        (
            RoutingConfig(
                "canary", {"baseline": "v1", "candidate": "v2", "steps": [0.1, 1.0], "step": 0}
            ).to_dict(),
            {"v1": 0.9, "v2": 0.1},
        ),
        (
            {"strategy": "blue_green", "params": {"blue": "v1", "green": "v2", "live": "green"}},
            {"v1": 0.0, "v2": 1.0},
        ),
        ({"strategy": "shadow", "params": {"mirrors": {"v2": 1.0}}}, {"v1": 1.0, "v2": 0.0}),
        ({"strategy": "bandit", "params": {"versions": ["v1", "v2"]}}, {}),
    ],
)
def test_routing_weights_follow_each_strategy(
    routing: dict[str, Any], expected: dict[str, float]
) -> None:
    assert routing_weights(routing, ["v1", "v2"], "v1") == pytest.approx(expected)
