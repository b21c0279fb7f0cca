"""``runtime="python"``: a model no converter handles, run through its own methods.

Such a version is served by the same parts as an ONNX one (a real
ModelServer, its AdaptiveBatcher and worker thread): its requests are
validated, batched and answered under the same breaker, deadline and
overload rules; it never runs on the event loop's thread; and it stays in
its process: a server that stores or shares its versions refuses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from turnout import (
    BatchingConfig,
    BreakerConfig,
    BreakerState,
    CircuitOpenError,
    ConversionError,
    DeadlineExceededError,
    InferenceError,
    InvalidConfigError,
    InvalidInputError,
    MemoryState,
    ModelServer,
    ModelServingManager,
    OverloadedError,
    Runtime,
)
from turnout.core.deployments.faults import inject_faults

if TYPE_CHECKING:
    from conftest import Dataset

# A breaker that trips on the third failed execution in a row.
TRIP_AT_3 = BreakerConfig(policy="consecutive_failures", params={"failures": 3})
# Enough batches for a version's first decision to run inline (see batching._RUN_TIMES).
INLINE_WARM_UP = 112


class Centroids(ClassifierMixin, BaseEstimator):
    """A nearest-centroid classifier in scikit-learn's mould, which skl2onnx cannot convert."""

    def fit(self, X: Any, y: Any) -> Centroids:
        X, y = np.asarray(X, dtype=float), np.asarray(y)
        self.classes_ = np.unique(y)
        self.centroids_ = np.stack([X[y == c].mean(axis=0) for c in self.classes_])
        self.n_features_in_ = X.shape[1]
        return self

    def predict_proba(self, X: Any) -> np.ndarray[Any, Any]:
        distances = np.linalg.norm(np.asarray(X)[:, None, :] - self.centroids_, axis=2)
        closeness = np.exp(-(distances - distances.min(axis=1, keepdims=True)))
        return closeness / closeness.sum(axis=1, keepdims=True)

    def predict(self, X: Any) -> np.ndarray[Any, Any]:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


class Doubler:
    """A hand-written regressor of two features that records each batch it runs, and where.

    ``gate`` holds every batch until it is set; ``entered`` says a batch
    is waiting at it; ``broken`` makes every batch raise.
    """

    n_features_in_ = 2

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.threads: set[int] = set()
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.broken = False

    def predict(self, X: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        self.threads.add(threading.get_ident())
        self.entered.set()
        self.gate.wait(10)
        if self.broken:
            raise ValueError("the model broke")
        self.batches.append(len(X))
        return np.asarray(X).sum(axis=1) * 2


class ShortAnswer:
    """A hand-written regressor that answers one row fewer than it was given."""

    n_features_in_ = 1

    def predict(self, X: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        return np.zeros(max(len(X) - 1, 0)) if len(X) > 1 else np.zeros(len(X))


@pytest.fixture(scope="module")
def centroids(binary_data: Dataset) -> Centroids:
    """Centroids fitted on the breast cancer data, as an ndarray."""
    return Centroids().fit(binary_data.X_train.to_numpy(), binary_data.y_train)


async def hold(server: ModelServer, model: Doubler, model_id: str) -> asyncio.Future[Any]:
    """Send one request and return it once its batch is running, held at the model's gate."""
    model.gate.clear()
    model.entered.clear()
    first = asyncio.ensure_future(server.predict(model_id, [[0.0, 0.0]]))
    assert await asyncio.to_thread(model.entered.wait, 10)
    return first


async def test_an_estimator_skl2onnx_cannot_convert_serves_its_own_predictions(
    server: ModelServer, centroids: Centroids, binary_data: Dataset
) -> None:
    # Row-major, as the batch the model gets: a column-major frame's values
    # would be summed in another order, and differ in the last bits.
    X = np.ascontiguousarray(binary_data.X_test.to_numpy())
    deployment = await server.deploy_model("cancer", "v1", centroids, runtime="python")

    result = await server.infer("cancer", X)

    assert deployment.loaded.runtime is Runtime.PYTHON
    # The estimator's own float64 arithmetic on the same rows: equal to the last bit.
    np.testing.assert_array_equal(result.labels, centroids.predict(X))
    np.testing.assert_array_equal(result.probabilities, centroids.predict_proba(X))
    np.testing.assert_array_equal(result.outputs, centroids.predict_proba(X)[:, 1])
    status = server.get_all_models_status()["cancer"]["v1"]
    assert (status["source"], status["runtime"]) == ("python:Centroids", "python")


async def test_without_runtime_python_it_is_still_a_conversion_error(
    server: ModelServer, centroids: Centroids
) -> None:
    with pytest.raises(ConversionError, match="skl2onnx cannot convert Centroids"):
        await server.deploy_model("cancer", "v1", centroids)
    with pytest.raises(ConversionError, match="skl2onnx cannot convert Centroids"):
        await server.deploy_model("cancer", "v1", centroids, runtime=Runtime.ONNX)
    with pytest.raises(ConversionError, match="runtime='python' serves any object"):
        await server.deploy_model("double", "v1", Doubler(), runtime="onnx")
    assert server.get_all_models_status() == {}


@pytest.mark.parametrize("runtime", ["pytorch", "Python", "", 1])
async def test_an_unknown_runtime_is_refused_before_anything_runs(
    server: ModelServer, runtime: Any
) -> None:
    model = Doubler()
    with pytest.raises(InvalidConfigError, match="runtime must be one of 'onnx', 'python'"):
        await server.deploy_model("double", "v1", model, runtime=runtime)
    assert model.threads == set()  # not even tried on a row of zeros
    assert server.get_all_models_status() == {}


async def test_concurrent_requests_share_batches(server: ModelServer) -> None:
    model = Doubler()
    await server.deploy_model("double", "v1", model, runtime="python")
    model.batches.clear()  # deploying tried the model on one row

    first = await hold(server, model, "double")
    rows = [[float(i), 1.0] for i in range(9)]
    queued = [asyncio.ensure_future(server.predict("double", [row])) for row in rows]
    await asyncio.sleep(0.05)  # every request joins the queue behind the running batch
    model.gate.set()
    answers = await asyncio.gather(first, *queued)

    assert model.batches == [1, 9]
    assert [answer.tolist() for answer in answers[1:]] == [[2 * (i + 1.0)] for i in range(9)]
    metrics = server.get_all_models_status()["double"]["v1"]["metrics"]
    assert (metrics.request_count, metrics.batches) == (10, 2)


@pytest.mark.parametrize("runtime", ["python", "onnx"])
async def test_a_failing_model_trips_its_breaker_whichever_the_runtime(
    runtime: str, logistic_model: Any, binary_data: Dataset
) -> None:
    X = binary_data.X_test.to_numpy()[:1]
    async with ModelServer(breaker=TRIP_AT_3) as server, contextlib.AsyncExitStack() as stack:
        if runtime == "python":
            model = Doubler()
            await server.deploy_model("m", "v1", model, runtime="python")
            model.broken = True
            rows: Any = [[1.0, 2.0]]
            failure = "Doubler failed: the model broke"
        else:
            deployment = await server.deploy_model("m", "v1", logistic_model)
            stack.enter_context(inject_faults(deployment)).fail_next(1000)
            rows = X
            failure = "injected failure"
        for _ in range(3):
            assert server.circuit_breaker("m").state is BreakerState.CLOSED
            with pytest.raises(InferenceError, match=failure):
                await server.predict("m", rows)
        assert server.circuit_breaker("m").state is BreakerState.OPEN
        with pytest.raises(CircuitOpenError):
            await server.predict("m", rows)
        metrics = server.get_all_models_status()["m"]["v1"]["metrics"]
        assert (metrics.request_count, metrics.error_count) == (3, 3)


async def test_the_models_own_exception_is_the_cause_of_the_inference_error(
    server: ModelServer,
) -> None:
    model = Doubler()
    await server.deploy_model("double", "v1", model, runtime="python")
    model.broken = True

    with pytest.raises(InferenceError) as info:
        await server.predict("double", [[1.0, 2.0]])

    assert isinstance(info.value.__cause__, ValueError)


async def test_bad_input_is_refused_before_the_model_runs_and_never_counts(
    server: ModelServer,
) -> None:
    model = Doubler()
    await server.deploy_model("double", "v1", model, runtime="python", breaker=TRIP_AT_3)
    model.batches.clear()

    for bad in ([[1.0, 2.0, 3.0]], [[1.0, float("nan")]], [["a", "b"]]):
        with pytest.raises(InvalidInputError):
            await server.predict("double", bad)

    assert model.batches == []
    assert server.circuit_breaker("double").state is BreakerState.CLOSED
    assert server.get_all_models_status()["double"]["v1"]["metrics"].error_count == 0


async def test_a_python_model_that_answers_too_few_rows_fails_its_batch(
    server: ModelServer,
) -> None:
    await server.deploy_model("short", "v1", ShortAnswer(), runtime="python")

    with pytest.raises(InferenceError, match="ShortAnswer returned 1 rows for a batch of 2"):
        await server.predict("short", [[1.0], [2.0]])


async def test_a_deadline_applies_to_a_python_version(server: ModelServer) -> None:
    model = Doubler()
    await server.deploy_model("double", "v1", model, runtime="python")
    model.gate.clear()
    try:
        with pytest.raises(DeadlineExceededError):
            await server.predict("double", [[1.0, 2.0]], timeout=0.05)
    finally:
        model.gate.set()
    metrics = server.get_all_models_status()["double"]["v1"]["metrics"]
    assert metrics.timeout_count == 1


async def test_a_full_queue_refuses_a_python_version_at_once(server: ModelServer) -> None:
    model = Doubler()
    batching = BatchingConfig(max_queue_rows=4, max_request_rows=4)
    await server.deploy_model("double", "v1", model, runtime="python", batching=batching)
    first = await hold(server, model, "double")
    queued = asyncio.ensure_future(server.predict("double", [[1.0, 1.0]] * 4))
    await asyncio.sleep(0.01)

    with pytest.raises(OverloadedError):
        await server.predict("double", [[1.0, 1.0]])
    model.gate.set()
    await asyncio.gather(first, queued)


async def test_a_python_version_never_runs_on_the_event_loops_thread(
    server: ModelServer,
) -> None:
    model = Doubler()
    # inline_batch_ms is far above what this model takes: an ONNX version would go inline.
    batching = BatchingConfig(inline_batch_ms=50.0, inline_watchdog_ms=100.0)
    deployment = await server.deploy_model(
        "double", "v1", model, runtime="python", batching=batching
    )
    assert deployment.inline_execution() is None

    for _ in range(INLINE_WARM_UP + 16):
        await server.predict("double", [[1.0, 2.0]])

    assert not deployment.batcher.statistics().inline
    assert threading.get_ident() not in model.threads


async def test_mock_mode_is_the_python_runtime_by_default(
    logistic_model: Any, binary_data: Dataset
) -> None:
    X = np.ascontiguousarray(binary_data.X_test.to_numpy())
    async with ModelServer(mock_mode=True) as server:
        own = await server.deploy_model("cancer", "own", logistic_model)
        converted = await server.deploy_model("cancer", "onnx", logistic_model, runtime="onnx")
        onnx = await server.deploy_model("cancer", "file", converted.loaded.onnx_bytes)

        assert own.loaded.runtime is Runtime.PYTHON
        assert converted.loaded.runtime is Runtime.ONNX
        assert onnx.loaded.runtime is Runtime.ONNX  # ONNX runs on ONNX Runtime, as ever
        np.testing.assert_array_equal(
            await server.predict("cancer", X, version="own"), logistic_model.predict_proba(X)[:, 1]
        )
        runtimes = {v: s["runtime"] for v, s in server.get_all_models_status()["cancer"].items()}
        assert runtimes == {"own": "python", "onnx": "onnx", "file": "onnx"}


async def test_a_server_with_a_repository_refuses_a_python_version(
    tmp_path: Path, centroids: Centroids
) -> None:
    async with ModelServer(repository=tmp_path) as server:
        with pytest.raises(InvalidConfigError, match="refused on a server with repository="):
            await server.deploy_model("cancer", "v1", centroids, runtime="python")
        assert server.get_all_models_status() == {}
    assert not (tmp_path / "cancer").exists()


async def test_servers_sharing_control_state_refuse_python_versions(
    tmp_path: Path, centroids: Centroids
) -> None:
    for shared in ({"state": MemoryState()}, {"artifacts": tmp_path}):
        async with ModelServer(**shared) as server:
            keyword = next(iter(shared))
            with pytest.raises(InvalidConfigError, match=f"server with {keyword}="):
                await server.deploy_model("cancer", "v1", centroids, runtime="python")
            assert server.get_all_models_status() == {}
        with pytest.raises(InvalidConfigError, match="mock_mode"):
            ModelServer(mock_mode=True, **shared)


def test_the_manager_takes_the_runtime_too(centroids: Centroids, binary_data: Dataset) -> None:
    X = np.ascontiguousarray(binary_data.X_test.to_numpy()[:5])
    with ModelServingManager() as manager:
        assert manager.deploy_model("cancer", "v1", centroids, runtime="python")
        assert not manager.deploy_model("cancer", "v2", centroids, runtime="jvm")
        assert not manager.deploy_model("cancer", "v3", centroids)
        np.testing.assert_array_equal(
            manager.predict("cancer", X), centroids.predict_proba(X)[:, 1]
        )
        assert sorted(manager.get_all_models_status()["cancer"]) == ["v1"]
