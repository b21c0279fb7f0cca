"""Fixtures shared by every test: small real models trained on scikit-learn's bundled data."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import Phase, settings
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.ensemble import (
    GradientBoostingClassifier,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from services import RedisServer
from turnout import ModelServer, ModelServingManager
from turnout.core.clock import FakeClock

# Property tests run real models, which a loaded CI machine can slow past
# hypothesis's per-example deadline; in CI they are also derandomized, so a
# run that passed here passes there (exploration happens in development),
# and skip the explain phase, whose import of libcst warns under -W error.
settings.register_profile("dev", deadline=None)
settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@dataclass(frozen=True)
class Dataset:
    """A train/test split; ``X_*`` are DataFrames with named columns."""

    X_train: pd.DataFrame
    X_test: pd.DataFrame
    y_train: np.ndarray[Any, Any]
    y_test: np.ndarray[Any, Any]

    @property
    def features(self) -> list[str]:
        return [str(c) for c in self.X_train.columns]

    def records(self, n: int | None = None) -> list[dict[str, float]]:
        """Test rows as a list of dicts keyed by feature name."""
        frame = self.X_test if n is None else self.X_test.iloc[:n]
        return frame.to_dict("records")  # type: ignore[return-value]


def _split(X: pd.DataFrame, y: Any) -> Dataset:
    X_train, X_test, y_train, y_test = train_test_split(X, np.asarray(y), random_state=0)
    return Dataset(X_train, X_test, y_train, y_test)


@pytest.fixture(scope="session")
def binary_data() -> Dataset:
    """Breast cancer: 30 features, two classes."""
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    return _split(X, y)


@pytest.fixture(scope="session")
def multiclass_data() -> Dataset:
    """Iris: 4 features, three classes."""
    X, y = load_iris(return_X_y=True, as_frame=True)
    return _split(X, y)


@pytest.fixture(scope="session")
def regression_data() -> Dataset:
    """Diabetes: 10 features, a continuous target."""
    X, y = load_diabetes(return_X_y=True, as_frame=True)
    return _split(X, y)


@pytest.fixture(scope="session")
def tabular_data() -> Dataset:
    """Diabetes with two string columns, as tabular data comes: ``sex`` and ``bmi_band``.

    The target is whether progression is above the median (see tabular_classifier).
    """
    X, y = load_diabetes(return_X_y=True, as_frame=True, scaled=False)
    X = X.assign(
        sex=np.where(X["sex"] == 1, "female", "male"),
        bmi_band=pd.cut(X["bmi"], [0, 25, 30, 100], labels=["normal", "over", "obese"]).astype(str),
    )
    return _split(X.drop(columns=["bmi"]), y)


def _tabular_pipeline(data: Dataset, unknown: str, head: Any) -> Any:
    strings = ["sex", "bmi_band"]
    numbers = [name for name in data.features if name not in strings]
    encode = ColumnTransformer(
        [
            ("strings", OneHotEncoder(handle_unknown=unknown), strings),
            ("numbers", StandardScaler(), numbers),
        ]
    )
    return Pipeline([("encode", encode), ("model", head)])


@pytest.fixture(scope="session")
def tabular_classifier(tabular_data: Dataset) -> Any:
    """One-hot strings and scaled numbers into a LogisticRegression; unknown categories refused."""
    model = _tabular_pipeline(tabular_data, "error", LogisticRegression(max_iter=1000))
    return model.fit(tabular_data.X_train, tabular_data.y_train > np.median(tabular_data.y_train))


@pytest.fixture(scope="session")
def tabular_regressor(tabular_data: Dataset) -> Any:
    """The same encoding + Ridge on the raw target; unknown categories are ignored (all zeros)."""
    model = _tabular_pipeline(tabular_data, "ignore", Ridge())
    return model.fit(tabular_data.X_train, tabular_data.y_train)


@pytest.fixture(scope="session")
def binary_model(binary_data: Dataset) -> Any:
    """A fitted StandardScaler + LogisticRegression pipeline on the breast cancer data."""
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    return model.fit(binary_data.X_train, binary_data.y_train)


@pytest.fixture(scope="session")
def binary_model_v2(binary_data: Dataset) -> Any:
    """Another version of ``binary_model``: same features, stronger regularization."""
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=1000))
    return model.fit(binary_data.X_train, binary_data.y_train)


# Models fitted on plain arrays (no feature names): they take rows as lists or
# 2-D arrays, and dicts only when deployed with features=[...].


@pytest.fixture(scope="session")
def logistic_model(binary_data: Dataset) -> LogisticRegression:
    """A LogisticRegression on the unscaled breast cancer data, fitted on an ndarray.

    newton-cholesky converges on unscaled features in a few steps; lbfgs takes thousands.
    """
    model = LogisticRegression(solver="newton-cholesky")
    return model.fit(binary_data.X_train.to_numpy(), binary_data.y_train)


@pytest.fixture(scope="session")
def forest_model(binary_data: Dataset) -> RandomForestClassifier:
    """A 21-tree RandomForestClassifier on the breast cancer data, fitted on an ndarray.

    An odd number of trees never ties: at a 50/50 vote the label would hang on
    float32 rounding, which in ONNX Runtime depends on batch size and threads.
    """
    model = RandomForestClassifier(n_estimators=21, random_state=0)
    return model.fit(binary_data.X_train.to_numpy(), binary_data.y_train)


@pytest.fixture(scope="session")
def boosting_model(binary_data: Dataset) -> GradientBoostingClassifier:
    """A 20-stage GradientBoostingClassifier on the breast cancer data, fitted on an ndarray."""
    model = GradientBoostingClassifier(n_estimators=20, random_state=0)
    return model.fit(binary_data.X_train.to_numpy(), binary_data.y_train)


@pytest.fixture(scope="session")
def iris_model(multiclass_data: Dataset) -> LogisticRegression:
    """A three-class LogisticRegression on iris, fitted on an ndarray."""
    model = LogisticRegression(max_iter=1000)
    return model.fit(multiclass_data.X_train.to_numpy(), multiclass_data.y_train)


@pytest.fixture(scope="session")
def forest_regressor(regression_data: Dataset) -> RandomForestRegressor:
    """A 20-tree RandomForestRegressor on the diabetes data, fitted on an ndarray."""
    model = RandomForestRegressor(n_estimators=20, random_state=0)
    return model.fit(regression_data.X_train.to_numpy(), regression_data.y_train)


@pytest.fixture
async def server() -> AsyncIterator[ModelServer]:
    """An in-memory ModelServer, closed after the test."""
    async with ModelServer() as server:
        yield server


@pytest.fixture
def manager() -> Iterator[ModelServingManager]:
    """A ModelServingManager (the synchronous facade), closed after the test."""
    with ModelServingManager() as manager:
        yield manager


@pytest.fixture
def fake_clock() -> FakeClock:
    """A clock that moves only when the test advances it."""
    return FakeClock()


def _running_redis(directory: Path) -> Iterator[RedisServer]:
    server = RedisServer(directory)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port for the whole session (installed if missing)."""
    yield from _running_redis(tmp_path_factory.mktemp("redis"))


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server of this test's own, started: empty, and free to be stopped and started.

    For servers that use the default key prefix (``turnout serve --state``), which
    would meet other tests' models in the session's Redis, and for outages.
    """
    yield from _running_redis(tmp_path / "redis")
