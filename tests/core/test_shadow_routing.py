"""Shadow routing through a real ModelServer: callers get the primary, mirrors are compared.

bc:v1 is the primary, bc:v2 the shadow. Mirror copies run in background
tasks after the primary is queued, so the tests poll the shadow statistics
(every millisecond, with a generous timeout) instead of sleeping.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from support import eventually
from turnout import (
    BatchingConfig,
    InferenceError,
    InferenceResult,
    InvalidRoutingError,
    ModelServer,
    OverloadedError,
    RoutingConfig,
    ShadowStatistics,
    hookimpl,
)
from turnout.core.deployments.faults import inject_faults
from turnout.core.deployments.registry import Deployment

SHADOW = RoutingConfig("shadow", {"mirrors": {"v2": 1.0}})


class ShadowEvents:
    """A plugin that records every shadow_compared event."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, float, bool | None]] = []

    @hookimpl
    def shadow_compared(
        self, model_id: str, primary: str, shadow: str, difference: float, agreed: bool | None
    ) -> None:
        self.events.append((model_id, primary, shadow, difference, agreed))


def stats(server: ModelServer) -> ShadowStatistics:
    (only,) = server.shadow_statistics("bc")
    return only


@pytest.fixture
def events() -> ShadowEvents:
    return ShadowEvents()


@pytest.fixture
async def server(events: ShadowEvents) -> Any:
    """A server with the event-recording plugin (shadows conftest's ``server``)."""
    async with ModelServer(plugins=[events], seed=5) as server:
        yield server


@pytest.fixture
async def primary(server, binary_model) -> Deployment:
    return await server.deploy_model("bc", "v1", binary_model)


@pytest.fixture
def models(binary_model, binary_model_v2) -> dict[str, Any]:
    return {"v1": binary_model, "v2": binary_model_v2}


@pytest.fixture
def expected(binary_data, models) -> dict[str, np.ndarray[Any, Any]]:
    """P(class 1) of every test row, per version."""
    return {v: m.predict_proba(binary_data.X_test)[:, 1] for v, m in models.items()}


async def deploy_shadow(server: ModelServer, model: Any, **options: Any) -> Deployment:
    shadow = await server.deploy_model("bc", "v2", model, set_active=False, **options)
    await server.set_routing("bc", SHADOW)
    return shadow


def assert_primary(result: InferenceResult, rows: slice, expected: Any) -> None:
    assert result.version == "v1"
    np.testing.assert_allclose(result.outputs, expected["v1"][rows], rtol=1e-4, atol=1e-5)


# -- what callers get, and what is compared ---------------------------------------------------


async def test_callers_get_the_primary_and_the_shadow_is_compared_with_it(
    server, primary, binary_model_v2, binary_data, models, expected, events
):
    await deploy_shadow(server, binary_model_v2)
    X = binary_data.X_test
    records = binary_data.records()

    # 40 single-row requests, then 5 of 10 rows each: rows 0..89, each once.
    for i in range(40):
        assert_primary(await server.infer("bc", [records[i]]), slice(i, i + 1), expected)
    for start in range(40, 90, 10):
        served = await server.predict("bc", X.iloc[start : start + 10])
        np.testing.assert_allclose(served, expected["v1"][start : start + 10], rtol=1e-4, atol=1e-5)

    await eventually(lambda: stats(server).compared == 90)
    record = stats(server)
    difference = np.abs(expected["v1"][:90] - expected["v2"][:90])
    labels = {v: m.predict(X.iloc[:90]) for v, m in models.items()}
    assert (record.primary, record.shadow) == ("v1", "v2")
    assert record.compared == 90
    assert record.mean_abs_difference == pytest.approx(difference.mean(), rel=1e-3)
    assert record.max_abs_difference == pytest.approx(difference.max(), rel=1e-3)
    assert difference.mean() > 0.01  # the two versions really differ
    assert record.label_agreement == pytest.approx(np.mean(labels["v1"] == labels["v2"]))
    assert (record.errors, record.dropped) == (0, 0)
    assert 0 < record.mean_latency_ms <= record.p99_latency_ms < 10_000

    # One shadow_compared event per mirrored request, with that request's numbers.
    assert len(events.events) == 45
    assert {e[:3] for e in events.events} == {("bc", "v1", "v2")}
    singles = sorted(events.events[:40], key=lambda e: e[3])
    assert [e[3] for e in singles] == pytest.approx(sorted(difference[:40]), rel=1e-3, abs=1e-6)
    agreed = [e[4] for e in events.events[:40]]
    assert sum(agreed) == int(np.sum(labels["v1"][:40] == labels["v2"][:40]))

    # The primary's own metrics count the callers' requests; the shadow's its copies.
    status = server.get_all_models_status()["bc"]
    assert status["v1"]["metrics"].request_count == 45
    assert status["v2"]["metrics"].request_count == 45
    assert status["v1"]["status"] == "active"


async def test_a_named_primary_and_a_partial_mirror(
    server, primary, binary_model_v2, binary_data, expected
):
    await server.deploy_model("bc", "v2", binary_model_v2, set_active=False)
    # v2 is the primary here, though v1 stays the active version; v1 mirrors half.
    await server.set_routing(
        "bc", RoutingConfig("shadow", {"primary": "v2", "mirrors": {"v1": 0.5}})
    )
    records = binary_data.records()
    for i in range(200):
        result = await server.infer("bc", [records[i % len(records)]])
        assert result.version == "v2"

    mirror = server.get_deployment("bc", "v1")

    def settled() -> bool:
        queue = mirror.batcher.statistics()
        done = mirror.metrics.requests == stats(server).compared
        return done and queue.queued_requests == queue.batches_in_flight == 0

    await eventually(settled)
    copies = mirror.metrics.requests
    assert 60 < copies < 140
    assert (stats(server).primary, stats(server).shadow) == ("v2", "v1")
    assert server.active_models["bc"] == "v1"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "mirrors"),
        ({"mirrors": {}}, "mirrors"),
        ({"mirrors": {"v1": 1.0}}, "cannot mirror itself"),
        ({"mirrors": {"v9": 1.0}}, "'v9' of model 'bc' is not deployed"),
        ({"mirrors": {"v2": 1.5}}, r"must be in \[0, 1\]"),
        ({"mirrors": {"v2": True}}, r"must be in \[0, 1\]"),
        ({"primary": "v9", "mirrors": {"v2": 1.0}}, "not deployed"),
        ({"mirrors": {"v2": 1.0}, "copies": 2}, "unknown params"),
    ],
)
async def test_bad_shadow_params_are_refused(
    server, primary, binary_model_v2, binary_data, params, message
):
    await server.deploy_model("bc", "v2", binary_model_v2, set_active=False)
    with pytest.raises(InvalidRoutingError, match=message):
        await server.set_routing("bc", RoutingConfig("shadow", params))
    assert server.get_routing("bc") == RoutingConfig("active")
    assert server.shadow_statistics("bc") == []


# -- a misbehaving shadow never touches the primary ----------------------------------------------


async def test_a_failing_shadow_counts_errors_and_leaves_the_primary_alone(
    server, primary, binary_model_v2, binary_data, expected, events
):
    shadow = await deploy_shadow(server, binary_model_v2)
    records = binary_data.records()
    with inject_faults(shadow) as fault:
        fault.fail_fraction(1.0)
        for i in range(30):
            assert_primary(await server.infer("bc", [records[i]]), slice(i, i + 1), expected)
        results = await asyncio.gather(*(server.infer("bc", [records[i]]) for i in range(30)))
        for i, result in enumerate(results):
            assert_primary(result, slice(i, i + 1), expected)
        await eventually(lambda: stats(server).errors + stats(server).dropped == 60)

    record = stats(server)
    # The shadow's own breaker opens after its first failures; later copies
    # are dropped at once instead of running a broken model.
    assert record.compared == 0
    assert record.errors >= 10
    assert record.dropped == 60 - record.errors
    assert server.circuit_breaker("bc", "v2").state == "open"
    assert events.events == []
    status = server.get_all_models_status()["bc"]
    assert status["v1"]["metrics"].request_count == 60
    assert status["v1"]["metrics"].error_count == 0  # changed by nothing
    assert status["v1"]["circuit_breaker"]["state"] == "closed"
    assert status["v2"]["metrics"].error_count == record.errors


async def test_a_hung_shadow_does_not_delay_the_primary(
    server, primary, binary_model_v2, binary_data, expected
):
    shadow = await deploy_shadow(server, binary_model_v2)
    records = binary_data.records()
    with inject_faults(shadow) as fault:
        fault.hang()
        # Every primary request is answered while the shadow answers nothing at all.
        async with asyncio.timeout(10):
            sequential = [await server.infer("bc", [records[i]]) for i in range(20)]
            concurrent = await asyncio.gather(
                *(server.infer("bc", [records[i]]) for i in range(20, 60))
            )
        for i, result in enumerate([*sequential, *concurrent]):
            assert_primary(result, slice(i, i + 1), expected)
        assert max(r.latency_ms for r in sequential) < 1000  # generous: not a timing test
        assert stats(server).compared == 0
        assert shadow.batcher.statistics().batches_in_flight == 1

        fault.release()
        await eventually(lambda: stats(server).compared == 60)
    assert (stats(server).errors, stats(server).dropped) == (0, 0)


async def test_a_slow_shadow_does_not_slow_the_primary(
    server, primary, binary_model_v2, binary_data, expected
):
    shadow = await deploy_shadow(server, binary_model_v2)
    records = binary_data.records()
    with inject_faults(shadow) as fault:
        fault.slow_down(0.25)
        results = [await server.infer("bc", [records[i]]) for i in range(10)]
        for i, result in enumerate(results):
            assert_primary(result, slice(i, i + 1), expected)
        # Each primary request took less than one shadow batch does (generously).
        assert max(r.latency_ms for r in results) < 250
        await eventually(lambda: stats(server).compared == 10)

    # The shadow's latency is its own, recorded apart from the primary's.
    assert stats(server).mean_latency_ms >= 250
    assert server.get_all_models_status()["bc"]["v1"]["metrics"].p99_latency_ms < 250


async def test_a_full_mirror_queue_drops_copies_and_every_primary_request_succeeds(
    server, primary, binary_model_v2, binary_data, expected
):
    # Room for one batch in flight and two queued rows: the rest of the copies are dropped.
    tiny = BatchingConfig(max_queue_rows=2, max_request_rows=2)
    shadow = await deploy_shadow(server, binary_model_v2, batching=tiny)
    records = binary_data.records()
    with inject_faults(shadow) as fault:
        fault.hang()
        results = await asyncio.gather(*(server.infer("bc", [records[i]]) for i in range(40)))
        for i, result in enumerate(results):
            assert_primary(result, slice(i, i + 1), expected)
        await eventually(lambda: stats(server).dropped > 0)
        fault.release()
        await eventually(lambda: stats(server).compared + stats(server).dropped == 40)

    record = stats(server)
    assert record.dropped > 0
    assert record.compared >= 1
    assert record.errors == 0
    metrics = server.get_all_models_status()["bc"]["v1"]["metrics"]
    assert (metrics.request_count, metrics.error_count, metrics.shed_count) == (40, 0, 0)


async def test_a_shadow_that_cannot_keep_up_sheds_copies_instead_of_queueing_seconds(
    server, primary, binary_model_v2, binary_data, expected
):
    # A large queue, but a shadow holds at most four full batches of copies.
    few = BatchingConfig(max_batch_rows=4)
    shadow = await deploy_shadow(server, binary_model_v2, batching=few)
    records = binary_data.records()
    with inject_faults(shadow) as fault:
        fault.hang()
        results = [await server.infer("bc", [records[i % len(records)]]) for i in range(60)]
        for i, result in enumerate(results):
            assert_primary(result, slice(i % len(records), i % len(records) + 1), expected)
        await eventually(lambda: stats(server).dropped > 0)
        assert shadow.batcher.queued_rows <= 4 * few.max_batch_rows
        fault.release()
        await eventually(lambda: stats(server).compared + stats(server).dropped == 60)
    assert stats(server).errors == 0


async def test_a_failing_primary_is_not_compared(
    server, primary, binary_model_v2, binary_data, events
):
    await deploy_shadow(server, binary_model_v2)
    with inject_faults(primary) as fault:
        fault.fail_next(1)
        with pytest.raises(InferenceError, match="injected failure"):
            await server.infer("bc", binary_data.records(1))
    await eventually(
        lambda: server.get_all_models_status()["bc"]["v2"]["metrics"].request_count == 1
    )
    for _ in range(20):  # let the mirror's task see the primary's failure
        await asyncio.sleep(0)
    record = stats(server)
    assert (record.compared, record.errors, record.dropped) == (0, 0, 0)
    assert events.events == []


async def test_a_caller_reusing_its_array_does_not_change_what_the_shadow_sees(
    server, primary, binary_model, binary_data
):
    shadow = await deploy_shadow(server, binary_model)  # the same model: no difference
    rows = np.array(binary_data.X_test.iloc[:4], dtype=np.float32)  # a writable buffer
    with inject_faults(shadow) as fault:
        fault.hang()
        await server.predict("bc", rows)
        rows[:] = 1e6  # the caller reuses its buffer while the copy still waits
    await eventually(lambda: stats(server).compared == 4)

    assert stats(server).max_abs_difference == 0.0


async def test_a_refused_primary_is_not_mirrored(server, binary_model, binary_data):
    primary = await server.deploy_model(
        "bc", "v1", binary_model, batching=BatchingConfig(max_queue_rows=1, max_request_rows=1)
    )
    shadow = await deploy_shadow(server, binary_model)
    row = binary_data.X_test.iloc[:1]
    with inject_faults(primary) as fault:
        fault.hang()
        running = asyncio.create_task(server.predict("bc", row))
        await asyncio.sleep(0)
        queued = asyncio.create_task(server.predict("bc", row))
        await asyncio.sleep(0)
        with pytest.raises(OverloadedError):
            await server.predict("bc", row)
    await asyncio.gather(running, queued)
    await eventually(lambda: stats(server).compared == 2)

    assert shadow.metrics.snapshot().request_count == 2  # not 3
