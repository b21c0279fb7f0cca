"""The serving guide's resilience sections, run as written through ModelServingManager.

"Health Checks", "Automated Health Monitoring", "Circuit Breaker Pattern" and
"Troubleshooting" of ``../shared/reference/model-serving-guide.md``, with
``turnout`` in place of ``mcp_server.model_serving``. The guide predicts NBA
games from four features; the models here are trained on synthetic games.
Faults are injected by wrapping a deployed version's runtime in a
FaultInjectingRuntime.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest
from skl2onnx import to_onnx
from sklearn.base import clone
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from turnout import (
    BreakerConfig,
    BreakerState,
    CircuitOpenError,
    HealthStatus,
    InferenceError,
    InvalidInputError,
    ModelNotFoundError,
    ModelServingManager,
)
from turnout.core.deployments.faults import FaultInjectingRuntime
from turnout.core.execution.onnx_model import OnnxModel

GAME = {"home_ppg": 112.5, "away_ppg": 108.3, "home_def_rating": 105.2, "away_def_rating": 110.8}
FEATURES = list(GAME)
# The default error-rate breaker, judging only once 20 executions are in its window.
PATIENT = BreakerConfig(params={"min_calls": 20})


@pytest.fixture(scope="module")
def model(games: pd.DataFrame, home_wins: np.ndarray[Any, Any]) -> RandomForestClassifier:
    """The guide's model, fitted on a DataFrame: it takes the guide's dict rows."""
    forest = RandomForestClassifier(n_estimators=31, max_depth=6, random_state=0)
    return forest.fit(games, home_wins)


@pytest.fixture(scope="module")
def previous(games: pd.DataFrame, home_wins: np.ndarray[Any, Any]) -> LogisticRegression:
    """v0.9, the previous stable version."""
    return LogisticRegression(max_iter=1000).fit(games, home_wins)


@pytest.fixture(scope="module")
def array_model(games: pd.DataFrame, home_wins: np.ndarray[Any, Any]) -> RandomForestClassifier:
    """The guide's model fitted on a plain array (no feature names)."""
    forest = RandomForestClassifier(n_estimators=31, max_depth=6, random_state=0)
    return forest.fit(games.to_numpy(), home_wins)


def positive(model: Any, inputs: Any) -> np.ndarray[Any, Any]:
    """P(home win) per game, from the estimator itself."""
    return model.predict_proba(pd.DataFrame(inputs))[:, 1]


def assert_close(actual: np.ndarray[Any, Any], expected: np.ndarray[Any, Any]) -> None:
    # ONNX Runtime computes in float32; scikit-learn in float64.
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)


def wait_for(condition: Any, timeout: float = 5.0) -> float:
    """Poll ``condition`` from this thread while the manager's loop thread works."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "condition never held"
        time.sleep(0.005)
    return time.monotonic() - started


def inject_faults(manager: ModelServingManager, version: str) -> FaultInjectingRuntime:
    deployment = manager.server.get_deployment("nba_model", version)
    fault = FaultInjectingRuntime(deployment.runtime)
    deployment.runtime = fault
    return fault


def trip_breaker(manager: ModelServingManager, version: str) -> FaultInjectingRuntime:
    """Fail the version's executions, one request at a time, until its breaker opens."""
    fault = inject_faults(manager, version)
    fault.fail_next(1000)
    for _ in range(50):
        if manager.circuit_breaker("nba_model", version).state is BreakerState.OPEN:
            break
        with pytest.raises(InferenceError):
            manager.predict("nba_model", [GAME], version=version)
    assert manager.circuit_breaker("nba_model", version).state is BreakerState.OPEN
    fault.heal()
    return fault


def fail_three_of_ten(manager: ModelServingManager) -> None:
    """Ten requests to v1.0, the first three failing."""
    fault = inject_faults(manager, "v1.0")
    fault.fail_next(3)
    for i in range(10):
        if i < 3:
            with pytest.raises(InferenceError):
                manager.predict("nba_model", [GAME])
        else:
            manager.predict("nba_model", [GAME])


@pytest.fixture
def serving(manager: ModelServingManager, model: Any, previous: Any) -> ModelServingManager:
    """nba_model v0.9 (healthy while active, seen by the monitor), then v1.0 active."""
    assert manager.deploy_model("nba_model", "v0.9", previous, set_active=True)
    manager.predict("nba_model", [GAME])
    manager.evaluate_health()
    assert manager.deploy_model("nba_model", "v1.0", model, set_active=True)
    return manager


# -- Health Checks ------------------------------------------------------------------------------


def test_guide_check_model_health(manager, model, games, capsys):
    manager.deploy_model("nba_model", "v1.0", model)
    manager.predict("nba_model", games.iloc[:5].to_dict("records"))
    manager.predict("nba_model", [GAME])

    # Get health status
    health = manager.health_check("nba_model", "v1.0")

    print(f"Status: {health.status}")  # HEALTHY, UNHEALTHY, or UNKNOWN
    print(f"Circuit Breaker: {'Open' if health.circuit_breaker_open else 'Closed'}")
    print(f"Last Request: {health.last_request_time}")
    print(f"Request Count: {health.request_count}")
    print(f"Error Rate: {health.error_rate:.2%}")

    assert health.status == HealthStatus.HEALTHY
    assert capsys.readouterr().out.splitlines() == [
        "Status: healthy",
        "Circuit Breaker: Closed",
        f"Last Request: {health.last_request_time}",
        "Request Count: 2",
        "Error Rate: 0.00%",
    ]
    assert health.last_request_time is not None
    assert abs((datetime.now(UTC) - health.last_request_time).total_seconds()) < 60


@pytest.mark.parametrize(
    ("situation", "status"),
    [
        ("operating normally", HealthStatus.HEALTHY),
        ("circuit breaker tripped", HealthStatus.UNHEALTHY),
        ("high errors", HealthStatus.UNHEALTHY),
        ("no recent requests", HealthStatus.UNKNOWN),
    ],
)
def test_guide_health_status_meanings(situation, status, model):
    # A breaker that waits for 20 executions: high errors without a trip, below.
    with ModelServingManager(error_threshold=0.2, breaker=PATIENT) as manager:
        manager.deploy_model("nba_model", "v1.0", model)
        if situation == "operating normally":
            manager.predict("nba_model", [GAME])
        elif situation == "circuit breaker tripped":
            trip_breaker(manager, "v1.0")
        elif situation == "high errors":
            fail_three_of_ten(manager)  # 30% is above 20%
        health = manager.health_check("nba_model", "v1.0")

    assert health.status == status
    assert health.circuit_breaker_open is (situation == "circuit breaker tripped")
    if situation == "high errors":
        assert health.reasons == ("error rate 30.0% is above 20.0%",)
    if situation == "no recent requests":
        assert (health.request_count, health.last_request_time) == (0, None)


def test_a_model_that_is_not_found_has_no_health_but_an_error(manager):
    # The guide's table lists "model not found" under UNKNOWN; turnout raises instead.
    with pytest.raises(ModelNotFoundError, match="Model 'nba_model' not found"):
        manager.health_check("nba_model")


def custom_health_check(model, version):
    """Custom health check function"""
    # Check model is loaded
    if model is None:
        return False

    # Check model has predict method
    if not hasattr(model, "predict"):
        return False

    # Test prediction
    try:
        test_input = [[0.0] * model.n_features_in_]
        _ = model.predict(test_input)
        return True
    except Exception:
        return False


class Seen:
    """Wraps the guide's check to record what it was given."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, str, bool]] = []

    def __call__(self, model: Any, version: str) -> bool:
        verdict = custom_health_check(model, version)
        self.calls.append((model, version, verdict))
        return verdict


def test_guide_custom_health_check_receives_the_original_estimator(manager, array_model, games):
    # Deploy with custom health check
    deployed = manager.deploy_model(
        model_id="nba_model",
        version="v1.0",
        model_instance=array_model,
        health_check_fn=custom_health_check,
    )
    manager.predict("nba_model", games.iloc[:3].to_numpy().tolist())
    assert deployed is True
    assert manager.health_check("nba_model", "v1.0").status == HealthStatus.HEALTHY

    seen = Seen()
    manager.deploy_model("nba_model", "v1.1", array_model, health_check_fn=seen)
    manager.predict("nba_model", games.iloc[:3].to_numpy().tolist(), version="v1.1")
    assert manager.health_check("nba_model", "v1.1").status == HealthStatus.HEALTHY
    assert seen.calls == [(array_model, "v1.1", True)]


# The guide's check feeds a list to an estimator fitted on a DataFrame: scikit-learn
# warns that the list has no feature names (an error under this suite's filters).
@pytest.mark.filterwarnings("ignore:X does not have valid feature names:UserWarning")
def test_guide_custom_health_check_on_an_estimator_fitted_with_feature_names(manager, model):
    seen = Seen()
    manager.deploy_model(
        model_id="nba_model", version="v1.0", model_instance=model, health_check_fn=seen
    )
    manager.predict("nba_model", [GAME])
    health = manager.health_check("nba_model", "v1.0")

    assert health.status == HealthStatus.HEALTHY
    assert seen.calls == [(model, "v1.0", True)]


def test_guide_custom_health_check_on_an_onnx_only_deployment(manager, model, games):
    seen = Seen()
    proto = to_onnx(model, np.zeros((1, 4), dtype=np.float32))
    assert manager.deploy_model("nba_model", "v1.0", proto, health_check_fn=seen, features=FEATURES)
    assert_close(manager.predict("nba_model", [GAME]), positive(model, [GAME]))
    health = manager.health_check("nba_model", "v1.0")

    assert health.status == HealthStatus.HEALTHY
    ((onnx_model, version, verdict),) = seen.calls
    assert (version, verdict) == ("v1.0", True)
    assert isinstance(onnx_model, OnnxModel)
    assert onnx_model.n_features_in_ == 4
    X = games.iloc[:20].to_numpy()
    np.testing.assert_array_equal(onnx_model.predict(X.tolist()), model.predict(games.iloc[:20]))


def test_a_failing_custom_health_check_makes_the_version_unhealthy(manager, model):
    class Broken:
        def predict(self, rows: Any) -> Any:
            raise RuntimeError("model file is corrupt")

        n_features_in_ = 4

    def check(model: Any, version: str) -> bool:
        return custom_health_check(Broken(), version)

    manager.deploy_model("nba_model", "v1.0", model, health_check_fn=check)
    manager.predict("nba_model", [GAME])
    health = manager.health_check("nba_model")

    assert health.status == HealthStatus.UNHEALTHY
    assert health.reasons == ("the deployment's health_check_fn reported failure",)


# -- Automated Health Monitoring ------------------------------------------------------------


ALERTS: list[str] = []
STABLE_VERSIONS: dict[str, str] = {}


def send_alert(message: str) -> None:
    ALERTS.append(message)


def get_previous_stable_version(model_id: str) -> str:
    return STABLE_VERSIONS[model_id]


def monitor_health(manager, model_id, interval_sec=60):
    """Continuously monitor model health"""
    while True:
        health = manager.health_check(model_id)

        if health.status == HealthStatus.UNHEALTHY:
            print(f"[{datetime.now()}] WARNING: {model_id} is unhealthy!")
            # Send alert
            send_alert(f"Model {model_id} health check failed")

            # Auto-rollback to previous version
            if health.circuit_breaker_open:
                print("Circuit breaker open, attempting rollback...")
                previous_version = get_previous_stable_version(model_id)
                manager.set_active_version(model_id, previous_version)

        time.sleep(interval_sec)


class StopMonitoring(Exception):
    """Raised by the patched time.sleep to end the guide's endless loop."""


@pytest.fixture
def one_iteration(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """Make time.sleep, in this thread only, record its argument and stop the loop."""
    main = threading.current_thread()
    real_sleep = time.sleep
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        if threading.current_thread() is not main:
            real_sleep(seconds)
            return
        slept.append(seconds)
        raise StopMonitoring

    monkeypatch.setattr(time, "sleep", sleep)
    ALERTS.clear()
    STABLE_VERSIONS.clear()
    yield slept
    ALERTS.clear()
    STABLE_VERSIONS.clear()


def test_guide_monitor_health_rolls_back_when_the_breaker_is_open(
    serving, previous, one_iteration, capsys
):
    manager = serving
    STABLE_VERSIONS["nba_model"] = "v0.9"
    trip_breaker(manager, "v1.0")

    with pytest.raises(StopMonitoring):
        monitor_health(manager, "nba_model")

    out = capsys.readouterr().out.splitlines()
    assert re.fullmatch(
        r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+\] WARNING: nba_model is unhealthy!", out[0]
    )
    assert out[1:] == ["Circuit breaker open, attempting rollback..."]
    assert ALERTS == ["Model nba_model health check failed"]
    assert one_iteration == [60]
    assert manager.active_models["nba_model"] == "v0.9"
    assert_close(manager.predict("nba_model", [GAME]), positive(previous, [GAME]))

    # The next iteration finds the model healthy: no alert, no rollback.
    with pytest.raises(StopMonitoring):
        monitor_health(manager, "nba_model", interval_sec=5)
    assert capsys.readouterr().out == ""
    assert ALERTS == ["Model nba_model health check failed"]
    assert one_iteration == [60, 5]


def test_guide_monitor_health_alerts_without_rollback_on_high_errors(model, one_iteration, capsys):
    with ModelServingManager(breaker=PATIENT) as manager:
        manager.deploy_model("nba_model", "v1.0", model, error_threshold=0.2)
        fail_three_of_ten(manager)

        with pytest.raises(StopMonitoring):
            monitor_health(manager, "nba_model")

        assert manager.active_models["nba_model"] == "v1.0"
        assert not manager.health_check("nba_model").circuit_breaker_open
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1
    assert out[0].endswith("WARNING: nba_model is unhealthy!")
    assert ALERTS == ["Model nba_model health check failed"]


def test_the_managers_own_health_monitor_rolls_back_in_the_background(serving, previous):
    manager = serving
    trip_breaker(manager, "v1.0")

    manager.start_health_monitor(interval=0.05, auto_rollback=True)
    try:
        took = wait_for(lambda: manager.active_models["nba_model"] == "v0.9")
    finally:
        manager.stop_health_monitor()

    assert took < 2.0
    assert_close(manager.predict("nba_model", [GAME]), positive(previous, [GAME]))
    assert manager.health_check("nba_model", "v1.0").status == HealthStatus.UNHEALTHY


def test_a_manager_closes_while_its_health_monitor_runs(model):
    manager = ModelServingManager()
    manager.deploy_model("nba_model", "v1.0", model)
    manager.start_health_monitor(interval=0.05, auto_rollback=True)
    closer = threading.Thread(target=manager.close)
    closer.start()
    closer.join(timeout=10)
    assert not closer.is_alive()
    assert manager.server.closed


# -- Circuit Breaker Pattern -------------------------------------------------------------------


def test_guide_circuit_breaker_configuration(model):
    # Set error threshold
    manager = ModelServingManager(
        error_threshold=0.1  # Trip at 10% error rate
    )
    with manager:
        # Deploy model
        manager.deploy_model(
            model_id="nba_model",
            version="v1.0",
            model_instance=model,
            error_threshold=0.15,  # Override per-model
        )
        deployment = manager.server.get_deployment("nba_model", "v1.0")
        fault = inject_faults(manager, "v1.0")
        for _ in range(17):
            manager.predict("nba_model", [GAME])

        states = []
        for _ in range(4):
            fault.fail_next()
            with pytest.raises(InferenceError):
                manager.predict("nba_model", [GAME])
            states.append(manager.circuit_breaker("nba_model").state)
        health = manager.health_check("nba_model")

    assert (manager.error_threshold, deployment.error_threshold) == (0.1, 0.15)
    # 2 of 19 failed (10.5%: over the manager's 10%, not the model's 15%), then
    # 3 of 20 (15%, not over it), then 4 of 21 (19%): open.
    assert states == [BreakerState.CLOSED] * 3 + [BreakerState.OPEN]
    assert health.circuit_breaker_open
    assert health.status == HealthStatus.UNHEALTHY
    assert "error rate 19.0% is above 15.0%" in health.reasons


class FallbackModel:
    """A fallback kept in process: the previous version's estimator, asked directly."""

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator
        self.calls = 0

    def predict(self, rows: list[dict[str, float]]) -> np.ndarray[Any, Any]:
        self.calls += 1
        return positive(self.estimator, rows)


CACHE: dict[tuple[tuple[str, float], ...], list[float]] = {}


def get_cached_prediction(input_data: dict[str, float]) -> list[float]:
    return CACHE[tuple(sorted(input_data.items()))]


def handle_circuit_breaker(manager, input_data, fallback_model):
    """The guide's "Handling Circuit Breaker" code, as written, in a function."""
    try:
        result = manager.predict("nba_model", [input_data])
    except Exception:
        # Check if circuit breaker caused the error
        health = manager.health_check("nba_model")

        if health.circuit_breaker_open:
            # Circuit breaker is open
            print("Circuit breaker open, using fallback...")

            # Option 1: Use fallback model
            result = fallback_model.predict([input_data])

            # Option 2: Use cached predictions
            result = get_cached_prediction(input_data)

            # Option 3: Use default value
            result = [0.5]  # Neutral prediction
        else:
            # Other error, re-raise
            raise
    return result


def test_guide_handling_circuit_breaker_falls_back(manager, model, previous, capsys, monkeypatch):
    monkeypatch.setitem(CACHE, tuple(sorted(GAME.items())), [0.61])
    fallback_model = FallbackModel(previous)
    manager.deploy_model("nba_model", "v1.0", model)
    input_data = GAME
    assert_close(
        handle_circuit_breaker(manager, input_data, fallback_model), positive(model, [GAME])
    )
    assert capsys.readouterr().out == ""

    trip_breaker(manager, "v1.0")
    with pytest.raises(
        CircuitOpenError, match=r"Circuit breaker is open for model nba_model:v1\.0"
    ):
        manager.predict("nba_model", [input_data])
    result = handle_circuit_breaker(manager, input_data, fallback_model)

    assert result == [0.5]
    assert fallback_model.calls == 1
    assert capsys.readouterr().out == "Circuit breaker open, using fallback...\n"


def test_guide_handling_circuit_breaker_reraises_other_errors(manager, model, previous):
    manager.deploy_model("nba_model", "v1.0", model)
    bad = {**GAME, "home_ppg": "a lot"}
    with pytest.raises(InvalidInputError, match="home_ppg"):
        handle_circuit_breaker(manager, bad, FallbackModel(previous))
    assert manager.circuit_breaker("nba_model").state is BreakerState.CLOSED


def test_guide_manual_circuit_breaker_control(manager, model):
    manager.deploy_model("nba_model", "v1.0", model)
    trip_breaker(manager, "v1.0")
    assert manager.health_check("nba_model", "v1.0").circuit_breaker_open

    # Manual reset (use with caution)
    manager.reset_circuit_breaker("nba_model", "v1.0")

    # Verify reset
    health = manager.health_check("nba_model", "v1.0")
    assert not health.circuit_breaker_open
    assert_close(manager.predict("nba_model", [GAME]), positive(model, [GAME]))


# -- Troubleshooting -------------------------------------------------------------------------


def test_guide_troubleshooting_model_not_found(manager, model, capsys):
    with pytest.raises(ModelNotFoundError) as info:
        manager.predict("nba_model", [GAME])
    assert str(info.value) == "Model 'nba_model' not found or no active version set"

    # Check deployed models
    status = manager.get_all_models_status()
    print(status.keys())

    # Deploy model if not found
    manager.deploy_model("nba_model", "v1.0", model, set_active=True)

    assert capsys.readouterr().out == "dict_keys([])\n"
    assert_close(manager.predict("nba_model", [GAME]), positive(model, [GAME]))


def test_guide_troubleshooting_no_active_version(manager, model):
    manager.deploy_model("nba_model", "v1.0", model, set_active=False)
    with pytest.raises(ModelNotFoundError) as info:
        manager.predict("nba_model", [GAME])
    assert str(info.value) == "Model 'nba_model' not found or no active version set"


@pytest.mark.parametrize("solution", ["reset", "rollback"])
def test_guide_troubleshooting_circuit_breaker_open(serving, model, previous, solution, capsys):
    manager = serving
    trip_breaker(manager, "v1.0")
    with pytest.raises(CircuitOpenError) as info:
        manager.predict("nba_model", [GAME])
    assert f"Error: {info.value}" == "Error: Circuit breaker is open for model nba_model:v1.0"

    # Check error rate
    health = manager.health_check("nba_model", "v1.0")
    print(f"Error rate: {health.error_rate:.2%}")

    if solution == "reset":
        # Reset if appropriate
        manager.reset_circuit_breaker("nba_model", "v1.0")
        served_by = model
    else:
        # Or rollback to previous version
        manager.set_active_version("nba_model", "v0.9")
        served_by = previous

    assert capsys.readouterr().out == "Error rate: 100.00%\n"
    assert_close(manager.predict("nba_model", [GAME]), positive(served_by, [GAME]))


def test_guide_troubleshooting_high_latency(manager, model, games, home_wins, capsys):
    def optimize_model(model: RandomForestClassifier) -> RandomForestClassifier:
        """A smaller forest of the same kind."""
        return clone(model).set_params(n_estimators=10).fit(games, home_wins)

    manager.deploy_model("nba_model", "v1.0", model)
    for i in range(20):
        manager.predict("nba_model", games.iloc[i : i + 1].to_dict("records"))
    large_batch = games.to_dict("records")

    # Check metrics
    status = manager.get_all_models_status()["nba_model"]["v1.0"]
    metrics = status["metrics"]
    print(f"Avg latency: {metrics.avg_latency_ms:.2f}ms")

    # Use batch predictions
    results = manager.predict("nba_model", large_batch)  # Faster

    # Or optimize model
    optimized_model = optimize_model(model)
    manager.deploy_model("nba_model", "v1.1", optimized_model)

    assert re.fullmatch(r"Avg latency: \d+\.\d\dms\n", capsys.readouterr().out)
    assert 0 < metrics.avg_latency_ms < 1000  # under the guide's warning level
    assert_close(results, positive(model, games))
    after = manager.get_all_models_status()["nba_model"]
    assert after["v1.0"]["metrics"].request_count == 21
    assert after["v1.1"]["status"] == "inactive"
    assert_close(
        manager.predict("nba_model", [GAME], version="v1.1"), positive(optimized_model, [GAME])
    )
