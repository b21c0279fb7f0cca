"""Deploying from MLflow: models:/name/N, models:/name@alias and runs:/ URIs, for real.

Each test logs a model into a SQLite tracking store, registers it, deploys it
by URI, and checks the predictions against the original model's.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest
from skl2onnx import to_onnx

from turnout import ConversionError, InvalidConfigError, ModelServer, ModelServingManager
from turnout.core.execution.model_uris import MlflowSource, is_mlflow_uri


def _log_onnx(tracking: Any, model: Any, X: Any, name: str) -> str:
    """Log ``model`` converted to ONNX, with a column signature, and register it; return its run."""
    import mlflow
    import mlflow.onnx
    from mlflow.models import infer_signature

    proto = to_onnx(model, X.to_numpy()[:1].astype(np.float32), options={"zipmap": False})
    signature = infer_signature(X.astype(np.float32), model.predict_proba(X))
    with mlflow.start_run(experiment_id=tracking.experiment_id) as run:
        mlflow.onnx.log_model(
            proto,
            name="model",
            signature=signature,
            pip_requirements=["onnxruntime"],
            registered_model_name=name,
        )
    return str(run.info.run_id)


def _log_sklearn(tracking: Any, model: Any, X: Any, name: str | None = None) -> str:
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    with mlflow.start_run(experiment_id=tracking.experiment_id) as run:
        mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(X, model.predict_proba(X)),
            pip_requirements=["scikit-learn"],
            registered_model_name=name,
        )
    return str(run.info.run_id)


def _registered_name(tracking: Any, stem: str) -> str:
    return f"{stem}_{tracking.experiment}"


def test_is_mlflow_uri_knows_the_registry_and_run_schemes() -> None:
    assert is_mlflow_uri("models:/cancer/3")
    assert is_mlflow_uri("models:/cancer@champion")
    assert is_mlflow_uri("runs:/0123abc/model")
    assert not is_mlflow_uri("model.onnx")
    assert not is_mlflow_uri("s3://bucket/model")
    assert not is_mlflow_uri(b"models:/x/1")


async def test_onnx_flavor_deploys_by_version_and_alias_with_equal_predictions(
    tracking: Any, binary_model: Any, binary_data: Any
) -> None:
    name = _registered_name(tracking, "cancer")
    _log_onnx(tracking, binary_model, binary_data.X_train, name)
    tracking.client.set_registered_model_alias(name, "champion", "1")
    expected = binary_model.predict_proba(binary_data.X_test)[:, 1]
    async with ModelServer(entry_points=False) as server:
        by_version = await server.deploy_model("cancer", "v1", f"models:/{name}/1")
        by_alias = await server.deploy_model("cancer", "v2", f"models:/{name}@champion")
        # The signature's column names: dict inputs work as for a scikit-learn model.
        assert by_version.schema.feature_names == tuple(binary_data.features)
        assert by_alias.loaded.source == f"models:/{name}@champion (onnx)"
        for version in ("v1", "v2"):
            got = await server.predict("cancer", binary_data.records(), version=version)
            np.testing.assert_allclose(got, expected, atol=1e-5)


async def test_an_mlflow_source_resolves_strictly_through_the_python_api(
    tracking: Any, binary_model: Any, binary_data: Any
) -> None:
    name = _registered_name(tracking, "strict")
    run_id = _log_onnx(tracking, binary_model, binary_data.X_train, name)
    tracking.client.set_registered_model_alias(name, "champion", "1")
    expected = binary_model.predict_proba(binary_data.X_test)[:, 1]
    async with ModelServer(entry_points=False) as server:
        for version, uri in (("v1", f"models:/{name}@champion"), ("v2", f"runs:/{run_id}/model")):
            source = MlflowSource(uri, registry_only=True, tracking_uri=tracking.uri)
            deployment = await server.deploy_model("cancer", version, source)
            assert deployment.loaded.source == f"{uri} (onnx)"
            assert deployment.schema.feature_names == tuple(binary_data.features)
            got = await server.predict("cancer", binary_data.records(), version=version)
            np.testing.assert_allclose(got, expected, atol=1e-5)
        with pytest.raises(ConversionError, match="name a version number or an alias"):
            await server.deploy_model("cancer", "v3", MlflowSource(f"models:/{name}/latest", True))


async def test_sklearn_flavor_needs_allow_pickle(
    tracking: Any, binary_model: Any, binary_data: Any
) -> None:
    name = _registered_name(tracking, "pickled")
    run_id = _log_sklearn(tracking, binary_model, binary_data.X_train, name)
    expected = binary_model.predict_proba(binary_data.X_test)[:, 1]
    async with ModelServer(entry_points=False) as server:
        with pytest.raises(ConversionError, match="allow_pickle=True"):
            await server.deploy_model("cancer", "v1", f"models:/{name}/1")
        assert "cancer" not in server.active_models
        deployment = await server.deploy_model(
            "cancer", "v1", f"runs:/{run_id}/model", allow_pickle=True
        )
        # Converted to ONNX like any fitted estimator, and served by ONNX Runtime.
        assert deployment.loaded.onnx_bytes is not None
        assert deployment.loaded.source.startswith(f"runs:/{run_id}/model (sklearn:")
        got = await server.predict("cancer", binary_data.records())
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_manager_deploys_from_the_registry(
    tracking: Any, binary_model: Any, binary_data: Any
) -> None:
    name = _registered_name(tracking, "managed")
    _log_onnx(tracking, binary_model, binary_data.X_train, name)
    with ModelServingManager() as manager:
        assert manager.deploy_model("cancer", "v1", f"models:/{name}/1", set_active=True)
        got = manager.predict("cancer", binary_data.records(5))
        np.testing.assert_allclose(
            got, binary_model.predict_proba(binary_data.X_test.iloc[:5])[:, 1], atol=1e-5
        )
        # A pickle is refused through the sync API too: False, the reason logged.
        run_id = _log_sklearn(tracking, binary_model, binary_data.X_train)
        assert not manager.deploy_model("cancer", "v2", f"runs:/{run_id}/model")


async def test_unknown_models_and_runs_are_conversion_errors(tracking: Any) -> None:
    async with ModelServer(entry_points=False) as server:
        with pytest.raises(ConversionError, match="cannot fetch 'models:/nothing_here/1'"):
            await server.deploy_model("m", "v1", "models:/nothing_here/1")
        with pytest.raises(ConversionError, match="runs:/0123456789abcdef/model"):
            await server.deploy_model("m", "v1", "runs:/0123456789abcdef/model")
        assert not server.active_models


async def test_without_mlflow_a_uri_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules is how Python itself marks a module as not importable.
    monkeypatch.setitem(sys.modules, "mlflow", None)
    async with ModelServer(entry_points=False) as server:
        with pytest.raises(InvalidConfigError, match=r"pip install 'turnout\[mlflow\]'"):
            await server.deploy_model("m", "v1", "models:/cancer/1")


def test_without_mlflow_enable_mlflow_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(InvalidConfigError, match=r"pip install 'turnout\[mlflow\]'"):
        ModelServingManager(enable_mlflow=True, mlflow_experiment="nba_serving")


def _log_model_dir(tracking: Any, tmp_path: Any, mlmodel: str, files: dict[str, bytes]) -> str:
    """Log a hand-written MLflow model directory as a run's ``model`` artifact."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "MLmodel").write_text(mlmodel)
    for name, data in files.items():
        (model_dir / name).write_bytes(data)
    run = tracking.client.create_run(tracking.experiment_id)
    tracking.client.log_artifacts(run.info.run_id, str(model_dir), "model")
    return str(run.info.run_id)


async def test_an_onnx_flavor_cannot_point_outside_its_model(
    tracking: Any, tmp_path: Any, binary_model: Any, binary_data: Any
) -> None:
    # MLmodel is registry data: a path in it must not reach the rest of the disk.
    outside = tmp_path / "outside.onnx"
    outside.write_bytes(
        to_onnx(binary_model, binary_data.X_train.to_numpy()[:1]).SerializeToString()
    )
    mlmodel = f"flavors:\n  onnx:\n    data: ../../../../{outside}\n"
    run_id = _log_model_dir(tracking, tmp_path, mlmodel, {})
    async with ModelServer(entry_points=False) as server:
        with pytest.raises(ConversionError, match="is not in the model"):
            await server.deploy_model("m", "v1", f"runs:/{run_id}/model")


async def test_a_model_without_onnx_or_sklearn_flavor_is_refused(
    tracking: Any, tmp_path: Any
) -> None:
    mlmodel = "flavors:\n  python_function:\n    loader_module: my_loader\n"
    run_id = _log_model_dir(tracking, tmp_path, mlmodel, {"my_loader.py": b"raise SystemExit\n"})
    async with ModelServer(entry_points=False) as server:
        with pytest.raises(ConversionError, match=r"no onnx or sklearn flavor \(its flavors: "):
            await server.deploy_model("m", "v1", f"runs:/{run_id}/model")
