"""Routing through ModelServingManager: the guide's A/B testing and deployment patterns, as written.

The guide (``../shared/reference/model-serving-guide.md``, sections "A/B
Testing" and "Production Deployment Patterns") predicts NBA games; here the
games are rows of the breast-cancer test set and the versions are the
conftest pipelines, so every answer can be checked against scikit-learn.
``model_v2`` is the better model, as a new version should be. The guide's
code is kept as written, except for its weeks and hours of waiting.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from turnout import (
    ABComparison,
    InferenceError,
    ModelServingManager,
    RoutingConfig,
    SmokeTestError,
)
from turnout.core.deployments.faults import FaultInjectingRuntime

ACTIVE = RoutingConfig("active")


@pytest.fixture
def model_v1(binary_model_v2: Any) -> Any:
    """The version in production: a heavily regularized pipeline."""
    return binary_model_v2


@pytest.fixture
def model_v2(binary_model: Any) -> Any:
    """The new version: the same pipeline, less regularized, more accurate."""
    return binary_model


@pytest.fixture(scope="module")
def model_v3(binary_data: Any) -> Any:
    """A third version, for the guide's multi-variant test."""
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=1000))
    return model.fit(binary_data.X_train, binary_data.y_train)


@pytest.fixture
def games(binary_data: Any) -> list[dict[str, float]]:
    return binary_data.records()


@pytest.fixture
def game_data(games: list[dict[str, float]]) -> dict[str, float]:
    return games[0]


def positive(model: Any, inputs: Any) -> np.ndarray[Any, Any]:
    return model.predict_proba(_frame(model, inputs))[:, 1]


def _frame(model: Any, inputs: Any) -> Any:
    import pandas as pd

    return pd.DataFrame(inputs, columns=model.feature_names_in_)


def assert_close(actual: Any, expected: Any) -> None:
    # ONNX Runtime computes in float32; scikit-learn in float64.
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)


def request_counts(manager: ModelServingManager, model_id: str) -> dict[str, int]:
    status = manager.get_all_models_status()[model_id]
    return {version: info["metrics"].request_count for version, info in status.items()}


def wait_until(condition: Any, timeout: float = 10.0) -> None:
    """Poll ``condition()`` every millisecond until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.001)


# -- "A/B Testing" ---------------------------------------------------------------------------


def test_guide_basic_and_weighted_ab_tests(manager, model_v1, model_v2, model_v3, game_data):
    # Deploy two versions
    manager.deploy_model("nba_model", "v1.0", model_v1)
    manager.deploy_model("nba_model", "v2.0", model_v2)

    # Setup A/B test (50/50 split)
    manager.setup_ab_test(model_id="nba_model", versions=["v1.0", "v2.0"], weights=[0.5, 0.5])

    # Make predictions - automatically routed
    answers = []
    for i in range(100):  # noqa: B007 (as the guide writes it)
        result = manager.predict("nba_model", [game_data])
        # Approximately 50 requests to v1.0, 50 to v2.0
        answers.append(float(result[0]))

    by_version = {
        v: float(positive(m, [game_data])[0]) for v, m in (("v1.0", model_v1), ("v2.0", model_v2))
    }
    assert abs(by_version["v1.0"] - by_version["v2.0"]) > 1e-3  # answers tell versions apart
    served = Counter(min(by_version, key=lambda v: abs(by_version[v] - a)) for a in answers)
    for answer in answers:
        assert min(abs(answer - p) for p in by_version.values()) < 1e-4
    assert served == request_counts(manager, "nba_model")
    assert 25 <= served["v1.0"] <= 75

    # Canary deployment: 95% v1.0, 5% v2.0
    manager.setup_ab_test(model_id="nba_model", versions=["v1.0", "v2.0"], weights=[0.95, 0.05])
    before = request_counts(manager, "nba_model")
    for _ in range(400):
        manager.predict("nba_model", [game_data])
    after = request_counts(manager, "nba_model")
    assert 2 <= after["v2.0"] - before["v2.0"] <= 50

    # Multi-variant testing: 70% v1.0, 20% v2.0, 10% v3.0
    manager.deploy_model("nba_model", "v3.0", model_v3)
    manager.setup_ab_test(
        model_id="nba_model", versions=["v1.0", "v2.0", "v3.0"], weights=[0.7, 0.2, 0.1]
    )
    before = after
    for _ in range(500):
        manager.predict("nba_model", [game_data])
    after = request_counts(manager, "nba_model")
    share = {v: after[v] - before.get(v, 0) for v in after}
    assert sum(share.values()) == 500
    assert 290 <= share["v1.0"] <= 410
    assert 60 <= share["v2.0"] <= 140
    assert 20 <= share["v3.0"] <= 80
    assert manager.get_routing("nba_model") == RoutingConfig(
        "weighted", {"versions": ["v1.0", "v2.0", "v3.0"], "weights": [0.7, 0.2, 0.1]}
    )


def test_guide_monitor_ab_test_results_and_promote_the_winner(
    manager, model_v1, model_v2, games, binary_data, capsys
):
    manager.deploy_model("nba_model", "v1.0", model_v1)
    manager.deploy_model("nba_model", "v2.0", model_v2)
    manager.setup_ab_test(model_id="nba_model", versions=["v1.0", "v2.0"], weights=[0.5, 0.5])

    # "Collect prediction results": for each served game, the probability the
    # version that served it gave to what really happened.
    collected: dict[str, list[float]] = {"v1.0": [], "v2.0": []}
    truth = binary_data.y_test
    for i in range(600):
        row = i % len(games)
        result = manager.infer("nba_model", [games[row]])
        collected[result.version].append(float(result.probabilities[0, truth[row]]))

    # Get metrics for each version
    status = manager.get_all_models_status()["nba_model"]

    for version in ["v1.0", "v2.0"]:
        metrics = status[version]["metrics"]
        print(f"\n{version} Metrics:")
        print(f"  Requests: {metrics.request_count}")
        print(f"  Avg Latency: {metrics.avg_latency_ms:.2f}ms")
        print(f"  Error Rate: {metrics.error_rate:.2%}")

    # Calculate statistical significance (example)
    v1_results = collected["v1.0"]  # Collect prediction results
    v2_results = collected["v2.0"]

    t_stat, p_value = stats.ttest_ind(v1_results, v2_results)  # noqa: RUF059 (as written)

    if p_value < 0.05:
        print(f"Significant difference detected (p={p_value:.4f})")
        # Promote winner
        if np.mean(v2_results) > np.mean(v1_results):
            manager.set_active_version("nba_model", "v2.0")

    lines = capsys.readouterr().out.splitlines()
    counts = {v: status[v]["metrics"].request_count for v in ("v1.0", "v2.0")}
    assert counts["v1.0"] + counts["v2.0"] == 600
    assert counts == {v: len(collected[v]) for v in collected}
    for i, version in enumerate(["v1.0", "v2.0"]):
        block = lines[5 * i : 5 * i + 5]
        assert block[:3] == ["", f"{version} Metrics:", f"  Requests: {counts[version]}"]
        assert re.fullmatch(r"  Avg Latency: \d+\.\d\dms", block[3])
        assert block[4] == "  Error Rate: 0.00%"
    assert len(lines) == 11
    assert lines[-1] == f"Significant difference detected (p={p_value:.4f})"
    assert manager.active_models.get("nba_model") == "v2.0"
    assert manager.get_routing("nba_model") == ACTIVE  # promoting ended the A/B test
    assert_close(manager.predict("nba_model", games[:10]), positive(model_v2, games[:10]))


def test_guide_gradual_rollout_without_the_weeks(manager, model_v1, model_v2, games):
    manager.deploy_model("nba_model", "v1.0", model_v1)
    manager.deploy_model("nba_model", "v2.0", model_v2)
    shares = []

    def week_of_traffic() -> None:
        before = request_counts(manager, "nba_model")
        for i in range(400):
            manager.predict("nba_model", [games[i % len(games)]])
        after = request_counts(manager, "nba_model")
        shares.append((after["v2.0"] - before["v2.0"]) / 400)

    # Week 1: 5% traffic to new version
    manager.setup_ab_test(model_id="nba_model", versions=["v1.0", "v2.0"], weights=[0.95, 0.05])

    # Monitor for issues...
    week_of_traffic()  # instead of time.sleep(7 * 24 * 3600)

    # Week 2: 25% traffic
    manager.setup_ab_test(model_id="nba_model", versions=["v1.0", "v2.0"], weights=[0.75, 0.25])

    # Monitor...
    week_of_traffic()

    # Week 3: 50% traffic
    manager.setup_ab_test(model_id="nba_model", versions=["v1.0", "v2.0"], weights=[0.5, 0.5])
    week_of_traffic()

    # If successful, promote to 100%
    manager.set_active_version("nba_model", "v2.0")
    week_of_traffic()

    assert 0.0 < shares[0] < 0.12
    assert 0.15 < shares[1] < 0.35
    assert 0.4 < shares[2] < 0.6
    assert shares[3] == 1.0
    assert manager.get_routing("nba_model") == ACTIVE


# -- "Production Deployment Patterns": the guide's functions, as written -------------------------

# run_smoke_tests's labelled games; the guide leaves the smoke tests to the reader.
SMOKE: dict[str, Any] = {}
# The guide's hour and check interval, in seconds; the tests shorten both.
HOUR = 3600.0
CHECK_EVERY = 300.0


def blue_green_deployment(manager, model_id, new_model, new_version):
    """Blue-green deployment pattern"""

    # Current version is "blue"
    current_version = manager.active_models.get(model_id)
    print(f"Current (blue) version: {current_version}")

    # Deploy new version as "green"
    print(f"Deploying new (green) version: {new_version}")
    success = manager.deploy_model(
        model_id=model_id,
        version=new_version,
        model_instance=new_model,
        set_active=False,  # Don't make active yet
    )

    if not success:
        print("Deployment failed!")
        return False

    # Test green version
    print("Testing green version...")
    test_passed = run_smoke_tests(manager, model_id, new_version)

    if test_passed:
        # Switch to green
        print("Tests passed, switching to green...")
        manager.set_active_version(model_id, new_version)
        print(f"Deployment successful! Active version: {new_version}")

        # Keep blue version for rollback
        return True
    else:
        # Rollback to blue
        print("Tests failed, staying on blue version")
        manager.retire_model(model_id, new_version)
        return False


def run_smoke_tests(manager, model_id, version):
    """Green must call at least 90% of the labelled smoke-test games right."""
    probabilities = manager.predict(model_id, SMOKE["games"], version=version)
    accuracy = np.mean((probabilities >= 0.5) == SMOKE["outcomes"])
    print(f"Smoke test accuracy of {version}: {accuracy:.0%}")
    return accuracy >= 0.9


def canary_deployment(manager, model_id, new_model, new_version):
    """Canary deployment with gradual rollout"""

    current_version = manager.active_models.get(model_id)

    # Deploy canary
    manager.deploy_model(model_id, new_version, new_model, set_active=False)

    # Stage 1: 5% traffic
    print("Stage 1: 5% traffic to canary...")
    manager.setup_ab_test(
        model_id=model_id, versions=[current_version, new_version], weights=[0.95, 0.05]
    )

    # Monitor for issues
    if not monitor_canary(manager, model_id, new_version, duration_hours=24):
        rollback(manager, model_id, current_version)
        return False

    # Stage 2: 25% traffic
    print("Stage 2: 25% traffic to canary...")
    manager.setup_ab_test(
        model_id=model_id, versions=[current_version, new_version], weights=[0.75, 0.25]
    )

    if not monitor_canary(manager, model_id, new_version, duration_hours=48):
        rollback(manager, model_id, current_version)
        return False

    # Stage 3: 100% traffic
    print("Stage 3: Full rollout...")
    manager.set_active_version(model_id, new_version)

    return True


def monitor_canary(manager, model_id, canary_version, duration_hours):
    """Monitor canary for issues"""
    import time

    end_time = time.time() + (duration_hours * HOUR)

    while time.time() < end_time:
        health = manager.health_check(model_id, canary_version)

        if health.circuit_breaker_open:
            print("Canary circuit breaker opened!")
            return False

        if health.error_rate > 0.05:  # 5% threshold
            print(f"Canary error rate too high: {health.error_rate:.2%}")
            return False

        time.sleep(CHECK_EVERY)  # Check every 5 minutes

    return True


def rollback(manager, model_id, version):
    """Send all traffic back to ``version``; the guide calls this without defining it."""
    print(f"Rolling back to {version}")
    manager.set_active_version(model_id, version)


class ShadowDeployment:
    """Shadow deployment for comparing models"""

    def __init__(self, prod_manager, shadow_manager):
        self.prod_manager = prod_manager
        self.shadow_manager = shadow_manager
        self.comparisons = []

    def predict_with_shadow(self, model_id, inputs):
        """Make prediction with shadow model comparison"""

        # Production prediction
        prod_result = self.prod_manager.predict(model_id, inputs)

        # Shadow prediction (async, doesn't block)
        shadow_result = self.shadow_manager.predict(model_id + "_shadow", inputs)

        # Log comparison
        self.comparisons.append(
            {"production": prod_result, "shadow": shadow_result, "input": inputs}
        )

        # Return only production result
        return prod_result

    def analyze_shadow_performance(self):
        """Analyze shadow model performance"""
        if not self.comparisons:
            return None

        differences = []
        for comp in self.comparisons:
            diff = abs(comp["production"] - comp["shadow"])
            differences.append(diff)

        avg_diff = np.mean(differences)
        max_diff = np.max(differences)

        print("Shadow Model Analysis:")
        print(f"  Average difference: {avg_diff:.4f}")
        print(f"  Maximum difference: {max_diff:.4f}")
        print(f"  Samples compared: {len(self.comparisons)}")

        return avg_diff


@pytest.fixture(autouse=True)
def smoke_games(binary_data: Any) -> Iterator[None]:
    SMOKE.update(games=binary_data.records(60), outcomes=binary_data.y_test[:60])
    yield
    SMOKE.clear()


@pytest.fixture
def shortened(monkeypatch: pytest.MonkeyPatch) -> None:
    """A guide hour of 10 ms, checked every 5 ms: 24 "hours" take a quarter second."""
    monkeypatch.setitem(globals(), "HOUR", 0.01)
    monkeypatch.setitem(globals(), "CHECK_EVERY", 0.005)


@contextmanager
def production_traffic(manager: ModelServingManager, games: list[Any]) -> Iterator[Counter[str]]:
    """Requests from another thread, as production sends them, until the block ends."""
    outcomes: Counter[str] = Counter()
    stop = threading.Event()

    def send() -> None:
        i = 0
        while not stop.is_set():
            try:
                manager.predict("nba_model", [games[i % len(games)]])
                outcomes["ok"] += 1
            except InferenceError:
                outcomes["failed"] += 1
            i += 1

    thread = threading.Thread(target=send)
    thread.start()
    try:
        yield outcomes
    finally:
        stop.set()
        thread.join()


def test_guide_blue_green_deployment(manager, model_v1, model_v2, games, capsys):
    manager.deploy_model("nba_model", "v1.0", model_v1, set_active=True)
    accuracy = np.mean(model_v2.predict(_frame(model_v2, SMOKE["games"])) == SMOKE["outcomes"])

    assert blue_green_deployment(manager, "nba_model", model_v2, "v2.0") is True

    assert capsys.readouterr().out.splitlines() == [
        "Current (blue) version: v1.0",
        "Deploying new (green) version: v2.0",
        "Testing green version...",
        f"Smoke test accuracy of v2.0: {accuracy:.0%}",
        "Tests passed, switching to green...",
        "Deployment successful! Active version: v2.0",
    ]
    assert manager.active_models.get("nba_model") == "v2.0"
    assert_close(manager.predict("nba_model", games[:10]), positive(model_v2, games[:10]))
    # Blue is kept for rollback.
    assert set(manager.get_all_models_status()["nba_model"]) == {"v1.0", "v2.0"}


def test_guide_blue_green_deployment_keeps_blue_when_green_fails(
    manager, model_v1, binary_data, games, capsys
):
    manager.deploy_model("nba_model", "v1.0", model_v1, set_active=True)
    # A green trained on flipped labels: it calls every game backwards.
    backwards = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    backwards.fit(binary_data.X_train, 1 - binary_data.y_train)

    assert blue_green_deployment(manager, "nba_model", backwards, "v2.0") is False

    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "Tests failed, staying on blue version"
    assert re.fullmatch(r"Smoke test accuracy of v2\.0: \d+%", out[-2])
    assert manager.active_models.get("nba_model") == "v1.0"
    assert list(manager.get_all_models_status()["nba_model"]) == ["v1.0"]  # green retired
    assert_close(manager.predict("nba_model", games[:10]), positive(model_v1, games[:10]))


def test_guide_blue_green_deployment_reports_a_failed_deploy(manager, model_v1, capsys):
    manager.deploy_model("nba_model", "v1.0", model_v1, set_active=True)
    unfitted = make_pipeline(StandardScaler(), LogisticRegression())

    assert blue_green_deployment(manager, "nba_model", unfitted, "v2.0") is False
    assert capsys.readouterr().out.splitlines()[-1] == "Deployment failed!"
    assert manager.active_models.get("nba_model") == "v1.0"


def test_guide_canary_deployment(manager, model_v1, model_v2, games, shortened, capsys):
    manager.deploy_model("nba_model", "v1.0", model_v1, set_active=True)

    with production_traffic(manager, games) as outcomes:
        assert canary_deployment(manager, "nba_model", model_v2, "v2.0") is True
        wait_until(lambda: outcomes["ok"] > 0)

    assert capsys.readouterr().out.splitlines() == [
        "Stage 1: 5% traffic to canary...",
        "Stage 2: 25% traffic to canary...",
        "Stage 3: Full rollout...",
    ]
    assert outcomes["failed"] == 0
    counts = request_counts(manager, "nba_model")
    assert counts["v2.0"] > 0  # the canary served during its stages
    assert manager.active_models.get("nba_model") == "v2.0"
    assert manager.get_routing("nba_model") == ACTIVE


def test_guide_canary_deployment_rolls_back_a_failing_canary(
    manager, model_v1, model_v2, games, shortened, monkeypatch, capsys
):
    # Long stages: the monitor must catch the failing canary well before they end.
    monkeypatch.setitem(globals(), "HOUR", 1.0)
    manager.deploy_model("nba_model", "v1.0", model_v1, set_active=True)
    deploy = manager.deploy_model

    def deploy_broken(model_id: str, version: str, *args: Any, **kwargs: Any) -> bool:
        deployed = deploy(model_id, version, *args, **kwargs)
        deployment = manager.server.get_deployment(model_id, version)
        fault = FaultInjectingRuntime(deployment.runtime)
        fault.fail_fraction(1.0)
        deployment.runtime = fault
        return deployed

    monkeypatch.setattr(manager, "deploy_model", deploy_broken)

    started = time.monotonic()
    with production_traffic(manager, games) as outcomes:
        assert canary_deployment(manager, "nba_model", model_v2, "v2.0") is False
        after_rollback = outcomes["ok"]
        wait_until(lambda: outcomes["ok"] >= after_rollback + 50)
        failed_by_then = outcomes["failed"]
        wait_until(lambda: outcomes["ok"] >= after_rollback + 100)
    assert time.monotonic() - started < 20

    out = capsys.readouterr().out.splitlines()
    assert out == [
        "Stage 1: 5% traffic to canary...",
        "Canary error rate too high: 100.00%",
        "Rolling back to v1.0",
    ]
    assert manager.active_models.get("nba_model") == "v1.0"
    assert manager.get_routing("nba_model") == ACTIVE
    status = manager.get_all_models_status()["nba_model"]
    # Every failure was the canary's, and none came after the rollback.
    assert status["v2.0"]["metrics"].error_count == outcomes["failed"] == failed_by_then > 0
    assert status["v1.0"]["metrics"].error_count == 0


def test_guide_shadow_deployment(model_v1, model_v2, games, capsys):
    # Usage
    prod_manager = ModelServingManager()
    shadow_manager = ModelServingManager()
    with prod_manager, shadow_manager:
        # Deploy production and shadow
        prod_manager.deploy_model("nba_model", "v1.0", model_v1, set_active=True)
        shadow_manager.deploy_model("nba_model_shadow", "v2.0", model_v2, set_active=True)

        # Use shadow deployment
        deployment = ShadowDeployment(prod_manager, shadow_manager)

        # Make predictions
        results = []
        for game in games[:40]:
            result = deployment.predict_with_shadow("nba_model", [game])
            results.append(result)

        # Analyze after sufficient data
        average = deployment.analyze_shadow_performance()

    assert_close(np.concatenate(results), positive(model_v1, games[:40]))
    difference = np.abs(positive(model_v1, games[:40]) - positive(model_v2, games[:40]))
    assert average == pytest.approx(difference.mean(), rel=1e-3)
    assert capsys.readouterr().out.splitlines() == [
        "Shadow Model Analysis:",
        f"  Average difference: {difference.mean():.4f}",
        f"  Maximum difference: {difference.max():.4f}",
        "  Samples compared: 40",
    ]
    assert ShadowDeployment(None, None).analyze_shadow_performance() is None


# -- the manager's own routing methods -------------------------------------------------------------


@pytest.fixture
def two_versions(manager, model_v1, model_v2) -> ModelServingManager:
    manager.deploy_model("nba_model", "v1.0", model_v1)
    manager.deploy_model("nba_model", "v2.0", model_v2)
    return manager


def test_manager_start_canary_promotes_and_abort_canary_rolls_back(two_versions, games):
    manager = two_versions
    manager.start_canary("nba_model", "v2.0", min_requests=5, max_latency_ratio=50.0)
    sent = 0
    while manager.get_routing("nba_model").strategy == "canary":
        assert sent < 2000, manager.rollout_history("nba_model")
        manager.predict("nba_model", [games[sent % len(games)]])
        sent += 1

    assert manager.active_models.get("nba_model") == "v2.0"
    assert [e.event for e in manager.rollout_history("nba_model")] == [
        "started",
        "step",
        "step",
        "step",
        "promoted",
    ]

    manager.start_canary("nba_model", "v1.0", min_requests=1000)
    manager.abort_canary("nba_model")
    assert manager.active_models.get("nba_model") == "v2.0"
    assert manager.rollout_history("nba_model")[-1].reason == "aborted by request"
    assert manager.get_routing("nba_model") == ACTIVE


def test_manager_blue_green_switch_and_rollback(two_versions, model_v1, model_v2, games):
    manager = two_versions
    with pytest.raises(SmokeTestError):
        manager.blue_green_switch("nba_model", "v2.0", smoke_test=lambda *_: False)
    assert manager.active_models.get("nba_model") == "v1.0"

    manager.blue_green_switch(
        "nba_model",
        "v2.0",
        samples=games[:5],
        expected=positive(model_v2, games[:5]),
        tolerance=1e-4,
    )
    assert manager.get_routing("nba_model") == RoutingConfig(
        "blue_green", {"blue": "v1.0", "green": "v2.0", "live": "green"}
    )
    assert_close(manager.predict("nba_model", games[:5]), positive(model_v2, games[:5]))

    manager.blue_green_rollback("nba_model")
    assert manager.active_models.get("nba_model") == "v1.0"
    assert_close(manager.predict("nba_model", games[:5]), positive(model_v1, games[:5]))


def test_a_manager_smoke_test_may_call_the_manager(two_versions, model_v2, games):
    manager = two_versions
    threads = []

    def smoke_test(server: Any, model_id: str, version: str) -> Any:
        # Plain synchronous code, as the manager's users write it.
        threads.append(threading.current_thread())
        probabilities = manager.predict(model_id, games[:5], version=version)
        return np.allclose(probabilities, positive(model_v2, games[:5]), atol=1e-4)

    def wrong(server: Any, model_id: str, version: str) -> bool:
        return bool(manager.predict(model_id, games[:1], version=version)[0] > 2)

    async def coroutine_test(server: Any, model_id: str, version: str) -> bool:
        return bool((await server.predict(model_id, games[:1], version=version))[0] <= 1)

    with pytest.raises(SmokeTestError, match=r"the smoke test of nba_model:v2\.0 failed"):
        manager.blue_green_switch("nba_model", "v2.0", smoke_test=wrong)
    assert manager.active_models.get("nba_model") == "v1.0"

    manager.blue_green_switch("nba_model", "v2.0", smoke_test=smoke_test)
    assert manager.active_models.get("nba_model") == "v2.0"
    assert threads[0] is not threading.current_thread()
    manager.blue_green_rollback("nba_model")
    manager.blue_green_switch("nba_model", "v2.0", smoke_test=coroutine_test)
    assert manager.active_models.get("nba_model") == "v2.0"


def test_manager_record_outcome_and_compare_versions(two_versions, games):
    manager = two_versions
    manager.setup_ab_test("nba_model", ["v1.0", "v2.0"], [0.5, 0.5])
    rng = np.random.default_rng(6)
    rates = {"v1.0": 0.2, "v2.0": 0.6}
    for i in range(300):
        result = manager.infer("nba_model", [games[i % len(games)]])
        outcome = float(rng.random() < rates[result.version])
        assert manager.record_outcome("nba_model", result.request_id, outcome) == result.version

    comparison = manager.compare_versions("nba_model", "v1.0", "v2.0")
    assert isinstance(comparison, ABComparison)
    assert comparison.test == "two-proportion z-test"
    assert comparison.a.count + comparison.b.count == 300
    assert comparison.significant
    assert comparison.verdict.startswith("v2.0 has the higher mean outcome")


def test_manager_shadow_statistics(two_versions, model_v1, model_v2, games):
    manager = two_versions
    manager.set_routing("nba_model", RoutingConfig("shadow", {"mirrors": {"v2.0": 1.0}}))
    for i in range(30):
        result = manager.infer("nba_model", [games[i]])
        assert result.version == "v1.0"
        assert_close(result.outputs, positive(model_v1, games[i : i + 1]))

    wait_until(lambda: manager.shadow_statistics("nba_model")[0].compared == 30)
    (record,) = manager.shadow_statistics("nba_model")
    difference = np.abs(positive(model_v1, games[:30]) - positive(model_v2, games[:30]))
    assert (record.primary, record.shadow) == ("v1.0", "v2.0")
    assert record.mean_abs_difference == pytest.approx(difference.mean(), rel=1e-3)
    assert record.max_abs_difference == pytest.approx(difference.max(), rel=1e-3)
    assert (record.errors, record.dropped) == (0, 0)
