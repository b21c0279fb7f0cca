"""Deploying from the MLflow registry through the admin API: onnx flavor only, never a pickle."""

from __future__ import annotations

import asyncio
import base64
import signal
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer
from test_mlflow_sources import _log_onnx, _log_sklearn, _registered_name

from support import read_banner, turnout_serve
from turnout import ModelServer
from turnout.core.convert import load_model
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
