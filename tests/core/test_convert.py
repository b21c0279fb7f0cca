"""Deploying scikit-learn and ONNX models: served results match scikit-learn's own.

Every test goes through a real ModelServer: skl2onnx converts, ONNX Runtime
runs, and predictions are compared with the estimator's on held-out rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import pytest
from skl2onnx import to_onnx
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from turnout import (
    ConversionError,
    InvalidConfigError,
    InvalidInputError,
    ModelNotFoundError,
    ModelServer,
)
from turnout.core.execution.onnx_model import OnnxModel

if TYPE_CHECKING:
    from conftest import Dataset

# ONNX Runtime computes in float32: probabilities agree with scikit-learn's
# float64 ones to about 1e-7, well inside this.
ATOL = 1e-5


def assert_close(actual: Any, expected: Any, **tolerance: float) -> None:
    np.testing.assert_allclose(actual, expected, **({"atol": ATOL} | tolerance))


def float32_onnx(model: Any, n_features: int, **options: Any) -> onnx.ModelProto:
    """Convert as a user deploying ONNX would: float32 rows, ZipMap on unless options say not."""
    return to_onnx(model, np.zeros((1, n_features), dtype=np.float32), **options)


# -- scikit-learn estimators, converted by turnout ----------------------------------------


@pytest.mark.parametrize("fixture", ["logistic_model", "forest_model", "boosting_model"])
async def test_binary_classifier_gives_positive_class_probability(
    server: ModelServer, binary_data: Dataset, fixture: str, request: pytest.FixtureRequest
) -> None:
    model = request.getfixturevalue(fixture)
    X = binary_data.X_test.to_numpy()
    await server.deploy_model("cancer", "v1", model)

    predictions = await server.predict("cancer", X)

    assert predictions.shape == (len(X),)
    assert_close(predictions, model.predict_proba(X)[:, 1])


async def test_pipeline_fitted_on_a_dataframe_takes_dicts_and_frames(
    server: ModelServer, binary_data: Dataset, binary_model: Any
) -> None:
    # binary_model is StandardScaler + LogisticRegression fitted on named columns.
    await server.deploy_model("cancer", "v1", binary_model)
    expected = binary_model.predict_proba(binary_data.X_test)[:, 1]

    from_dicts = await server.predict("cancer", binary_data.records())
    shuffled = binary_data.X_test[binary_data.features[::-1]]
    from_frame = await server.predict("cancer", shuffled)

    assert_close(from_dicts, expected)
    assert_close(from_frame, expected)
    assert server.get_all_models_status()["cancer"]["v1"]["features"] == binary_data.features


async def test_multiclass_classifier_gives_probability_matrix(
    server: ModelServer, multiclass_data: Dataset, iris_model: LogisticRegression
) -> None:
    X = multiclass_data.X_test.to_numpy()
    await server.deploy_model("iris", "v1", iris_model)

    probabilities = await server.predict("iris", X)

    assert probabilities.shape == (len(X), 3)
    assert_close(probabilities, iris_model.predict_proba(X))


async def test_regressor_gives_values(
    server: ModelServer, regression_data: Dataset, forest_regressor: Any
) -> None:
    X = regression_data.X_test.to_numpy()
    await server.deploy_model("diabetes", "v1", forest_regressor)

    values = await server.predict("diabetes", X)

    assert values.shape == (len(X),)
    # Targets run to about 350, where float32's last bit is about 3e-5: compare
    # relatively (float32 carries about 7 significant digits).
    assert_close(values, forest_regressor.predict(X), rtol=1e-6)


@pytest.mark.parametrize(
    ("fixture", "data"), [("forest_model", "binary_data"), ("iris_model", "multiclass_data")]
)
async def test_label_output_equals_predict(
    server: ModelServer, fixture: str, data: str, request: pytest.FixtureRequest
) -> None:
    model = request.getfixturevalue(fixture)
    X = request.getfixturevalue(data).X_test.to_numpy()
    await server.deploy_model("m", "v1", model, output="label")

    labels = await server.predict("m", X)

    np.testing.assert_array_equal(labels, model.predict(X))


async def test_string_class_labels(server: ModelServer, binary_data: Dataset) -> None:
    y = np.where(binary_data.y_train == 1, "benign", "malignant")
    model = RandomForestClassifier(n_estimators=5, random_state=0)
    model.fit(binary_data.X_train.to_numpy(), y)
    X = binary_data.X_test.to_numpy()
    await server.deploy_model("cancer", "v1", model, output="label")

    result = await server.infer("cancer", X)

    np.testing.assert_array_equal(result.labels, model.predict(X))
    assert_close(result.probabilities, model.predict_proba(X))


async def test_probabilities_output_gives_both_columns_for_binary(
    server: ModelServer, binary_data: Dataset, forest_model: RandomForestClassifier
) -> None:
    X = binary_data.X_test.to_numpy()
    await server.deploy_model("cancer", "v1", forest_model, output="probabilities")

    probabilities = await server.predict("cancer", X)

    assert probabilities.shape == (len(X), 2)
    assert_close(probabilities, forest_model.predict_proba(X))


async def test_infer_returns_version_labels_probabilities_and_latency(
    server: ModelServer, binary_data: Dataset, forest_model: RandomForestClassifier
) -> None:
    X = binary_data.X_test.to_numpy()
    await server.deploy_model("cancer", "v1", forest_model)
    await server.deploy_model("cancer", "v2", forest_model, set_active=True)

    result = await server.infer("cancer", X)
    pinned = await server.infer("cancer", X[:3], version="v1")

    assert (result.model_id, result.version, pinned.version) == ("cancer", "v2", "v1")
    assert_close(result.outputs, forest_model.predict_proba(X)[:, 1])
    np.testing.assert_array_equal(result.labels, forest_model.predict(X))
    assert result.probabilities is not None
    assert result.probabilities.shape == (len(X), 2)
    assert_close(result.probabilities, forest_model.predict_proba(X))
    assert result.latency_ms > 0


async def test_infer_on_a_regressor_has_no_labels_or_probabilities(
    server: ModelServer, regression_data: Dataset, forest_regressor: Any
) -> None:
    X = regression_data.X_test.to_numpy()[:5]
    await server.deploy_model("diabetes", "v1", forest_regressor)

    result = await server.infer("diabetes", X)

    assert result.labels is None
    assert result.probabilities is None
    assert_close(result.outputs, forest_regressor.predict(X), rtol=1e-6)


async def test_features_at_deploy_name_an_array_fitted_model(
    server: ModelServer, binary_data: Dataset, forest_model: RandomForestClassifier
) -> None:
    await server.deploy_model("cancer", "v1", forest_model, features=binary_data.features)

    predictions = await server.predict("cancer", binary_data.records())

    assert_close(predictions, forest_model.predict_proba(binary_data.X_test.to_numpy())[:, 1])


# -- ONNX models, deployed as they are --------------------------------------------------


@pytest.fixture(scope="module")
def forest_onnx(forest_model: RandomForestClassifier) -> onnx.ModelProto:
    return float32_onnx(forest_model, forest_model.n_features_in_, options={"zipmap": False})


@pytest.mark.parametrize("form", ["ModelProto", "bytes", "Path", "str path"])
async def test_onnx_model_in_every_form(
    server: ModelServer,
    binary_data: Dataset,
    forest_model: RandomForestClassifier,
    forest_onnx: onnx.ModelProto,
    tmp_path: Path,
    form: str,
) -> None:
    path = tmp_path / "forest.onnx"
    path.write_bytes(forest_onnx.SerializeToString())
    deployable = {
        "ModelProto": forest_onnx,
        "bytes": forest_onnx.SerializeToString(),
        "Path": path,
        "str path": str(path),
    }[form]
    X = binary_data.X_test.to_numpy()
    await server.deploy_model("cancer", "v1", deployable)

    result = await server.infer("cancer", X)

    assert_close(result.outputs, forest_model.predict_proba(X)[:, 1])
    np.testing.assert_array_equal(result.labels, forest_model.predict(X))


@pytest.mark.parametrize("fixture", ["logistic_model", "forest_model"])
async def test_onnx_model_with_zipmap_is_served_as_a_tensor(
    server: ModelServer, binary_data: Dataset, fixture: str, request: pytest.FixtureRequest
) -> None:
    # skl2onnx's default wraps probabilities in a ZipMap (a list of dicts per
    # row); turnout removes it and reads the tensor beneath.
    model = request.getfixturevalue(fixture)
    proto = float32_onnx(model, model.n_features_in_)
    assert any(node.op_type == "ZipMap" for node in proto.graph.node)
    X = binary_data.X_test.to_numpy()
    deployment = await server.deploy_model("cancer", "v1", proto, output="probabilities")

    probabilities = await server.predict("cancer", X)

    assert_close(probabilities, model.predict_proba(X))
    # The class labels, which for a linear model only the ZipMap held, survive.
    np.testing.assert_array_equal(deployment.model.classes_, model.classes_)


async def test_double_precision_onnx_model_with_zipmap(
    server: ModelServer, multiclass_data: Dataset, iris_model: LogisticRegression
) -> None:
    X = multiclass_data.X_test.to_numpy()
    proto = to_onnx(iris_model, X[:1])  # float64 input, float64 probabilities, ZipMap
    await server.deploy_model("iris", "v1", proto)

    probabilities = await server.predict("iris", X)

    assert probabilities.dtype == np.float64
    assert_close(probabilities, iris_model.predict_proba(X))


async def test_features_at_deploy_let_an_onnx_model_take_dicts(
    server: ModelServer,
    binary_data: Dataset,
    forest_model: RandomForestClassifier,
    forest_onnx: onnx.ModelProto,
) -> None:
    await server.deploy_model("named", "v1", forest_onnx, features=binary_data.features)
    await server.deploy_model("unnamed", "v1", forest_onnx)

    predictions = await server.predict("named", binary_data.records())

    assert_close(predictions, forest_model.predict_proba(binary_data.X_test.to_numpy())[:, 1])
    with pytest.raises(InvalidInputError, match="no feature names"):
        await server.predict("unnamed", binary_data.records(2))


async def test_onnx_model_has_the_estimators_face(
    server: ModelServer,
    binary_data: Dataset,
    forest_model: RandomForestClassifier,
    forest_onnx: onnx.ModelProto,
) -> None:
    # When only ONNX was deployed, deployment.model stands in for the estimator
    # (for a health_check_fn, say) with predict, predict_proba and n_features_in_.
    X = binary_data.X_test.to_numpy()
    deployment = await server.deploy_model("cancer", "v1", forest_onnx.SerializeToString())
    model = deployment.model

    assert isinstance(model, OnnxModel)
    assert model.n_features_in_ == forest_model.n_features_in_ == 30
    np.testing.assert_array_equal(model.classes_, forest_model.classes_)
    np.testing.assert_array_equal(model.predict(X), forest_model.predict(X))
    assert_close(model.predict_proba(X), forest_model.predict_proba(X))


async def test_onnx_regressor_has_the_estimators_face(
    server: ModelServer, regression_data: Dataset, forest_regressor: Any
) -> None:
    X = regression_data.X_test.to_numpy()
    proto = float32_onnx(forest_regressor, forest_regressor.n_features_in_)
    model = (await server.deploy_model("diabetes", "v1", proto)).model

    assert model.n_features_in_ == 10
    assert_close(model.predict(X), forest_regressor.predict(X), rtol=1e-6)
    assert not hasattr(model, "predict_proba")  # as for the regressor itself


async def test_deployed_estimator_is_the_deployments_model(
    server: ModelServer, forest_model: RandomForestClassifier
) -> None:
    deployment = await server.deploy_model("cancer", "v1", forest_model)
    assert deployment.model is forest_model


# -- what cannot be deployed ------------------------------------------------------------


class ConstantClassifier(ClassifierMixin, BaseEstimator):
    """A fitted scikit-learn classifier that skl2onnx has no converter for."""

    def fit(self, X: Any, y: Any) -> ConstantClassifier:
        self.classes_ = np.unique(y)
        self.n_features_in_ = np.shape(X)[1]
        return self

    def predict(self, X: Any) -> np.ndarray[Any, Any]:
        return np.full(len(X), self.classes_[0])

    def predict_proba(self, X: Any) -> np.ndarray[Any, Any]:
        return np.tile(np.eye(len(self.classes_))[0], (len(X), 1))


async def assert_nothing_deployed(server: ModelServer, model_id: str) -> None:
    assert model_id not in server.get_all_models_status()
    assert model_id not in server.active_models
    with pytest.raises(ModelNotFoundError):
        await server.predict(model_id, [[0.0] * 30])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: LogisticRegression(), "LogisticRegression is not fitted"),
        (
            lambda: make_pipeline(StandardScaler(), LogisticRegression()),
            r"Pipeline\(StandardScaler, LogisticRegression\) is not fitted",
        ),
        (
            lambda: ConstantClassifier().fit(np.zeros((4, 30)), [0, 1, 0, 1]),
            "skl2onnx cannot convert ConstantClassifier",
        ),
    ],
    ids=["unfitted", "unfitted-pipeline", "no-converter"],
)
async def test_estimator_that_cannot_be_served(
    server: ModelServer, make: Any, message: str
) -> None:
    with pytest.raises(ConversionError, match=message):
        await server.deploy_model("broken", "v1", make())
    await assert_nothing_deployed(server, "broken")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: b"this is not an onnx model", "the bytes given are not an ONNX model"),
        (lambda tmp: b"", "the ONNX model is invalid"),
        (lambda tmp: tmp / "model.pkl", "expected a path to a .onnx file, got 'model.pkl'"),
        (lambda tmp: str(tmp / "missing.onnx"), "no ONNX file at"),
        (lambda tmp: object(), "not object"),
        (lambda tmp: {"coef": [1.0]}, "not dict"),
    ],
    ids=["garbage-bytes", "empty-bytes", "not-onnx-path", "missing-file", "object", "dict"],
)
async def test_thing_that_is_not_a_model(
    server: ModelServer, tmp_path: Path, make: Any, message: str
) -> None:
    (tmp_path / "model.pkl").write_bytes(b"pickle")
    with pytest.raises(ConversionError, match=message):
        await server.deploy_model("broken", "v1", make(tmp_path))
    await assert_nothing_deployed(server, "broken")


async def test_file_with_onnx_suffix_but_garbage_inside(
    server: ModelServer, tmp_path: Path
) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x00garbage\xff" * 10)
    with pytest.raises(ConversionError, match=r"model.onnx is not a readable ONNX model"):
        await server.deploy_model("broken", "v1", path)
    await assert_nothing_deployed(server, "broken")


async def test_onnx_model_with_one_input_per_column(
    server: ModelServer, binary_data: Dataset, binary_model: Any
) -> None:
    # skl2onnx gives a model converted from a DataFrame one input per column.
    proto = to_onnx(binary_model, binary_data.X_train[:1].astype(np.float32))
    with pytest.raises(ConversionError, match="has 30 inputs; turnout serves models with one"):
        await server.deploy_model("cancer", "v1", proto)
    await assert_nothing_deployed(server, "cancer")


@pytest.mark.parametrize("output", ["label", "probabilities"])
async def test_classifier_outputs_for_a_regressor(
    server: ModelServer, forest_regressor: Any, output: str
) -> None:
    with pytest.raises(InvalidConfigError, match=f"output='{output}' needs a classifier"):
        await server.deploy_model("diabetes", "v1", forest_regressor, output=output)
    await assert_nothing_deployed(server, "diabetes")


async def test_unknown_output_mode(server: ModelServer, forest_model: Any) -> None:
    with pytest.raises(InvalidConfigError, match="output must be one of"):
        await server.deploy_model("cancer", "v1", forest_model, output="logits")


async def test_numpy_feature_names_read_as_plain_strings(
    server: ModelServer, binary_data: Dataset, forest_model: Any
) -> None:
    # scikit-learn's datasets give feature_names as a NumPy array of np.str_.
    names = list(np.asarray(binary_data.features))
    deployment = await server.deploy_model("cancer", "v1", forest_model, features=names)

    assert all(type(name) is str for name in deployment.schema.feature_names or ())
    with pytest.raises(InvalidInputError, match=r"feature 'mean radius': expected a number"):
        await server.predict("cancer", [{**binary_data.records(1)[0], "mean radius": "big"}])


async def test_feature_names_that_do_not_fit(server: ModelServer, forest_model: Any) -> None:
    with pytest.raises(ConversionError, match="2 feature names given"):
        await server.deploy_model("cancer", "v1", forest_model, features=["a", "b"])
    with pytest.raises(ConversionError, match="list of feature-name strings"):
        await server.deploy_model("cancer", "v1", forest_model, features="radius")
    await assert_nothing_deployed(server, "cancer")


# -- mock mode: the estimator's own methods, no ONNX ---------------------------------------


@pytest.fixture
async def mock_server() -> AsyncIterator[ModelServer]:
    """A ModelServer in mock mode: estimators run through their own methods."""
    async with ModelServer(mock_mode=True) as server:
        yield server


async def test_mock_mode_runs_the_estimator_itself(
    mock_server: ModelServer, binary_data: Dataset, forest_model: RandomForestClassifier
) -> None:
    X = binary_data.X_test.to_numpy()
    deployment = await mock_server.deploy_model("cancer", "v1", forest_model)

    result = await mock_server.infer("cancer", X)

    assert deployment.loaded.onnx_bytes is None
    np.testing.assert_array_equal(result.outputs, forest_model.predict_proba(X)[:, 1])
    np.testing.assert_array_equal(result.labels, forest_model.predict(X))
    np.testing.assert_array_equal(result.probabilities, forest_model.predict_proba(X))


async def test_mock_mode_with_a_dataframe_fitted_model(
    mock_server: ModelServer, binary_data: Dataset, binary_model: Any
) -> None:
    # The estimator gets a DataFrame with its own column names, so it does not
    # warn "X does not have valid feature names" (pytest turns warnings into errors).
    await mock_server.deploy_model("cancer", "v1", binary_model)
    expected = binary_model.predict_proba(binary_data.X_test)[:, 1]

    from_dicts = await mock_server.predict("cancer", binary_data.records())
    from_frame = await mock_server.predict("cancer", binary_data.X_test)

    # The same float64 model, but the frame turnout builds from the batch need not be laid
    # out like the caller's (pandas 2 copies it column by column), so BLAS may sum in
    # another order: equal to the last bit or two, not exactly.
    np.testing.assert_allclose(from_dicts, expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(from_frame, expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("output", ["label", "probabilities"])
async def test_mock_mode_output_modes(
    mock_server: ModelServer, multiclass_data: Dataset, iris_model: LogisticRegression, output: str
) -> None:
    X = multiclass_data.X_test.to_numpy()
    await mock_server.deploy_model("iris", "v1", iris_model, output=output)

    predictions = await mock_server.predict("iris", X)

    if output == "label":
        np.testing.assert_array_equal(predictions, iris_model.predict(X))
    else:
        # X @ coef on another memory layout than the caller's: BLAS may sum in another order.
        np.testing.assert_allclose(predictions, iris_model.predict_proba(X), rtol=1e-12)


async def test_mock_mode_regressor(
    mock_server: ModelServer, regression_data: Dataset, forest_regressor: Any
) -> None:
    X = regression_data.X_test.to_numpy()
    await mock_server.deploy_model("diabetes", "v1", forest_regressor)

    np.testing.assert_array_equal(
        await mock_server.predict("diabetes", X), forest_regressor.predict(X)
    )


async def test_mock_mode_still_refuses_unfitted_estimators(mock_server: ModelServer) -> None:
    with pytest.raises(ConversionError, match="not fitted"):
        await mock_server.deploy_model("broken", "v1", LogisticRegression())
    await assert_nothing_deployed(mock_server, "broken")


class Threshold:
    """A hand-written classifier, no scikit-learn in it: class 1 when the first feature is > 0."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        self.batches.append(len(X))
        positive = (np.asarray(X)[:, 0] > 0).astype(float)
        return np.column_stack([1 - positive, positive])

    def predict(self, X: np.ndarray) -> np.ndarray:
        return (np.asarray(X)[:, 0] > 0).astype(int)


class Doubler:
    """A hand-written regressor that says how many features it takes."""

    n_features_in_ = 2

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X).sum(axis=1) * 2


async def test_mock_mode_serves_a_hand_written_model_batched(mock_server: ModelServer) -> None:
    model = Threshold()
    deployment = await mock_server.deploy_model("fake", "v1", model, features=["x", "y"])
    model.batches.clear()  # deploying tried the model on one row

    rows = [{"x": float(i - 5), "y": 0.0} for i in range(10)]
    results = await asyncio.gather(*(mock_server.infer("fake", [row]) for row in rows))

    assert deployment.loaded.onnx_bytes is None
    assert [r.labels.tolist() for r in results] == [[int(row["x"] > 0)] for row in rows]
    assert [float(r.outputs[0]) for r in results] == [float(row["x"] > 0) for row in rows]
    assert sum(model.batches) == 10
    assert len(model.batches) < 10  # concurrent requests shared batches


async def test_mock_mode_hand_written_regressor_and_bad_input(mock_server: ModelServer) -> None:
    await mock_server.deploy_model("double", "v1", Doubler())

    np.testing.assert_allclose(await mock_server.predict("double", [[1.0, 2.0]]), [6.0])
    with pytest.raises(InvalidInputError, match="expected 2"):
        await mock_server.predict("double", [[1.0, 2.0, 3.0]])


async def test_mock_mode_needs_to_know_a_hand_written_models_features(
    mock_server: ModelServer,
) -> None:
    with pytest.raises(ConversionError, match="pass features="):
        await mock_server.deploy_model("fake", "v1", Threshold())
    with pytest.raises(ConversionError, match="3 feature names given, but Doubler takes 2"):
        await mock_server.deploy_model("double", "v1", Doubler(), features=["a", "b", "c"])
    await assert_nothing_deployed(mock_server, "fake")


async def test_without_mock_mode_a_hand_written_model_is_refused(server: ModelServer) -> None:
    with pytest.raises(ConversionError, match="runtime='python' serves any object with a predict"):
        await server.deploy_model("fake", "v1", Threshold(), features=["x", "y"])


def matmul_model(n_features: int) -> onnx.ModelProto:
    """A linear regressor written as ONNX by hand: its weights are an initializer tensor."""
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.ones((n_features, 1), dtype=np.float32), "weights")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "weights"], ["y"])],
        "linear",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, n_features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
        initializer=[weights],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


async def test_onnx_bytes_that_point_at_external_files_are_refused(
    server: ModelServer, tmp_path: Path
) -> None:
    path = tmp_path / "model.onnx"
    onnx.save_model(matmul_model(3), str(path), save_as_external_data=True, size_threshold=0)
    detached = onnx.load_model(str(path), load_external_data=False)

    # From bytes, the data file would be looked up relative to the working directory.
    with pytest.raises(ConversionError, match="external data"):
        await server.deploy_model("m", "bytes", detached.SerializeToString())
    with pytest.raises(ConversionError, match="external data"):
        await server.deploy_model("m", "proto", detached)

    # From its own path, the data file beside it is the model's, and loads.
    await server.deploy_model("m", "path", path)
    assert await server.predict("m", [[1.0, 2.0, 3.0]]) == pytest.approx([6.0])


async def test_external_data_inside_a_model_local_function_is_refused(server: ModelServer) -> None:
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.ones((3, 1), dtype=np.float32), "w")
    weights.ClearField("raw_data")
    weights.data_location = TensorProto.EXTERNAL
    weights.external_data.add(key="location", value="../../etc/weights.bin")
    function = helper.make_function(
        "local",
        "Linear",
        ["X"],
        ["y"],
        [
            helper.make_node("Constant", [], ["w"], value=weights),
            helper.make_node("MatMul", ["X", "w"], ["y"]),
        ],
        [helper.make_opsetid("", 17)],
    )
    graph = helper.make_graph(
        [helper.make_node("Linear", ["X"], ["y"], domain="local")],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
    )
    model = helper.make_model(
        graph,
        functions=[function],
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
    )
    with pytest.raises(ConversionError, match="external data"):
        await server.deploy_model("m", "v1", model.SerializeToString())
