"""The V2 model repository extension on the admin API: index, load and unload."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
import tritonclient.http as triton
from web_helpers import ADMIN_TOKEN, expect_error

from turnout import ModelServer

LOAD = "/v2/repository/models/cancer/load"


def files(**versions: str) -> dict[str, Any]:
    """A load request's parameters: one ``file:<version>/model.onnx`` per version."""
    return {f"file:{version}/model.onnx": onnx for version, onnx in versions.items()}


async def test_load_deploys_the_files_sent_and_index_lists_them(
    admin, server: ModelServer, cancer_onnx, binary_data
) -> None:
    config = json.dumps({"features": binary_data.features, "metadata": {"by": "load"}})
    body = {"parameters": {**files(v1=cancer_onnx, v2=cancer_onnx), "config": config}}
    response = await admin.post(LOAD, json=body)
    assert response.status == 200, await response.text()
    assert await response.json() == {"name": "cancer", "versions": ["v1", "v2"]}
    assert server.get_deployment("cancer", "v2").metadata == {"by": "load"}
    assert await server.predict("cancer", binary_data.records(2)) is not None

    index = await (await admin.post("/v2/repository/index")).json()
    assert index == [
        {"name": "cancer", "version": "v1", "state": "READY"},
        {"name": "cancer", "version": "v2", "state": "READY"},
    ]
    # Loading again replaces, as Triton's reload does; without files it is a no-op.
    assert (await admin.post(LOAD, json={"parameters": files(v2=cancer_onnx)})).status == 200
    assert (await admin.post(LOAD)).status == 200


async def test_unload_retires_every_version_whatever_the_routing(
    admin, server: ModelServer, cancer_onnx
) -> None:
    await admin.post(LOAD, json={"parameters": files(v1=cancer_onnx, v2=cancer_onnx)})
    weighted = {"strategy": "weighted", "params": {"versions": ["v1", "v2"], "weights": [1, 1]}}
    assert (await admin.put("/admin/models/cancer/routing", json=weighted)).status == 200
    assert (await admin.put("/admin/models/cancer/fallback", json={"version": "v2"})).status == 200

    response = await admin.post("/v2/repository/models/cancer/unload")
    assert response.status == 200, await response.text()
    assert server.get_all_models_status() == {}
    assert await (await admin.post("/v2/repository/index")).json() == []
    await expect_error(
        await admin.post("/v2/repository/models/cancer/unload"), 404, "model_not_found"
    )


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"parameters": {"file:v1/model.pkl": "AA=="}}, "invalid_request"),
        ({"parameters": {"file:../v1/model.onnx": "AA=="}}, "invalid_request"),
        ({"parameters": {"file:v1/../../model.onnx": "AA=="}}, "invalid_request"),
        ({"parameters": {"file:.v1/model.onnx": "AA=="}}, "invalid_name"),
        ({"parameters": {"config": "{}"}}, "invalid_request"),
        ({"parameters": {"config": "{", "file:v1/model.onnx": "AA=="}}, "invalid_request"),
        ({"parameters": {"config": {"features": []}}}, "invalid_request"),
        ({"parameters": {"config": '{"replace": false}'}}, "invalid_request"),
        ({"parameters": []}, "invalid_request"),
        ({"parameters": {"file:v1/model.onnx": "%%%"}}, "invalid_request"),
    ],
)
async def test_bad_loads_are_client_errors(admin, server, body, code) -> None:
    await expect_error(await admin.post(LOAD, json=body), 400, code)
    assert server.get_all_models_status() == {}


async def test_a_load_names_no_runtime(admin, server, cancer_onnx) -> None:
    # A load deploys ONNX files, and only ONNX: no config can ask for Python.
    config = json.dumps({"runtime": "python"})
    body = {"parameters": {"config": config, **files(v1=cancer_onnx)}}
    error = await expect_error(await admin.post(LOAD, json=body), 400, "invalid_request")
    assert error["field"] == "parameters.config.runtime"
    assert server.get_all_models_status() == {}


async def test_a_load_of_an_unknown_model_without_files_is_404(admin) -> None:
    await expect_error(await admin.post(LOAD), 404, "model_not_found")
    await expect_error(
        await admin.post("/v2/repository/index", json={"ready": "yes"}), 400, "invalid_request"
    )
    await expect_error(
        await admin.post("/v2/repository/index", data=b"x", headers={"Content-Type": "text/plain"}),
        415,
        "unsupported_media_type",
    )


async def test_tritonclient_drives_the_repository(make_admin, server, cancer_onnx) -> None:
    client_app = await make_admin()
    url = f"{client_app.server.host}:{client_app.server.port}"
    await server.deploy_model("cancer", "v1", base64.b64decode(cancer_onnx))
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    def call() -> tuple[Any, Any, str]:
        client = triton.InferenceServerClient(url=url)
        try:
            index = client.get_model_repository_index(headers=headers)
            client.load_model("cancer", headers=headers)
            client.unload_model("cancer", headers=headers)
            after = client.get_model_repository_index(headers=headers)
            try:
                client.get_model_repository_index()
            except triton.InferenceServerException as exc:
                refused = str(exc)
            return index, after, refused
        finally:
            client.close()

    index, after, refused = await asyncio.to_thread(call)
    assert index == [{"name": "cancer", "version": "v1", "state": "READY"}]
    assert after == []
    assert "admin token" in refused


async def test_a_load_with_one_bad_file_deploys_none(admin, server: ModelServer, cancer_onnx):
    junk = base64.b64encode(b"not a model").decode()
    body = {"parameters": files(a1=cancer_onnx, b1=junk)}
    await expect_error(await admin.post(LOAD, json=body), 422, "conversion_failed")
    assert server.get_all_models_status() == {}
