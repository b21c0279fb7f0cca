"""Real third-party clients, unchanged, against a real server on loopback.

tritonclient in JSON mode (``binary_data=False``: its requests carry no
Content-Type) with its model configuration and statistics calls, and the
KServe Python SDK's REST client over V1 and V2. The binary-mode and
repository legs of tritonclient are in test_binary.py and test_repository.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from web_helpers import assert_close, expect_error


def address(http: Any) -> str:
    """host:port of the test server, as tritonclient takes it."""
    return f"{http.server.host}:{http.server.port}"


async def test_tritonclient_json_infer_config_and_statistics(http, cancer, binary_data) -> None:
    X = binary_data.X_test.iloc[:8].to_numpy().astype(np.float32)
    expected = await cancer.predict("cancer", X)
    before = cancer.get_deployment("cancer", "v1").metrics.requests

    def call() -> dict[str, Any]:
        client = triton.InferenceServerClient(url=address(http))
        try:
            inputs = [triton.InferInput("input", list(X.shape), "FP32")]
            inputs[0].set_data_from_numpy(X, binary_data=False)
            outputs = [
                triton.InferRequestedOutput("label", binary_data=False),
                triton.InferRequestedOutput("probabilities", binary_data=False),
            ]
            return {
                "result": client.infer("cancer", inputs, outputs=outputs),
                "metadata": client.get_model_metadata("cancer"),
                "config": client.get_model_config("cancer"),
                "pinned": client.get_model_config("cancer", model_version="v2"),
                "stats": client.get_inference_statistics("cancer"),
                "all_stats": client.get_inference_statistics(),
                "server": client.get_server_metadata(),
            }
        finally:
            client.close()

    answers = await asyncio.to_thread(call)
    result = answers["result"]
    assert result.get_response()["model_version"] == "v1"
    assert_close(result.as_numpy("probabilities")[:, 1], expected)
    assert result.as_numpy("label").tolist() == (expected > 0.5).astype(int).tolist()

    config = answers["config"]
    name, features = answers["metadata"]["inputs"][0]["name"], len(binary_data.features)
    assert config["input"] == [{"name": name, "data_type": "TYPE_FP32", "dims": [features]}]
    assert [output["name"] for output in config["output"]] == [
        "label",
        "probabilities",
        "predictions",
    ]
    assert config["platform"] == "onnxruntime_onnx"
    assert config["max_batch_size"] == cancer.get_deployment("cancer").batcher.config.max_batch_rows
    assert config["parameters"]["version"] == {"string_value": "v1"}
    assert answers["pinned"]["parameters"] == {
        "version": {"string_value": "v2"},
        "active": {"string_value": "false"},
    }

    stats = {(s["name"], s["version"]): s for s in answers["stats"]["model_stats"]}
    assert set(stats) == {("cancer", "v1"), ("cancer", "v2")}
    v1 = stats[("cancer", "v1")]
    assert v1["inference_stats"]["success"]["count"] == before + 1, v1
    assert v1["inference_stats"]["fail"] == {"count": 0, "ns": 0}
    assert v1["inference_count"] == 16  # rows: predict's 8, then tritonclient's 8
    assert 1 <= v1["execution_count"] <= 2
    assert v1["inference_stats"]["compute_infer"]["ns"] > 0
    assert v1["last_inference"] > 0
    assert stats[("cancer", "v2")]["inference_count"] == 0
    assert answers["all_stats"]["model_stats"] == answers["stats"]["model_stats"]
    assert {"model_configuration", "statistics"} <= set(answers["server"]["extensions"])


async def test_tritonclient_statistics_count_failures(http, cancer) -> None:
    def call() -> tuple[str, dict[str, Any]]:
        client = triton.InferenceServerClient(url=address(http))
        try:
            bad = [triton.InferInput("input", [1, 30], "FP32")]
            bad[0].set_data_from_numpy(np.full((1, 30), np.nan, np.float32), binary_data=False)
            with pytest.raises(triton.InferenceServerException) as refused:
                client.infer("cancer", bad)
            return str(refused.value), client.get_inference_statistics("cancer", "v1")
        finally:
            client.close()

    refused, stats = await asyncio.to_thread(call)
    # Bad input never reaches the model: it counts as neither a success nor a failure.
    assert "NaN" in refused or "nan" in refused.lower(), refused
    assert stats["model_stats"][0]["inference_stats"]["fail"]["count"] == 0


async def test_tritonclient_unknown_model_and_input(http, cancer) -> None:
    def call() -> tuple[str, str]:
        client = triton.InferenceServerClient(url=address(http))
        try:
            with pytest.raises(triton.InferenceServerException) as unknown:
                client.get_model_config("nope")
            wrong = [triton.InferInput("x", [1, 30], "FP32")]
            wrong[0].set_data_from_numpy(np.ones((1, 30), np.float32), binary_data=False)
            with pytest.raises(triton.InferenceServerException) as misnamed:
                client.infer("cancer", wrong)
            return str(unknown.value), str(misnamed.value)
        finally:
            client.close()

    unknown, misnamed = await asyncio.to_thread(call)
    assert "'nope' not found" in unknown
    assert "no input 'x'" in misnamed


@pytest.fixture
async def kserve_client() -> Any:
    """The KServe SDK's V1 REST client; closed after the test."""
    client = InferenceRESTClient(RESTConfig(protocol="v1", retries=0))
    yield client
    await client.close()


async def test_kserve_sdk_v1_liveness_readiness_and_predict(
    http, cancer, binary_data, kserve_client
) -> None:
    base = f"http://{address(http)}"
    assert await kserve_client.is_server_live(base)
    assert await kserve_client.is_model_ready(base, "cancer")
    headers: dict[str, str] = {}
    answer = await kserve_client.infer(
        base,
        {"instances": binary_data.records(3)},
        model_name="cancer",
        response_headers=headers,
    )
    expected = await cancer.predict("cancer", binary_data.records(3))
    assert_close(answer["predictions"], expected)
    assert set(answer) == {"predictions"}  # the V1 body stays as V1 clients read it
    assert headers["model-version"] == "v1"


async def test_kserve_sdk_v2_infer(http, cancer, binary_data) -> None:
    X = binary_data.X_test.iloc[:4].to_numpy().astype(np.float32)
    client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0))
    try:
        base = f"http://{address(http)}"
        assert await client.is_server_live(base)
        assert await client.is_server_ready(base)
        assert await client.is_model_ready(base, "cancer")
        tensor = InferInput("input", list(X.shape), "FP32")
        tensor.set_data_from_numpy(X, binary_data=False)
        response = await client.infer(
            base, InferRequest("cancer", infer_inputs=[tensor]), model_name="cancer"
        )
    finally:
        await client.close()
    expected = await cancer.predict("cancer", X)
    outputs = {output.name: output.as_numpy() for output in response.outputs}
    assert_close(outputs["probabilities"][:, 1], expected)
    assert response.model_name == "cancer"  # the SDK's REST reader drops model_version


async def test_the_version_header_follows_an_ab_split(http, cancer, binary_data) -> None:
    await cancer.setup_ab_test("cancer", ["v1", "v2"], [0.5, 0.5])
    served = set()
    for _ in range(40):
        response = await http.post(
            "/v1/models/cancer:predict", json={"instances": binary_data.records(1)}
        )
        assert response.status == 200
        served.add(response.headers["Model-Version"])
    assert served == {"v1", "v2"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/v1/models/cancer:explain"),
        ("get", "/v2/trace/setting"),
        ("post", "/v2/models/cancer/trace/setting"),
        ("get", "/v2/logging"),
        ("get", "/v2/systemsharedmemory/status"),
        ("get", "/v2/cudasharedmemory/status"),
        ("post", "/v2/models/cancer/generate"),
        ("post", "/v2/repository/index"),
    ],
)
async def test_client_calls_turnout_does_not_serve_are_json_404s(
    http, cancer, method, path
) -> None:
    # docs/http.md, "Client calls turnout does not serve", lists these.
    await expect_error(await getattr(http, method)(path, json={}), 404, "not_found")


@pytest.mark.parametrize(("datatype", "dtype"), [("FP64", np.float64), ("INT64", np.int64)])
@pytest.mark.parametrize("binary", [True, False])
async def test_tritonclient_fp64_and_int64_inputs_with_request_id_and_parameters(
    http, cancer, binary_data, datatype, dtype, binary
) -> None:
    X = np.round(binary_data.X_test.iloc[:4].to_numpy()).astype(dtype)
    expected = await cancer.predict("cancer", X.astype(np.float32))

    def call() -> Any:
        client = triton.InferenceServerClient(url=address(http))
        try:
            inputs = [triton.InferInput("input", list(X.shape), datatype)]
            inputs[0].set_data_from_numpy(X, binary_data=binary)
            outputs = [triton.InferRequestedOutput("probabilities", binary_data=binary)]
            return client.infer(
                "cancer", inputs, outputs=outputs, request_id="rid-9", parameters={"key": "u-1"}
            )
        finally:
            client.close()

    result = await asyncio.to_thread(call)
    assert result.get_response()["id"] == "rid-9"
    assert result.get_response()["parameters"]["request_id"]
    assert_close(result.as_numpy("probabilities")[:, 1], expected)
