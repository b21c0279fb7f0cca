"""Blue-green switches through a real ModelServer: smoke tests, the switch under load, rollback.

bc:v1 is blue (active), bc:v2 green; the two pipelines give clearly different
probabilities, so every answer can be traced to the version that gave it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import numpy as np
import pytest

from support import eventually
from turnout import (
    InferenceResult,
    InvalidConfigError,
    InvalidRoutingError,
    ModelServer,
    RoutingConfig,
    SmokeTestError,
)
from turnout.core.deployments.faults import inject_faults
from turnout.core.deployments.registry import Deployment

TOLERANCE = 1e-4  # ONNX Runtime computes in float32, scikit-learn in float64
LIVE_GREEN = RoutingConfig("blue_green", {"blue": "v1", "green": "v2", "live": "green"})
LIVE_BLUE = RoutingConfig("blue_green", {"blue": "v1", "green": "v2", "live": "blue"})


def positive(model: Any, frame: Any) -> np.ndarray[Any, Any]:
    return model.predict_proba(frame)[:, 1]


def assert_close(actual: np.ndarray[Any, Any], expected: np.ndarray[Any, Any]) -> None:
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)


@pytest.fixture
async def colours(server, binary_model, binary_model_v2) -> dict[str, Deployment]:
    """bc:v1 (blue, active) and bc:v2 (green, deployed but idle)."""
    return {
        "v1": await server.deploy_model("bc", "v1", binary_model),
        "v2": await server.deploy_model("bc", "v2", binary_model_v2, set_active=False),
    }


@pytest.fixture
def expected(binary_data, binary_model, binary_model_v2) -> dict[str, np.ndarray[Any, Any]]:
    """P(class 1) of every test row, per version."""
    return {
        "v1": positive(binary_model, binary_data.X_test),
        "v2": positive(binary_model_v2, binary_data.X_test),
    }


async def assert_served_by(server: ModelServer, version: str, data: Any, expected: Any) -> None:
    result = await server.infer("bc", data.X_test.iloc[:8])
    assert result.version == version
    assert_close(result.outputs, expected[version][:8])


# -- smoke tests ---------------------------------------------------------------------------


async def test_switch_with_samples_and_expected_outputs(server, colours, binary_data, expected):
    samples = binary_data.X_test.iloc[:20]

    await server.blue_green_switch(
        "bc", "v2", samples=samples, expected=expected["v2"][:20], tolerance=TOLERANCE
    )

    assert server.active_models["bc"] == "v2"
    assert server.get_routing("bc") == LIVE_GREEN
    await assert_served_by(server, "v2", binary_data, expected)
    # The smoke test itself ran on green: one request of 20 rows.
    snapshot = server.get_all_models_status()["bc"]["v2"]["metrics"]
    assert (snapshot.request_count, snapshot.rows) == (2, 28)


def _sync_true(server: ModelServer, model_id: str, version: str) -> bool:
    return server.get_deployment(model_id, version).version == "v2"


def _sync_numpy(server: ModelServer, model_id: str, version: str) -> Any:
    # A numpy verdict, as a check written with numpy naturally returns.
    model = server.get_deployment(model_id, version).model
    return np.all(model.classes_ == np.array([0, 1]))


async def _async_predicts(server: ModelServer, model_id: str, version: str) -> bool:
    probabilities = await server.predict(model_id, [[15.0] * 30], version=version)
    return bool(np.all((probabilities >= 0) & (probabilities <= 1)))


@pytest.mark.parametrize(
    "smoke_test", [_sync_true, _sync_numpy, _async_predicts], ids=["sync", "numpy", "async"]
)
async def test_switch_with_a_smoke_test_callable(
    server, colours, binary_data, expected, smoke_test
):
    calls: list[tuple[Any, ...]] = []

    def spy(*args: Any) -> Any:
        calls.append(args)
        return smoke_test(*args)

    await server.blue_green_switch("bc", "v2", smoke_test=spy)

    assert calls == [(server, "bc", "v2")]
    assert server.active_models["bc"] == "v2"
    assert server.get_routing("bc") == LIVE_GREEN
    await assert_served_by(server, "v2", binary_data, expected)


async def test_switch_with_both_a_smoke_test_and_samples(server, colours, binary_data, expected):
    await server.blue_green_switch(
        "bc",
        "v2",
        smoke_test=_async_predicts,
        samples=binary_data.records(5),
        expected=expected["v2"][:5],
        tolerance=TOLERANCE,
    )
    assert server.get_routing("bc") == LIVE_GREEN


def _sync_false(*_: Any) -> bool:
    return False


async def _async_false(*_: Any) -> bool:
    await asyncio.sleep(0)
    return False


def _raises(*_: Any) -> bool:
    raise RuntimeError("the feature store is down")


async def _async_raises(*_: Any) -> bool:
    raise RuntimeError("the feature store is down")


def _ambiguous(*_: Any) -> Any:
    return np.array([True, False])


@pytest.mark.parametrize(
    ("smoke_test", "message"),
    [
        (_sync_false, "the smoke test of bc:v2 failed"),
        (_async_false, "the smoke test of bc:v2 failed"),
        (_raises, "the smoke test of bc:v2 raised: the feature store is down"),
        (_async_raises, "the smoke test of bc:v2 raised: the feature store is down"),
        (_ambiguous, "the smoke test of bc:v2 raised: The truth value"),
    ],
    ids=["sync-false", "async-false", "sync-raises", "async-raises", "ambiguous-array"],
)
async def test_a_failing_smoke_test_refuses_the_switch_and_blue_keeps_serving(
    server, colours, binary_data, expected, smoke_test, message
):
    with pytest.raises(SmokeTestError, match=message):
        await server.blue_green_switch("bc", "v2", smoke_test=smoke_test)

    assert server.active_models["bc"] == "v1"
    assert server.get_routing("bc") == RoutingConfig("active")
    await assert_served_by(server, "v1", binary_data, expected)


async def test_samples_that_green_answers_wrongly_refuse_the_switch(
    server, colours, binary_data, expected
):
    samples = binary_data.X_test.iloc[:10]
    # Blue's answers are not green's: the check is green against what it must give.
    with pytest.raises(SmokeTestError, match=r"differ from the expected ones by more than 0\.0001"):
        await server.blue_green_switch(
            "bc", "v2", samples=samples, expected=expected["v1"][:10], tolerance=TOLERANCE
        )
    with pytest.raises(SmokeTestError, match="differ from the expected ones"):
        await server.blue_green_switch(
            "bc", "v2", samples=samples, expected=expected["v2"][:9], tolerance=TOLERANCE
        )

    assert server.active_models["bc"] == "v1"
    assert server.get_routing("bc") == RoutingConfig("active")
    await assert_served_by(server, "v1", binary_data, expected)


async def test_a_green_that_cannot_answer_its_samples_fails_its_smoke_test(
    server, colours, binary_data, expected
):
    with inject_faults(colours["v2"]) as fault:
        fault.fail_fraction(1.0)
        with pytest.raises(SmokeTestError, match="could not answer the smoke-test samples"):
            await server.blue_green_switch(
                "bc",
                "v2",
                samples=binary_data.X_test.iloc[:5],
                expected=expected["v2"][:5],
                tolerance=TOLERANCE,
            )

    assert server.active_models["bc"] == "v1"
    assert server.get_routing("bc") == RoutingConfig("active")
    await assert_served_by(server, "v1", binary_data, expected)


async def test_switch_arguments_are_checked(server, colours, binary_data):
    with pytest.raises(InvalidConfigError, match="needs a smoke_test or samples"):
        await server.blue_green_switch("bc", "v2")
    with pytest.raises(InvalidConfigError, match="need expected outputs"):
        await server.blue_green_switch("bc", "v2", samples=binary_data.records(2))
    with pytest.raises(InvalidRoutingError, match="already the live version"):
        await server.blue_green_switch("bc", "v1", smoke_test=_sync_true)
    assert server.get_routing("bc") == RoutingConfig("active")


# -- the switch under load -------------------------------------------------------------------


async def test_switch_under_a_thousand_concurrent_requests_loses_and_fails_none(
    server, colours, binary_data, expected
):
    records = binary_data.records()
    n = len(records)

    async def request(i: int) -> InferenceResult:
        return await server.infer("bc", [records[i % n]])

    def launch(indices: range) -> list[asyncio.Task[InferenceResult]]:
        return [asyncio.create_task(request(i)) for i in indices]

    first = launch(range(500))
    await eventually(lambda: sum(task.done() for task in first) >= 50)
    switch = asyncio.create_task(
        server.blue_green_switch(
            "bc",
            "v2",
            samples=binary_data.X_test.iloc[:10],
            expected=expected["v2"][:10],
            tolerance=TOLERANCE,
        )
    )
    middle = launch(range(500, 900))  # routed while green is smoke-tested and switched to
    await switch
    in_flight = sum(not task.done() for task in first + middle)
    last = launch(range(900, 1000))  # routed after the switch: all green
    outcomes = await asyncio.gather(*first, *middle, *last, return_exceptions=True)

    failures = [o for o in outcomes if isinstance(o, BaseException)]
    assert not failures, failures[:3]
    results: list[InferenceResult] = outcomes  # type: ignore[assignment]
    assert len(results) == 1000
    for i, result in enumerate(results):
        assert result.version in ("v1", "v2")
        assert_close(result.outputs, expected[result.version][i % n : i % n + 1])
    assert len({r.request_id for r in results}) == 1000
    served = Counter(r.version for r in results)
    assert served["v1"] >= 50
    assert served["v2"] >= 100
    assert in_flight > 0  # the switch happened with requests still being answered
    # Tasks are routed in the order they were created, and the switch is atomic
    # between two of them: blue answered a prefix, green the rest.
    versions = [r.version for r in results]
    assert versions == ["v1"] * served["v1"] + ["v2"] * served["v2"]
    # The smoke test's one request is the only other one.
    status = server.get_all_models_status()["bc"]
    assert status["v1"]["metrics"].request_count == served["v1"]
    assert status["v2"]["metrics"].request_count == served["v2"] + 1
    assert status["v1"]["metrics"].error_count == status["v2"]["metrics"].error_count == 0
    assert server.get_routing("bc") == LIVE_GREEN


# -- rollback ------------------------------------------------------------------------------


async def test_rollback_is_instant_even_while_green_is_stuck(
    server, colours, binary_data, expected
):
    await server.blue_green_switch("bc", "v2", smoke_test=_sync_true)
    with inject_faults(colours["v2"]) as fault:
        fault.hang()
        stuck = asyncio.create_task(server.infer("bc", binary_data.X_test.iloc[:3]))
        await eventually(lambda: colours["v2"].batcher.statistics().batches_in_flight == 1)

        # No await on green: the rollback is a routing change between two requests.
        await asyncio.wait_for(server.blue_green_rollback("bc"), timeout=1.0)

        assert server.active_models["bc"] == "v1"
        assert server.get_routing("bc") == LIVE_BLUE
        await asyncio.wait_for(assert_served_by(server, "v1", binary_data, expected), 5.0)
        assert not stuck.done()
        fault.release()
        result = await stuck
    # The request green had admitted is still answered, by green.
    assert result.version == "v2"
    assert_close(result.outputs, expected["v2"][:3])


async def test_rollback_without_a_switch_is_refused(server, colours, binary_data, expected):
    with pytest.raises(InvalidRoutingError, match="no blue-green switch to roll back"):
        await server.blue_green_rollback("bc")

    await server.blue_green_switch("bc", "v2", smoke_test=_sync_true)
    await server.blue_green_rollback("bc")
    with pytest.raises(InvalidRoutingError, match="no blue-green switch to roll back"):
        await server.blue_green_rollback("bc")  # blue is live already
    assert server.get_routing("bc") == LIVE_BLUE

    # After a rollback, green can be switched to again.
    await server.blue_green_switch("bc", "v2", smoke_test=_sync_true)
    assert server.get_routing("bc") == LIVE_GREEN
    await assert_served_by(server, "v2", binary_data, expected)


async def test_blue_cannot_be_retired_while_blue_green_routing_keeps_it(
    server, colours, binary_data, expected
):
    await server.blue_green_switch("bc", "v2", smoke_test=_sync_true)

    with pytest.raises(InvalidRoutingError, match="under 'blue_green' routing"):
        await server.retire_model("bc", "v1")
    await server.blue_green_rollback("bc")
    with pytest.raises(InvalidRoutingError, match="under 'blue_green' routing"):
        await server.retire_model("bc", "v1")
    with pytest.raises(InvalidRoutingError, match="under 'blue_green' routing"):
        await server.retire_model("bc", "v2")
    await assert_served_by(server, "v1", binary_data, expected)

    # Once the routing lets go of blue, it can be retired.
    await server.set_active_version("bc", "v2")
    await server.retire_model("bc", "v1")
    assert list(server.get_all_models_status()["bc"]) == ["v2"]
    await assert_served_by(server, "v2", binary_data, expected)
