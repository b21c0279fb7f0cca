"""Deploying XGBoost and LightGBM models: served results match the libraries' own.

Every test goes through a real ModelServer: skl2onnx converts with
onnxmltools' converters, ONNX Runtime runs, and the results are compared
with the model's own ``predict_proba`` / ``predict`` on 1,000 held-out rows.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

import lightgbm
import numpy as np
import pandas as pd
import pytest
import xgboost
from sklearn.datasets import make_classification, make_regression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from turnout import ConversionError, ModelServer
from turnout.core.execution import boosting

# Inputs are float32 on both sides; both libraries' trees and ONNX Runtime's
# agree to about 1e-7 on probabilities and on these regression targets.
ATOL = 1e-5
ROWS = 1000

Frames = tuple[pd.DataFrame, np.ndarray[Any, Any], pd.DataFrame]

CLASSIFIERS: dict[str, Callable[[], Any]] = {
    "xgboost": lambda: xgboost.XGBClassifier(n_estimators=30, max_depth=4, random_state=0),
    "lightgbm": lambda: lightgbm.LGBMClassifier(n_estimators=30, random_state=0, verbose=-1),
}
REGRESSORS: dict[str, Callable[[], Any]] = {
    "xgboost": lambda: xgboost.XGBRegressor(n_estimators=30, max_depth=4, random_state=0),
    "lightgbm": lambda: lightgbm.LGBMRegressor(n_estimators=30, random_state=0, verbose=-1),
}


def _frames(X: np.ndarray[Any, Any], y: np.ndarray[Any, Any], names: list[str]) -> Frames:
    """Train frame, train target and test frame, float32, named columns."""
    frame = pd.DataFrame(X.astype(np.float32), columns=names)
    return frame.iloc[:ROWS], y[:ROWS], frame.iloc[ROWS:].reset_index(drop=True)


def _names(n: int) -> list[str]:
    # Not f0, f1, ...: XGBoost's names are not what onnxmltools' converter reads.
    return [f"feature_{i}" for i in range(n)]


@pytest.fixture(scope="module")
def binary() -> Frames:
    X, y = make_classification(2 * ROWS, n_features=8, n_informative=5, random_state=0)
    return _frames(X, y, _names(8))


@pytest.fixture(scope="module")
def multiclass() -> Frames:
    X, y = make_classification(2 * ROWS, n_features=8, n_informative=5, n_classes=3, random_state=1)
    return _frames(X, y, _names(8))


@pytest.fixture(scope="module")
def regression() -> Frames:
    X, y = make_regression(2 * ROWS, n_features=8, n_informative=5, noise=0.1, random_state=2)
    # Targets of a few units: float32 outputs carry about 7 significant digits,
    # so an absolute 1e-5 means something only at this size.
    return _frames(X, y / 100, _names(8))


def _fitted(make: Callable[[], Any], data: Frames) -> Any:
    X, y, _ = data
    return make().fit(X, y)


@pytest.mark.parametrize("data", ["binary", "multiclass"])
@pytest.mark.parametrize("library", CLASSIFIERS)
async def test_classifier_probabilities_and_labels_match_the_library(
    server: ModelServer, library: str, data: str, request: pytest.FixtureRequest
) -> None:
    frames: Frames = request.getfixturevalue(data)
    model = _fitted(CLASSIFIERS[library], frames)
    X_test = frames[2]
    await server.deploy_model("m", "v1", model)

    result = await server.infer("m", X_test.to_numpy())

    expected = model.predict_proba(X_test)
    assert result.probabilities is not None
    assert result.probabilities.shape == expected.shape
    np.testing.assert_allclose(result.probabilities, expected, rtol=0, atol=ATOL)
    np.testing.assert_array_equal(result.labels, model.predict(X_test))
    # As for scikit-learn's classifiers: the positive class's probability, or all of them.
    auto = expected[:, 1] if data == "binary" else expected
    np.testing.assert_allclose(result.outputs, auto, rtol=0, atol=ATOL)


@pytest.mark.parametrize("form", ["array", "dicts"])
@pytest.mark.parametrize("library", REGRESSORS)
async def test_regressor_values_match_the_library(
    server: ModelServer, regression: Frames, library: str, form: str
) -> None:
    model = _fitted(REGRESSORS[library], regression)
    X_test = regression[2]
    await server.deploy_model("m", "v1", model)

    rows = X_test.to_numpy() if form == "array" else X_test.to_dict("records")
    values = await server.predict("m", rows)

    assert values.shape == (ROWS,)
    np.testing.assert_allclose(values, model.predict(X_test), rtol=0, atol=ATOL)
    assert server.get_all_models_status()["m"]["v1"]["features"] == list(X_test.columns)


@pytest.mark.parametrize("library", CLASSIFIERS)
async def test_pipeline_with_a_booster_last_takes_dicts(
    server: ModelServer, multiclass: Frames, library: str
) -> None:
    X, y, X_test = multiclass
    model = make_pipeline(StandardScaler(), CLASSIFIERS[library]()).fit(X, y)
    await server.deploy_model("m", "v1", model)

    probabilities = await server.predict("m", X_test.to_dict("records"))

    np.testing.assert_allclose(probabilities, model.predict_proba(X_test), rtol=0, atol=ATOL)
    assert server.get_all_models_status()["m"]["v1"]["features"] == list(X.columns)


async def test_lightgbm_names_spaces_with_underscores_unless_features_say(
    server: ModelServer, binary: Frames
) -> None:
    X, y, X_test = binary
    spaced = [name.replace("_", " ") for name in X.columns]
    model = CLASSIFIERS["lightgbm"]().fit(X.set_axis(spaced, axis=1), y)
    await server.deploy_model("m", "own", model)
    await server.deploy_model("m", "given", model, features=spaced)

    by_frame_names = X_test.set_axis(spaced, axis=1).to_dict("records")
    served = await server.predict("m", by_frame_names, version="given")

    assert server.get_all_models_status()["m"]["own"]["features"] == list(X.columns)
    expected = model.predict_proba(X_test.set_axis(spaced, axis=1))[:, 1]
    np.testing.assert_allclose(served, expected, rtol=0, atol=ATOL)


async def test_without_the_extra_deploying_says_what_to_install(
    server: ModelServer, binary: Frames, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _fitted(CLASSIFIERS["xgboost"], binary)
    # Nothing registered yet, and onnxmltools not importable: a None entry in
    # sys.modules is how Python itself marks a module as absent.
    monkeypatch.setattr(boosting, "_registered", set())
    for name in [m for m in sys.modules if m == "onnxmltools" or m.startswith("onnxmltools.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "onnxmltools", None)

    with pytest.raises(ConversionError, match=r"pip install 'turnout\[boosting\]'"):
        await server.deploy_model("m", "v1", model)
    assert not server.active_models


async def test_a_ranker_is_refused_by_name(server: ModelServer, binary: Frames) -> None:
    X, y, _ = binary
    ranker = xgboost.XGBRanker(n_estimators=2).fit(X, y, qid=np.arange(ROWS) // 10)

    with pytest.raises(ConversionError, match="XGBRanker is neither a classifier nor a regressor"):
        await server.deploy_model("m", "v1", ranker)


def test_a_started_server_has_not_imported_the_boosting_libraries() -> None:
    script = (
        "import asyncio, sys\n"
        "from turnout import ModelServer\n"
        "async def main():\n"
        "    async with ModelServer():\n"
        "        pass\n"
        "asyncio.run(main())\n"
        "print(sorted({'xgboost', 'lightgbm', 'onnxmltools'} & set(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )

    assert done.stdout.strip() == "[]"
