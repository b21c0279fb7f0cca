"""Deploying from the MLflow registry through the admin API: onnx flavor only, never a pickle.

Over HTTP only a tracking server named explicitly is asked, and only the
artifacts it stores for a run or a logged model are read.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer
from skl2onnx import to_onnx
from test_mlflow_sources import _log_onnx, _log_sklearn, _registered_name

from support import read_banner, turnout_serve
from turnout import ModelServer
from turnout.core.execution import model_uris as sources
from turnout.core.execution.convert import load_model
from turnout.plugins.mlflow import MlflowConfig, MlflowTracker
from turnout.web.admin import create_admin_app

TOKEN = "mlflow-admin-token-0123456789"


async def admin_client(server: ModelServer) -> TestClient[Any, Any]:
    client: TestClient[Any, Any] = TestClient(TestServer(create_admin_app(server, token=TOKEN)))
    await client.start_server()
    client.session.headers["Authorization"] = f"Bearer {TOKEN}"
    return client


async def test_an_onnx_registry_model_deploys_by_uri(tracking, binary_model, binary_data) -> None:
    name = _registered_name(tracking, "cancer")
    _log_onnx(tracking, binary_model, binary_data.X_train, name)
    async with ModelServer(entry_points=False) as server:
        client = await admin_client(server)
        try:
            body = {"mlflow_uri": f"models:/{name}/1", "metadata": {"from": "registry"}}
            response = await client.post("/admin/models/cancer/versions/v1", json=body)
            assert response.status == 201, await response.text()
            answer = await response.json()
            assert answer["sha256"] is None
            assert answer["status"]["features"] == binary_data.features
        finally:
            await client.close()
        got = await server.predict("cancer", binary_data.records())
    np.testing.assert_allclose(got, binary_model.predict_proba(binary_data.X_test)[:, 1], atol=1e-5)


async def test_a_pickled_registry_model_is_refused(tracking, binary_model, binary_data) -> None:
    name = _registered_name(tracking, "pickled")
    run_id = _log_sklearn(tracking, binary_model, binary_data.X_train, name)
    async with ModelServer(entry_points=False) as server:
        client = await admin_client(server)
        try:
            for uri in (f"models:/{name}/1", f"runs:/{run_id}/model"):
                body = {"mlflow_uri": uri}
                response = await client.post("/admin/models/m/versions/v1", json=body)
                assert response.status == 422, await response.text()
                assert "allow_pickle" in (await response.json())["error"]
        finally:
            await client.close()
        assert server.get_all_models_status() == {}


@pytest.mark.parametrize(
    "uri",
    [
        "models://profile@databricks/cancer/1",
        "runs:/abc/../../etc/passwd",
        "file:///etc/passwd",
        "/tmp/model.onnx",
        "model.onnx",
        "s3://bucket/model",
        "models:/",
    ],
)
async def test_uris_outside_the_configured_registry_are_refused(uri: str) -> None:
    async with ModelServer(entry_points=False) as server:
        client = await admin_client(server)
        try:
            body = {"mlflow_uri": uri}
            response = await client.post("/admin/models/m/versions/v1", json=body)
            assert response.status == 400, await response.text()
            assert (await response.json())["field"] == "mlflow_uri"
        finally:
            await client.close()


async def test_turnout_serve_tracks_what_the_admin_api_deploys(tracking, binary_model) -> None:

    onnx = base64.b64encode(load_model(binary_model).onnx_bytes or b"").decode()
    env = {"TURNOUT_ADMIN_TOKEN": TOKEN, "MLFLOW_TRACKING_URI": tracking.uri}
    args = ("--no-demo", "--admin-port", "0", "--mlflow-experiment", tracking.experiment)
    async with turnout_serve(*args, env=env) as process:
        banner = await read_banner(process, "/admin/status")
        admin_url = banner[-1].split()[-1].removesuffix("/admin/status")
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            url = f"{admin_url}/admin/models/cancer/versions/v1"
            async with session.post(url, json={"onnx": onnx}) as response:
                assert response.status == 201, await response.text()
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 60) == 0
    run = tracking.runs()["cancer:v1"]
    assert run.data.params["model_id"] == "cancer"


# -- only the tracking server's own artifacts, from a server named explicitly --------------


def _save_onnx(directory: Path, model: Any, X: Any) -> Path:
    """Save ``model`` as an MLflow onnx model directory that deploys anywhere it is found."""
    import mlflow.onnx

    proto = to_onnx(model, X.to_numpy()[:1].astype(np.float32), options={"zipmap": False})
    mlflow.onnx.save_model(proto, str(directory), pip_requirements=["onnxruntime"])
    return directory


async def _deploy(server: ModelServer, uri: str) -> tuple[int, dict[str, Any]]:
    client = await admin_client(server)
    try:
        response = await client.post("/admin/models/m/versions/v1", json={"mlflow_uri": uri})
        return response.status, await response.json()
    finally:
        await client.close()


async def test_without_a_configured_tracking_server_nothing_is_asked_or_created(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert not mlflow.is_tracking_uri_set()
    async with ModelServer(entry_points=False) as server:
        for uri in ("models:/cancer/1", "models:/cancer@champion", "runs:/0a1b2c/model"):
            status, answer = await _deploy(server, uri)
            assert status == 400, answer
            assert answer["code"] == "invalid_config"
            assert "MLFLOW_TRACKING_URI" in answer["error"]
        assert server.get_all_models_status() == {}
    # MLflow's default store would be ./mlflow.db, created by the first question.
    assert os.listdir(tmp_path) == []


async def test_the_trackers_tracking_uri_names_the_server(
    tracking: Any,
    binary_model: Any,
    binary_data: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    name = _registered_name(tracking, "tracked")
    _log_onnx(tracking, binary_model, binary_data.X_train, name)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.chdir(tmp_path)
    config = MlflowConfig(
        experiment=tracking.experiment, tracking_uri=tracking.uri, log_model=False
    )
    tracker = MlflowTracker(config)
    async with ModelServer(plugins=[tracker], entry_points=False) as server:
        status, answer = await _deploy(server, f"models:/{name}/1")
        assert status == 201, answer
    await tracker.aclose()
    assert os.listdir(tmp_path) == []


async def test_a_version_stored_under_its_runs_artifacts_deploys(
    tracking: Any, binary_model: Any, binary_data: Any, tmp_path: Path
) -> None:
    # How MLflow 2 registered a logged model: its source is a path in the run's artifacts.
    client = tracking.client
    run = client.create_run(tracking.experiment_id)
    local = _save_onnx(tmp_path / "model", binary_model, binary_data.X_train)
    client.log_artifacts(run.info.run_id, str(local), "model")
    name = _registered_name(tracking, "stored")
    client.create_registered_model(name)
    source = f"{run.info.artifact_uri}/model"
    client.create_model_version(name, source, run_id=run.info.run_id)
    client.create_model_version(name, f"runs:/{run.info.run_id}/model")
    async with ModelServer(entry_points=False) as server:
        for number in ("1", "2"):
            status, answer = await _deploy(server, f"models:/{name}/{number}")
            assert status == 201, answer
            await server.retire_model("m", "v1")


@pytest.mark.parametrize("form", ["path", "file_uri", "other_run"])
async def test_a_version_whose_source_is_outside_the_artifact_store_is_refused(
    tracking: Any, binary_model: Any, binary_data: Any, tmp_path: Path, form: str
) -> None:
    elsewhere = _save_onnx(tmp_path / "elsewhere", binary_model, binary_data.X_train)
    client = tracking.client
    run_id = client.create_run(tracking.experiment_id).info.run_id
    other = client.create_run(tracking.experiment_id)
    client.log_artifacts(other.info.run_id, str(elsewhere), "model")
    source, version_run = {
        "path": (str(elsewhere), run_id),
        "file_uri": (elsewhere.as_uri(), None),
        # In the artifact store, but not its own run's: the version says which run it is.
        "other_run": (f"{other.info.artifact_uri}/model", run_id),
    }[form]
    name = _registered_name(tracking, "outside")
    client.create_registered_model(name)
    client.create_model_version(name, source, run_id=version_run)
    async with ModelServer(entry_points=False) as server:
        status, answer = await _deploy(server, f"models:/{name}/1")
        assert status == 422, answer
        assert "is not among the artifacts of its run" in answer["error"]
        assert server.get_all_models_status() == {}
        if form == "path":
            # The Python API keeps MLflow's own resolution: the model itself is fine.
            await server.deploy_model("m", "v1", f"models:/{name}/1")


async def test_a_registry_source_naming_a_system_directory_is_refused(tracking: Any) -> None:
    name = _registered_name(tracking, "etc")
    tracking.client.create_registered_model(name)
    tracking.client.create_model_version(name, "file:///etc")
    tracking.client.set_registered_model_alias(name, "champion", "1")
    async with ModelServer(entry_points=False) as server:
        for uri in (f"models:/{name}/1", f"models:/{name}@champion"):
            status, answer = await _deploy(server, uri)
            assert status == 422, answer
            assert "'file:///etc' is not among the artifacts of its run" in answer["error"]


async def test_a_registry_model_larger_than_the_bound_is_refused_before_download(
    tracking: Any, binary_model: Any, binary_data: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = _registered_name(tracking, "large")
    _log_onnx(tracking, binary_model, binary_data.X_train, name)
    # Far below the model's size, rather than a model of over a gibibyte.
    monkeypatch.setattr(sources, "MAX_MODEL_BYTES", 1000)
    async with ModelServer(entry_points=False) as server:
        status, answer = await _deploy(server, f"models:/{name}/1")
    assert status == 422, answer
    assert "is larger than 1000 bytes" in answer["error"]


async def test_a_run_path_without_an_mlflow_model_is_refused(tracking: Any, tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "model.onnx").write_bytes(b"not a model")
    run_id = tracking.client.create_run(tracking.experiment_id).info.run_id
    tracking.client.log_artifacts(run_id, str(notes), "notes")
    async with ModelServer(entry_points=False) as server:
        status, answer = await _deploy(server, f"runs:/{run_id}/notes")
    assert status == 422, answer
    assert "lists no MLmodel file" in answer["error"]


# -- comparisons ---------------------------------------------------------------------------


async def test_a_comparison_over_http_is_logged_on_both_runs(
    tracking: Any, binary_model: Any, binary_model_v2: Any, binary_data: Any
) -> None:
    tracker = MlflowTracker(MlflowConfig(experiment=tracking.experiment, log_model=False))
    async with ModelServer(plugins=[tracker], entry_points=False, seed=0) as server:
        await server.deploy_model("cancer", "v1", binary_model)
        await server.deploy_model("cancer", "v2", binary_model_v2, set_active=False)
        await server.setup_ab_test("cancer", ["v1", "v2"], [0.5, 0.5])
        for i in range(40):
            result = await server.infer("cancer", binary_data.records(1))
            await server.record_outcome("cancer", result.request_id, float(i % 2))
        client = await admin_client(server)
        try:
            response = await client.get("/admin/models/cancer/compare?a=v1&b=v2")
            assert response.status == 200, await response.text()
            comparison = await response.json()
        finally:
            await client.close()
    stats = await tracker.aclose()
    assert (stats.pending, stats.failed, stats.dropped) == (0, 0, 0)
    runs = tracking.runs()
    for name in ("cancer:v1", "cancer:v2"):
        run = runs[name]
        assert run.data.metrics["ab.v1_vs_v2.difference"] == pytest.approx(comparison["difference"])
        assert run.data.tags["ab.v1_vs_v2.verdict"] == comparison["verdict"]
