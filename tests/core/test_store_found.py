"""Model directories put in the repository by hand: just ``<model>/<version>/model.onnx``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType, Int64TensorType
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from turnout import ModelServer
from turnout.core.state.repository import natural_key

MODEL = "found"


def server(repository: Path) -> ModelServer:
    return ModelServer(repository=repository, entry_points=False, seed=0)


def drop(repository: Path, model_id: str, version: str, onnx: bytes) -> Path:
    """Put a model.onnx in the repository as a user would, with nothing beside it."""
    directory = repository / model_id / version
    directory.mkdir(parents=True)
    (directory / "model.onnx").write_bytes(onnx)
    return directory


@pytest.fixture(scope="module")
def plain_onnx(logistic_model: Any) -> bytes:
    """skl2onnx's defaults: one [N, 30] input, and a ZipMap on the probabilities."""
    proto = convert_sklearn(logistic_model, initial_types=[("X", FloatTensorType([None, 30]))])
    return bytes(proto.SerializeToString())


@pytest.fixture(scope="module")
def columns() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(rng.normal(size=(200, 3)), columns=["age", "income", "visits"])
    frame["visits"] = rng.integers(0, 20, 200)
    return frame


@pytest.fixture(scope="module")
def per_column_model(columns: pd.DataFrame) -> Any:
    target = (columns.age + columns.visits / 10 > 1).astype(int)
    transform = ColumnTransformer([("scaled", StandardScaler(), list(columns.columns))])
    return make_pipeline(transform, LogisticRegression()).fit(columns, target)


def per_column_onnx(model: Any, types: list[Any]) -> bytes:
    """One [N, 1] input per column, as skl2onnx converts a DataFrame pipeline."""
    names = ["age", "income", "visits"]
    proto = convert_sklearn(model, initial_types=list(zip(names, types, strict=True)))
    return bytes(proto.SerializeToString())


async def test_a_dropped_model_is_served_with_defaults_and_then_recorded(
    tmp_path: Path, plain_onnx: bytes, logistic_model: Any, binary_data: Any
) -> None:
    directory = drop(tmp_path, MODEL, "v1", plain_onnx)
    rows = binary_data.X_test.to_numpy()[:10]
    async with server(tmp_path) as first:
        assert dict(first.active_models) == {MODEL: "v1"}
        got = await first.predict(MODEL, rows)
        status = first.get_all_models_status()[MODEL]["v1"]
    np.testing.assert_allclose(got, logistic_model.predict_proba(rows)[:, 1], atol=1e-4)
    assert status["features"] == []
    assert status["output"] == "auto"
    assert status["metadata"] == {}
    # Recorded after it deployed: the file the user dropped stays as it was.
    assert (directory / "model.onnx").read_bytes() == plain_onnx
    stored = json.loads((directory / "deployment.json").read_text())
    assert stored["features"] is None
    assert stored["deployed_at"] == status["deployed_at"]
    assert (tmp_path / MODEL / "model.json").is_file()
    async with server(tmp_path) as second:
        restored = second.get_all_models_status()[MODEL]["v1"]
        np.testing.assert_allclose(await second.predict(MODEL, rows), got, rtol=1e-6)
    for key in ("deployed_at", "batching", "source", "output", "features"):
        assert restored[key] == status[key], key


@pytest.mark.parametrize(
    "types",
    [
        pytest.param([FloatTensorType([None, 1])] * 3, id="float"),
        pytest.param(
            [DoubleTensorType([None, 1]), FloatTensorType([None, 1]), Int64TensorType([None, 1])],
            id="mixed",
        ),
    ],
)
async def test_a_dropped_model_with_one_input_per_feature_takes_those_features(
    tmp_path: Path, per_column_model: Any, columns: pd.DataFrame, types: list[Any]
) -> None:
    drop(tmp_path, MODEL, "v1", per_column_onnx(per_column_model, types))
    records = columns.iloc[:8].to_dict("records")
    expected = per_column_model.predict_proba(columns.iloc[:8])[:, 1]
    async with server(tmp_path) as first:
        assert first.get_all_models_status()[MODEL]["v1"]["features"] == [
            "age",
            "income",
            "visits",
        ]
        np.testing.assert_allclose(await first.predict(MODEL, records), expected, atol=1e-4)
    async with server(tmp_path) as second:
        np.testing.assert_allclose(await second.predict(MODEL, records), expected, atol=1e-4)


async def test_a_dropped_file_that_is_no_model_is_skipped_and_the_rest_served(
    tmp_path: Path, plain_onnx: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    drop(tmp_path, MODEL, "v1", plain_onnx)
    broken = drop(tmp_path, MODEL, "v2", b"\x08\x07 not a protobuf")
    empty = drop(tmp_path, "nothing", "v1", b"")
    caplog.set_level(logging.WARNING, logger="turnout")
    async with server(tmp_path) as first:
        assert dict(first.active_models) == {MODEL: "v1"}
        assert list(first.get_all_models_status()) == [MODEL]
    assert f"{MODEL}:v2" in caplog.text
    assert "nothing:v1" in caplog.text
    # Left as they were, for the user to fix; tried again at the next start.
    assert not (broken / "deployment.json").exists()
    assert not (empty / "deployment.json").exists()
    assert (broken / "model.onnx").read_bytes() == b"\x08\x07 not a protobuf"


async def test_without_model_json_the_highest_version_in_natural_order_is_active(
    tmp_path: Path, plain_onnx: bytes
) -> None:
    for version in ("2", "10", "9"):
        drop(tmp_path, "triton-style", version, plain_onnx)
    for version in ("v1.9", "v1.10", "v1.2"):
        drop(tmp_path, MODEL, version, plain_onnx)
    async with server(tmp_path) as first:
        assert dict(first.active_models) == {"triton-style": "10", MODEL: "v1.10"}
        await first.set_active_version(MODEL, "v1.2")
    async with server(tmp_path) as second:  # from now on, model.json decides
        assert second.active_models[MODEL] == "v1.2"


async def test_a_stored_model_that_lost_its_model_json_activates_its_highest_version(
    tmp_path: Path, plain_onnx: bytes
) -> None:
    async with server(tmp_path) as first:
        await first.deploy_model(MODEL, "v2", plain_onnx)
        await first.deploy_model(MODEL, "v11", plain_onnx)
    (tmp_path / MODEL / "model.json").unlink()
    async with server(tmp_path) as second:
        assert dict(second.active_models) == {MODEL: "v11"}


async def test_a_dropped_version_joins_a_stored_model_inactive(
    tmp_path: Path, plain_onnx: bytes
) -> None:
    async with server(tmp_path) as first:
        await first.deploy_model(MODEL, "v1", plain_onnx)
    drop(tmp_path, MODEL, "v2", plain_onnx)
    async with server(tmp_path) as second:
        assert dict(second.active_models) == {MODEL: "v1"}
        assert set(second.get_all_models_status()[MODEL]) == {"v1", "v2"}
    assert (tmp_path / MODEL / "v2" / "deployment.json").is_file()


def test_natural_order() -> None:
    names = ["v10", "v9", "v1.10", "v1.9", "v01", "v1", "2", "10", "v1a", "a"]
    assert sorted(names, key=natural_key) == [
        "a",
        "v01",
        "v1",
        "v1.9",
        "v1.10",
        "v1a",
        "v9",
        "v10",
        "2",
        "10",
    ]


async def test_a_read_only_repository_is_served_all_the_same(
    tmp_path: Path,
    plain_onnx: bytes,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    drop(tmp_path, MODEL, "v1", plain_onnx)

    def read_only(path: Path, data: bytes) -> None:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr("turnout.core.state.repository.atomic_write", read_only)
    caplog.set_level(logging.WARNING, logger="turnout")
    async with server(tmp_path) as first:
        assert dict(first.active_models) == {MODEL: "v1"}
        assert (await first.predict(MODEL, np.zeros((1, 30)))).shape == (1,)
    assert "Read-only" in caplog.text
    assert not (tmp_path / MODEL / "v1" / "deployment.json").exists()
