"""ModelServer end to end: real scikit-learn models, converted by skl2onnx, run on ONNX Runtime.

Faults (a hung, slow or failing runtime) are injected by wrapping a deployed
version's runtime in a FaultInjectingRuntime: ``Deployment.execute`` reads
``deployment.runtime`` on every batch.
"""

from __future__ import annotations

import asyncio
import math
from datetime import UTC
from typing import Any

import numpy as np
import pytest

from turnout import (
    BatchingConfig,
    DeadlineExceededError,
    HealthStatus,
    InferenceError,
    InvalidInputError,
    InvalidNameError,
    ModelNotFoundError,
    ModelServer,
    OverloadedError,
    ServerClosedError,
    VersionExistsError,
    VersionNotFoundError,
)
from turnout.core.deployments.faults import inject_faults
from turnout.core.deployments.registry import Deployment


def positive(model: Any, frame: Any) -> np.ndarray[Any, Any]:
    """What ``predict`` should return for a binary classifier: P(class 1) per row."""
    return model.predict_proba(frame)[:, 1]


def assert_close(actual: np.ndarray[Any, Any], expected: np.ndarray[Any, Any]) -> None:
    # ONNX Runtime computes in float32; scikit-learn in float64.
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)


async def until(condition: Any, turns: int = 200) -> None:
    """Let other tasks run until ``condition()`` holds (event-loop turns, not sleeps)."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


@pytest.fixture
async def bc(server: ModelServer, binary_model: Any) -> Deployment:
    """The breast-cancer pipeline deployed as bc:v1, active."""
    return await server.deploy_model("bc", "v1", binary_model)


# -- versions ----------------------------------------------------------------------------


async def test_the_first_version_becomes_active_and_later_ones_wait(
    server, binary_model, binary_model_v2, binary_data
):
    X = binary_data.X_test.iloc[:5]
    await server.deploy_model("bc", "v1", binary_model)
    await server.deploy_model("bc", "v2", binary_model_v2)

    assert dict(server.active_models) == {"bc": "v1"}
    assert_close(await server.predict("bc", X), positive(binary_model, X))
    assert_close(await server.predict("bc", X, version="v2"), positive(binary_model_v2, X))
    assert not np.allclose(positive(binary_model, X), positive(binary_model_v2, X), atol=1e-3)

    await server.set_active_version("bc", "v2")
    assert server.active_models["bc"] == "v2"
    assert_close(await server.predict("bc", X), positive(binary_model_v2, X))
    result = await server.infer("bc", X)
    assert result.version == "v2"
    assert list(result.labels) == list(binary_model_v2.predict(X))


async def test_active_models_is_a_read_only_live_mapping(server, binary_model, binary_model_v2):
    await server.deploy_model("bc", "v1", binary_model)
    await server.deploy_model("bc", "v2", binary_model_v2, set_active=True)
    active = server.active_models
    assert active == {"bc": "v2"}

    with pytest.raises(TypeError):
        active["bc"] = "v1"  # type: ignore[index]
    await server.set_active_version("bc", "v1")
    assert active["bc"] == "v1"


async def test_set_active_false_deploys_without_activating(server, binary_model, binary_data):
    X = binary_data.X_test.iloc[:3]
    await server.deploy_model("bc", "v1", binary_model, set_active=False)

    assert "bc" not in server.active_models
    with pytest.raises(ModelNotFoundError):
        await server.predict("bc", X)
    assert_close(await server.predict("bc", X, version="v1"), positive(binary_model, X))


async def test_redeploying_a_version_needs_replace(
    server, binary_model, binary_model_v2, binary_data
):
    X = binary_data.X_test.iloc[:4]
    old = await server.deploy_model("bc", "v1", binary_model)

    with pytest.raises(VersionExistsError, match="replace=True"):
        await server.deploy_model("bc", "v1", binary_model_v2)
    assert_close(await server.predict("bc", X), positive(binary_model, X))

    new = await server.deploy_model("bc", "v1", binary_model_v2, replace=True)
    assert server.get_deployment("bc") is new
    assert old.batcher.closing
    assert server.active_models["bc"] == "v1"
    assert_close(await server.predict("bc", X), positive(binary_model_v2, X))


async def test_retiring_the_active_version_leaves_no_active_version(
    server, binary_model, binary_model_v2, binary_data
):
    X = binary_data.X_test.iloc[:2]
    await server.deploy_model("bc", "v1", binary_model)
    await server.deploy_model("bc", "v2", binary_model_v2)

    await server.retire_model("bc", "v1")

    assert "bc" not in server.active_models
    with pytest.raises(ModelNotFoundError) as caught:
        await server.predict("bc", X)
    assert str(caught.value) == "Model 'bc' not found or no active version set"
    assert caught.value.model_id == "bc"
    assert list(server.get_all_models_status()["bc"]) == ["v2"]
    assert_close(await server.predict("bc", X, version="v2"), positive(binary_model_v2, X))


async def test_retiring_a_busy_version_answers_what_it_admitted(
    server, binary_model, binary_model_v2, binary_data
):
    X = binary_data.X_test
    v1 = await server.deploy_model("bc", "v1", binary_model)
    await server.deploy_model("bc", "v2", binary_model_v2)

    with inject_faults(v1) as fault:
        fault.hang()
        tasks = [asyncio.create_task(server.predict("bc", X.iloc[i : i + 3])) for i in range(3)]
        await until(lambda: v1.batcher.statistics().queued_requests == 2)
        retiring = asyncio.create_task(server.retire_model("bc", "v1"))
        await until(lambda: v1.batcher.closing)
        assert "bc" not in server.active_models
        fault.release()
        await retiring

    for i, task in enumerate(tasks):
        assert_close(task.result(), positive(binary_model, X.iloc[i : i + 3]))
    assert fault.closed


async def test_unknown_models_and_versions(server, bc, binary_data):
    X = binary_data.X_test.iloc[:1]
    with pytest.raises(ModelNotFoundError, match="'nope' not found"):
        await server.predict("nope", X)
    with pytest.raises(VersionNotFoundError, match="deployed versions: v1") as caught:
        await server.predict("bc", X, version="v9")
    assert (caught.value.model_id, caught.value.version) == ("bc", "v9")
    with pytest.raises(VersionNotFoundError):
        await server.set_active_version("bc", "v9")
    with pytest.raises(VersionNotFoundError):
        await server.retire_model("bc", "v9")
    with pytest.raises(ModelNotFoundError):
        await server.retire_model("nope", "v1")


# -- status and metrics ------------------------------------------------------------------


async def test_status_of_every_version(server, binary_model, binary_model_v2, binary_data):
    meta = {"trained_by": "data_scientist_1", "date": "2025-10-25"}
    await server.deploy_model("bc", "v1", binary_model, metadata=meta)
    await server.deploy_model("bc", "v2", binary_model_v2)
    for n in (3, 1):
        await server.predict("bc", binary_data.records(n))

    status = server.get_all_models_status()

    assert set(status) == {"bc"}
    assert set(status["bc"]) == {"v1", "v2"}
    v1, v2 = status["bc"]["v1"], status["bc"]["v2"]
    assert (v1["status"], v2["status"]) == ("active", "inactive")
    assert v1["metadata"] == meta
    assert v2["metadata"] == {}
    assert v1["metrics"].request_count == 2
    assert v1["metrics"].avg_latency_ms > 0
    assert v1["metrics"].error_rate == 0.0
    assert v2["metrics"].request_count == 0
    assert v1["features"] == binary_data.features
    assert v1["source"].startswith("sklearn:Pipeline")


async def test_metrics_count_requests_rows_batches_and_latency(server, bc, binary_data):
    for n in (1, 4, 10):
        await server.predict("bc", binary_data.X_test.iloc[:n])

    m = server.get_all_models_status()["bc"]["v1"]["metrics"]

    assert (m.request_count, m.rows, m.batches) == (3, 15, 3)
    assert m.mean_batch_size == 5.0
    assert (m.error_count, m.error_rate, m.timeout_count, m.shed_count) == (0, 0.0, 0, 0)
    assert 0 < m.p50_latency_ms <= m.p95_latency_ms <= m.p99_latency_ms
    assert m.p99_latency_ms < 10_000
    assert m.last_request_time is not None
    assert m.last_request_time.tzinfo is UTC
    assert m.queue_depth == 0


@pytest.mark.parametrize(
    "bad_input",
    [
        [],
        [{"mean radius": 1.0}],
        [[1.0, 2.0]],
        np.full((2, 30), np.nan),
        [{"not a feature": 1.0}],
        "rows",
    ],
    ids=["empty", "missing-features", "short-row", "nan", "unknown-feature", "string"],
)
async def test_invalid_input_is_refused_and_not_counted_as_an_error(
    server, bc, binary_data, bad_input
):
    with pytest.raises(InvalidInputError):
        await server.predict("bc", bad_input)
    await server.predict("bc", binary_data.X_test.iloc[:1])

    m = server.get_all_models_status()["bc"]["v1"]["metrics"]
    assert (m.request_count, m.error_count, m.error_rate) == (1, 0, 0.0)
    assert (await server.health_check("bc")).status is HealthStatus.HEALTHY


# -- concurrency, overload, deadlines, close -------------------------------------------------


async def test_a_thousand_concurrent_requests_are_each_answered_once_and_correctly(
    server, binary_model, binary_data
):
    # Room in the queue for the whole burst: this test is about batching, not shedding.
    await server.deploy_model(
        "bc", "v1", binary_model, batching=BatchingConfig(max_queue_rows=32_768)
    )
    X = binary_data.X_test
    expected = positive(binary_model, X)
    rng = np.random.default_rng(42)
    sizes = rng.integers(1, 21, size=1000)
    starts = rng.integers(0, len(X) - 20, size=1000)
    forms = [
        lambda frame: frame.to_numpy(),
        lambda frame: frame.to_dict("records"),
        lambda frame: frame,
    ]
    requests = [
        forms[i % 3](X.iloc[start : start + size])
        for i, (start, size) in enumerate(zip(starts, sizes, strict=True))
    ]

    results = await asyncio.gather(*(server.predict("bc", r) for r in requests))

    for result, start, size in zip(results, starts, sizes, strict=True):
        assert result.shape == (size,)
        assert_close(result, expected[start : start + size])
    m = server.get_all_models_status()["bc"]["v1"]["metrics"]
    assert (m.request_count, m.rows, m.error_count) == (1000, int(sizes.sum()), 0)
    assert m.batches < m.request_count  # requests were merged into batches
    assert m.mean_batch_size > 1


async def test_an_overload_burst_is_refused_fast_and_admitted_requests_are_answered(
    server, binary_model, binary_data
):
    config = BatchingConfig(max_batch_rows=8, max_queue_rows=40, max_request_rows=10)
    deployment = await server.deploy_model("bc", "v1", binary_model, batching=config)
    X = binary_data.X_test
    expected = positive(binary_model, X)

    with inject_faults(deployment) as fault:
        fault.hang()
        first = asyncio.create_task(server.predict("bc", X.iloc[:1]))
        await until(lambda: deployment.batcher.statistics().batches_in_flight == 1)
        burst = [
            asyncio.create_task(server.predict("bc", X.iloc[3 * i : 3 * i + 3])) for i in range(30)
        ]
        # Refusals come while the runtime is still hung: nobody waits for it.
        await until(lambda: sum(task.done() for task in burst) == 30 - 13)
        refused = [i for i, task in enumerate(burst) if task.done()]
        for i in refused:
            with pytest.raises(OverloadedError):
                burst[i].result()
        assert refused == list(range(13, 30))  # 13 requests of 3 rows fill 40
        fault.release()

        assert_close(await first, expected[:1])
        for i, task in enumerate(burst[:13]):
            assert_close(await task, expected[3 * i : 3 * i + 3])

    m = server.get_all_models_status()["bc"]["v1"]["metrics"]
    assert (m.request_count, m.shed_count, m.error_count) == (14, 17, 0)
    assert sum(fault.batches) == 1 + 13 * 3


async def test_a_request_past_its_timeout_gets_deadline_exceeded(server, bc, binary_data):
    X = binary_data.X_test.iloc[:2]
    with inject_faults(bc) as fault:
        fault.slow_down(0.3)
        started = asyncio.get_running_loop().time()
        with pytest.raises(DeadlineExceededError):
            await server.predict("bc", X, timeout=0.02)
        # Answered when the deadline passed, not when the slow batch ended.
        assert asyncio.get_running_loop().time() - started < 0.25

    m = server.get_all_models_status()["bc"]["v1"]["metrics"]
    assert (m.request_count, m.timeout_count, m.error_rate) == (1, 1, 1.0)


@pytest.mark.parametrize("bad_timeout", [0, -1, math.nan, math.inf, "1", True])
async def test_bad_timeouts_are_invalid_input(server, bc, binary_data, bad_timeout):
    with pytest.raises(InvalidInputError, match="timeout"):
        await server.predict("bc", binary_data.X_test.iloc[:1], timeout=bad_timeout)


async def test_close_while_busy_answers_every_admitted_request(server, binary_model, binary_data):
    deployment = await server.deploy_model(
        "bc", "v1", binary_model, batching=BatchingConfig(max_batch_rows=4)
    )
    X = binary_data.X_test
    expected = positive(binary_model, X)

    with inject_faults(deployment) as fault:
        fault.hang()
        tasks = [asyncio.create_task(server.predict("bc", X.iloc[i : i + 2])) for i in range(6)]
        await until(lambda: deployment.batcher.statistics().queued_requests == 5)
        closing = asyncio.create_task(server.close())
        await until(lambda: deployment.batcher.closing)

        with pytest.raises(ServerClosedError):
            await server.predict("bc", X.iloc[:1])
        assert not closing.done()
        fault.release()
        await closing

    for i, task in enumerate(tasks):
        assert_close(task.result(), expected[i : i + 2])
    assert fault.closed


async def test_a_closed_server_refuses_everything(binary_model, binary_data):
    async with ModelServer() as server:
        await server.deploy_model("bc", "v1", binary_model)
    assert server.closed

    with pytest.raises(ServerClosedError):
        await server.predict("bc", binary_data.X_test.iloc[:1])
    with pytest.raises(ServerClosedError):
        await server.deploy_model("bc", "v2", binary_model)
    await server.close()  # a second close is harmless


async def test_a_failing_runtime_raises_inference_error_and_counts_it(
    server, binary_model, binary_data
):
    X = binary_data.X_test.iloc[:3]
    deployment = await server.deploy_model("bc", "v1", binary_model, error_threshold=0.1)

    with inject_faults(deployment) as fault:
        fault.fail_next()
        with pytest.raises(InferenceError, match="injected failure"):
            await server.predict("bc", X)
        assert_close(await server.predict("bc", X), positive(binary_model, X))

    m = server.get_all_models_status()["bc"]["v1"]["metrics"]
    assert (m.request_count, m.error_count, m.error_rate) == (2, 1, 0.5)
    report = await server.health_check("bc")
    assert report.status is HealthStatus.UNHEALTHY
    assert report.error_rate == 0.5
    assert "error rate 50.0% is above 10.0%" in report.reasons


# -- health checks ---------------------------------------------------------------------


async def test_health_check_fn_receives_the_original_estimator(server, binary_model, binary_data):
    seen: list[tuple[Any, str]] = []

    def check(model: Any, version: str) -> bool:
        seen.append((model, version))
        return bool(model.predict(binary_data.X_test.iloc[:1]).shape == (1,))

    await server.deploy_model("bc", "v1", binary_model, health_check_fn=check)

    assert (await server.health_check("bc")).status is HealthStatus.UNKNOWN  # nothing served yet
    await server.predict("bc", binary_data.X_test.iloc[:1])
    report = await server.health_check("bc", "v1")

    assert report.status is HealthStatus.HEALTHY
    assert (report.model_id, report.version, report.request_count) == ("bc", "v1", 1)
    assert len(seen) == 2
    assert all(model is binary_model and version == "v1" for model, version in seen)


def _raises(model: Any, version: str) -> bool:
    raise RuntimeError("the check itself broke")


def _fails(model: Any, version: str) -> bool:
    return False


@pytest.mark.parametrize("check", [_raises, _fails], ids=["raises", "returns-false"])
async def test_a_failing_health_check_fn_makes_the_version_unhealthy(
    server, binary_model, binary_data, check, caplog
):
    await server.deploy_model("bc", "v1", binary_model, health_check_fn=check)
    await server.predict("bc", binary_data.X_test.iloc[:1])

    report = await server.health_check("bc")

    assert report.status is HealthStatus.UNHEALTHY
    assert report.reasons == ("the deployment's health_check_fn reported failure",)
    if check is _raises:
        assert "health check of bc:v1 raised" in caplog.text


@pytest.mark.parametrize(
    ("call", "error"),
    [
        ({"model_id": ["bc"]}, InvalidNameError),
        ({"version": ["v1"]}, InvalidNameError),
        ({"timeout": 10**400}, InvalidInputError),
    ],
)
async def test_wrongly_typed_arguments_are_client_errors(
    server, binary_model, binary_data, call, error
):
    await server.deploy_model("bc", "v1", binary_model)
    arguments = {"model_id": "bc", "inputs": binary_data.records(1), **call}
    with pytest.raises(error):
        await server.predict(**arguments)
