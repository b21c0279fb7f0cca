"""ModelServingManager, the synchronous facade: the serving guide's code, run as written.

The guide (``../shared/reference/model-serving-guide.md``) predicts NBA games
from four features; the models here are trained on synthetic games with
those features, one decimal each, as in the guide.
"""

from __future__ import annotations

import asyncio
import importlib.util
import re
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from turnout import InvalidConfigError, ModelServingManager, ServerClosedError
from turnout.core.deployments.faults import FaultInjectingRuntime

GAME = {"home_ppg": 112.5, "away_ppg": 108.3, "home_def_rating": 105.2, "away_def_rating": 110.8}


@pytest.fixture(scope="module")
def model(games: pd.DataFrame, home_wins: np.ndarray[Any, Any]) -> RandomForestClassifier:
    """The guide's model: a 100-tree random forest."""
    forest = RandomForestClassifier(n_estimators=100, max_depth=6, random_state=0)
    return forest.fit(games, home_wins)


@pytest.fixture(scope="module")
def versions(
    games: pd.DataFrame, home_wins: np.ndarray[Any, Any], model: RandomForestClassifier
) -> dict[str, Any]:
    """model_v1, model_v1_1 and model_v2 of the guide's "Multi-Version Serving"."""
    return {
        "v1.0": LogisticRegression(max_iter=1000).fit(games, home_wins),
        "v1.1": LogisticRegression(C=1e-4, max_iter=1000).fit(games, home_wins),
        "v2.0": model,
    }


def positive(model: Any, inputs: Any) -> np.ndarray[Any, Any]:
    """P(home win) per game, from the estimator itself."""
    return model.predict_proba(pd.DataFrame(inputs))[:, 1]


def assert_close(actual: np.ndarray[Any, Any], expected: np.ndarray[Any, Any]) -> None:
    # ONNX Runtime computes in float32; scikit-learn in float64.
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)


def test_guide_model_serving_basics(model, games, capsys):
    manager = ModelServingManager(
        enable_mlflow=False,  # the guide says True; see test_enable_mlflow_*
        mlflow_experiment="nba_serving",
        error_threshold=0.1,  # Circuit breaker threshold
        mock_mode=False,
    )
    with manager:
        # Deploy the model
        success = manager.deploy_model(
            model_id="nba_win_predictor",
            version="v1.0",
            model_instance=model,
            set_active=True,  # Make this the active version
            metadata={"trained_by": "data_scientist_1", "date": "2025-10-25"},
        )

        if success:
            print("Model deployed successfully!")

        # Single prediction
        result = manager.predict(
            model_id="nba_win_predictor",
            inputs=[
                {
                    "home_ppg": 112.5,
                    "away_ppg": 108.3,
                    "home_def_rating": 105.2,
                    "away_def_rating": 110.8,
                }
            ],
        )

        print(f"Win probability: {result[0]:.2f}")

        # Batch predictions
        batch_inputs = [
            {
                "home_ppg": 112.5,
                "away_ppg": 108.3,
                "home_def_rating": 105.2,
                "away_def_rating": 110.8,
            },
            {
                "home_ppg": 115.2,
                "away_ppg": 110.1,
                "home_def_rating": 108.0,
                "away_def_rating": 109.5,
            },
            {
                "home_ppg": 108.9,
                "away_ppg": 112.5,
                "home_def_rating": 111.3,
                "away_def_rating": 104.7,
            },
        ]

        results = manager.predict(model_id="nba_win_predictor", inputs=batch_inputs)

        for i, prob in enumerate(results):
            print(f"Game {i + 1} win probability: {prob:.2f}")

        status = manager.get_all_models_status()["nba_win_predictor"]["v1.0"]

    assert success is True
    assert_close(result, positive(model, [GAME]))
    assert_close(results, positive(model, batch_inputs))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Model deployed successfully!"
    assert re.fullmatch(r"Win probability: [01]\.\d\d", lines[1])
    assert [line.split(":")[0] for line in lines[2:]] == [
        f"Game {i} win probability" for i in (1, 2, 3)
    ]
    assert status["metadata"] == {"trained_by": "data_scientist_1", "date": "2025-10-25"}
    assert status["metrics"].request_count == 2


def test_guide_multi_version_serving(manager, versions, capsys):
    model_v1, model_v1_1, model_v2 = versions["v1.0"], versions["v1.1"], versions["v2.0"]

    # Deploy version 1.0 (baseline)
    deployed = [
        manager.deploy_model(
            model_id="nba_model", version="v1.0", model_instance=model_v1, set_active=True
        ),
        # Deploy version 1.1 (improved)
        manager.deploy_model(
            model_id="nba_model",
            version="v1.1",
            model_instance=model_v1_1,
            set_active=False,  # Don't make active yet
        ),
        # Deploy version 2.0 (major update)
        manager.deploy_model(
            model_id="nba_model", version="v2.0", model_instance=model_v2, set_active=False
        ),
    ]
    assert deployed == [True, True, True]
    assert_close(manager.predict("nba_model", [GAME]), positive(model_v1, [GAME]))

    # Switch to version 1.1
    manager.set_active_version(model_id="nba_model", version="v1.1")

    # Verify active version
    active = manager.active_models.get("nba_model")
    print(f"Active version: {active}")  # "v1.1"

    served = manager.predict("nba_model", [GAME])
    assert_close(served, positive(model_v1_1, [GAME]))
    assert not np.allclose(served, positive(model_v1, [GAME]), atol=1e-3)

    # List all versions
    status = manager.get_all_models_status()
    for model_id, models in status.items():
        print(f"\nModel: {model_id}")
        for version, info in models.items():
            print(f"  {version}: {info['status']}, requests={info['metrics'].request_count}")

    # Retire old version
    manager.retire_model(model_id="nba_model", version="v1.0")

    assert capsys.readouterr().out.splitlines() == [
        "Active version: v1.1",
        "",
        "Model: nba_model",
        "  v1.0: inactive, requests=1",
        "  v1.1: active, requests=1",
        "  v2.0: inactive, requests=0",
    ]
    assert list(manager.get_all_models_status()["nba_model"]) == ["v1.1", "v2.0"]
    assert manager.active_models.get("nba_model") == "v1.1"


@pytest.mark.parametrize(
    ("make_model", "reason"),
    [
        (RandomForestClassifier, "not fitted"),
        (object, "model_instance must be"),
        (lambda: "nba_model.pkl", r"\.onnx"),
    ],
    ids=["unfitted", "not-a-model", "pickle-path"],
)
def test_a_failed_deploy_returns_false_and_logs_why(manager, make_model, reason, caplog):
    assert manager.deploy_model("nba_model", "v1.0", make_model()) is False

    (record,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert record.name == "turnout"
    assert re.search(rf"deploying nba_model:v1\.0 failed: .*{reason}", record.getMessage())
    assert "nba_model" not in manager.get_all_models_status()


def test_deploying_a_version_twice_returns_false_and_keeps_the_first(manager, versions, caplog):
    assert manager.deploy_model("nba_model", "v1.0", versions["v1.0"]) is True
    assert manager.deploy_model("nba_model", "v1.0", versions["v2.0"]) is False

    assert "Version 'v1.0' of model 'nba_model' is already deployed" in caplog.text
    assert_close(manager.predict("nba_model", [GAME]), positive(versions["v1.0"], [GAME]))
    assert manager.deploy_model("nba_model", "v1.0", versions["v2.0"], replace=True) is True
    assert_close(manager.predict("nba_model", [GAME]), positive(versions["v2.0"], [GAME]))


def test_many_threads_calling_predict_at_once_are_batched_together(manager, model, games):
    assert manager.deploy_model("nba_model", "v1.0", model)
    records = games.to_dict("records")
    expected = positive(model, games)

    def call(i: int) -> tuple[int, np.ndarray[Any, Any]]:
        game = i % len(records)
        return game, manager.predict("nba_model", [records[game]])

    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(call, range(32 * 20)))

    for game, result in results:
        assert result.shape == (1,)
        assert_close(result, expected[game : game + 1])
    m = manager.get_all_models_status()["nba_model"]["v1.0"]["metrics"]
    assert (m.request_count, m.rows, m.error_count) == (640, 640, 0)
    assert m.mean_batch_size > 1  # one row per request: batches merged requests


# The guide's "Request Batching" code, verbatim.


async def predict_async(manager, model_id, inputs):
    """Async prediction wrapper"""
    loop = asyncio.get_event_loop()
    result = await loop.run_in_executor(None, manager.predict, model_id, inputs)
    return result


async def predict_batch_async(manager, model_id, all_inputs):
    tasks = [predict_async(manager, model_id, [inp]) for inp in all_inputs]
    results = await asyncio.gather(*tasks)
    return results


def test_guide_request_batching(manager, model, games):
    manager.deploy_model("nba_model", "v1.0", model, set_active=True)
    games_list = games.iloc[:200].to_dict("records")

    # Usage
    results = asyncio.run(predict_batch_async(manager, "nba_model", games_list))

    assert len(results) == 200
    assert_close(np.concatenate(results), positive(model, games.iloc[:200]))


def test_mock_mode_serves_the_estimator_itself(model, games):
    X = games.iloc[:10]
    with ModelServingManager(mock_mode=True) as manager:
        assert manager.mock_mode is True
        assert manager.deploy_model("nba_model", "v1.0", model)
        result = manager.predict("nba_model", X.to_dict("records"))
        status = manager.get_all_models_status()["nba_model"]["v1.0"]

    # No conversion: the estimator's own float64 predict_proba.
    np.testing.assert_allclose(result, positive(model, X), rtol=1e-12)
    assert status["source"].startswith("python:RandomForestClassifier")


def test_mock_mode_serves_a_test_double(games):
    class AlwaysHome:
        """A test double: no scikit-learn, just the two methods the guide calls."""

        def predict(self, X):
            return np.ones(len(X), dtype=int)

        def predict_proba(self, X):
            return np.tile([0.25, 0.75], (len(X), 1))

    rows = games.iloc[:3].to_dict("records")
    with ModelServingManager(mock_mode=True) as manager:
        assert manager.deploy_model("nba_model", "v1.0", AlwaysHome(), features=list(games.columns))
        result = manager.predict("nba_model", rows)
        status = manager.get_all_models_status()["nba_model"]["v1.0"]

    np.testing.assert_allclose(result, [0.75, 0.75, 0.75])
    assert status["source"] == "python:AlwaysHome"


def test_enable_mlflow_without_mlflow_says_which_extra_to_install(monkeypatch):
    find_spec = importlib.util.find_spec

    def without_mlflow(name: str, *args: Any) -> Any:
        return None if name == "mlflow" else find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_mlflow)

    with pytest.raises(InvalidConfigError, match=r"pip install 'turnout\[mlflow\]'"):
        ModelServingManager(enable_mlflow=True, mlflow_experiment="nba_serving")


def test_a_closed_manager_refuses_requests(model, games):
    X = games.iloc[:3]
    with ModelServingManager() as manager:
        assert manager.deploy_model("nba_model", "v1.0", model)
        assert_close(manager.predict("nba_model", X), positive(model, X))

    with pytest.raises(ServerClosedError):
        manager.predict("nba_model", X)
    with pytest.raises(ServerClosedError):
        manager.get_all_models_status()
    assert manager.deploy_model("nba_model", "v2.0", model) is False
    manager.close()  # a second close is harmless


def wait_for(condition: Any, timeout: float = 10.0) -> None:
    """Poll ``condition`` from this thread while the manager's loop thread works."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.001)


def test_close_answers_the_requests_other_threads_are_waiting_on(model, games):
    manager = ModelServingManager()
    assert manager.deploy_model("nba_model", "v1.0", model)
    deployment = manager.server.get_deployment("nba_model")
    fault = FaultInjectingRuntime(deployment.runtime)
    deployment.runtime = fault
    fault.hang()
    expected = positive(model, games.iloc[:4])

    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [
            pool.submit(manager.predict, "nba_model", games.iloc[i : i + 1]) for i in range(4)
        ]
        wait_for(lambda: deployment.batcher.statistics().queued_requests == 3)  # one runs
        closer = threading.Thread(target=manager.close)
        closer.start()
        wait_for(lambda: deployment.batcher.closing)
        with pytest.raises(ServerClosedError):
            manager.predict("nba_model", games.iloc[:1])
        fault.release()
        closer.join(timeout=10)
        answers = [future.result(timeout=10) for future in futures]

    assert not closer.is_alive()
    assert_close(np.concatenate(answers), expected)


def test_a_manager_never_closed_does_not_hang_interpreter_exit():
    script = textwrap.dedent(
        """
        import numpy as np
        from sklearn.linear_model import LogisticRegression
        from turnout import ModelServingManager

        X = np.random.default_rng(0).normal(size=(50, 3))
        model = LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))
        manager = ModelServingManager()
        assert manager.deploy_model("m", "v1", model)
        print(manager.predict("m", X[:2]).shape)
        """
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout == "(2,)\n"
    assert done.stderr == ""
