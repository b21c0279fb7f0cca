"""Real third-party gRPC clients, unchanged, against turnout's gRPC service on loopback.

tritonclient's blocking gRPC client (``tritonclient.grpc``; its asyncio twin
drives test_grpc_service.py) and the KServe Python SDK's gRPC inference client, in
one process (see triton_grpc.py for how).
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from kserve import InferenceGRPCClient, InferInput, InferRequest
from triton_grpc import triton
from web_helpers import assert_close


async def test_tritonclient_grpc_infer_with_request_id_and_parameters(
    grpc_address, cancer, binary_data
) -> None:
    X = binary_data.X_test.iloc[:5].to_numpy().astype(np.float64)
    expected = await cancer.predict("cancer", X.astype(np.float32))

    def call() -> dict[str, Any]:
        client = triton.InferenceServerClient(url=grpc_address)
        try:
            inputs = [triton.InferInput("input", list(X.shape), "FP64")]
            inputs[0].set_data_from_numpy(X)
            outputs = [triton.InferRequestedOutput("probabilities")]
            result = client.infer(
                "cancer",
                inputs,
                outputs=outputs,
                request_id="abc-1",
                # tritonclient reserves "timeout" (Triton's, in microseconds): the gRPC
                # deadline, client_timeout, bounds the request instead.
                parameters={"key": "user-7"},
                client_timeout=5.0,
            )
            return {
                "result": result,
                "live": client.is_server_live(),
                "ready": client.is_model_ready("cancer"),
                "metadata": client.get_model_metadata("cancer", as_json=True),
            }
        finally:
            client.close()

    answers = await asyncio.to_thread(call)
    result = answers["result"]
    assert result.get_response().id == "abc-1"
    assert_close(result.as_numpy("probabilities")[:, 1], expected)
    assert answers["live"]
    assert answers["ready"]
    assert answers["metadata"]["versions"] == ["v1", "v2"]


async def test_tritonclient_grpc_model_config_and_statistics(
    grpc_address, http, cancer, binary_data
) -> None:
    X = binary_data.X_test.iloc[:5].to_numpy().astype(np.float32)

    def call() -> dict[str, Any]:
        client = triton.InferenceServerClient(url=grpc_address)
        try:
            inputs = [triton.InferInput("input", list(X.shape), "FP32")]
            inputs[0].set_data_from_numpy(X)
            client.infer("cancer", inputs)
            client.infer("cancer", inputs)
            with pytest.raises(triton.InferenceServerException) as unknown:
                client.get_model_config("nope")
            with pytest.raises(triton.InferenceServerException) as unknown_stats:
                client.get_inference_statistics("nope")
            return {
                "config": client.get_model_config("cancer"),
                "config_json": client.get_model_config("cancer", "v2", as_json=True),
                "stats": client.get_inference_statistics("cancer", "v1"),
                "stats_json": client.get_inference_statistics("cancer", as_json=True),
                "unknown": str(unknown.value) + str(unknown_stats.value),
            }
        finally:
            client.close()

    answers = await asyncio.to_thread(call)
    over_http = await (await http.get("/v2/models/cancer/config")).json()
    config = answers["config"].config
    assert (config.name, config.platform, config.max_batch_size) == (
        "cancer",
        over_http["platform"],
        over_http["max_batch_size"],
    )
    assert [(t.name, list(t.dims)) for t in config.input] == [("input", [30])]
    pinned = answers["config_json"]["config"]
    assert pinned["parameters"]["version"] == {"string_value": "v2"}
    assert pinned["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": ["30"]}]

    (v1,) = answers["stats"].model_stats
    (over_http,) = (await (await http.get("/v2/models/cancer/versions/v1/stats")).json())[
        "model_stats"
    ]
    assert (v1.inference_count, v1.execution_count, v1.inference_stats.success.count) == (10, 2, 2)
    assert v1.inference_count == over_http["inference_count"]
    assert v1.inference_stats.success.count == over_http["inference_stats"]["success"]["count"]
    by_version = {s["version"]: s for s in answers["stats_json"]["model_stats"]}
    assert by_version["v1"]["execution_count"] == "2"
    assert "inference_count" not in by_version["v2"]  # protobuf's JSON leaves out a 0
    assert answers["unknown"].count("NOT_FOUND") == 2, answers["unknown"]


async def test_tritonclient_grpc_errors_name_the_problem(grpc_address, cancer) -> None:
    def call() -> tuple[str, str]:
        client = triton.InferenceServerClient(url=grpc_address)
        try:
            with pytest.raises(triton.InferenceServerException) as unknown:
                client.get_model_metadata("nope")
            wrong = [triton.InferInput("x", [1, 30], "FP32")]
            wrong[0].set_data_from_numpy(np.ones((1, 30), np.float32))
            with pytest.raises(triton.InferenceServerException) as misnamed:
                client.infer("cancer", wrong)
            return str(unknown.value), str(misnamed.value)
        finally:
            client.close()

    unknown, misnamed = await asyncio.to_thread(call)
    assert "NOT_FOUND" in unknown
    assert "'nope' not found" in unknown
    assert "INVALID_ARGUMENT" in misnamed
    assert "no input 'x'" in misnamed


@pytest.fixture
async def kserve_grpc(grpc_address: str) -> Any:
    """The KServe SDK's gRPC inference client; closed after the test."""
    client = InferenceGRPCClient(url=grpc_address, retries=0)
    yield client
    await client.close()


@pytest.mark.parametrize(("datatype", "dtype"), [("FP32", np.float32), ("INT64", np.int64)])
async def test_kserve_sdk_grpc_live_ready_and_infer(
    kserve_grpc, cancer, binary_data, datatype, dtype
) -> None:
    X = np.round(binary_data.X_test.iloc[:3].to_numpy()).astype(dtype)
    expected = await cancer.predict("cancer", X.astype(np.float32))
    assert await kserve_grpc.is_server_live()
    assert await kserve_grpc.is_server_ready()
    assert await kserve_grpc.is_model_ready("cancer")

    request = InferRequest(
        model_name="cancer",
        infer_inputs=[InferInput("input", list(X.shape), datatype, X)],
        request_id="kserve-1",
    )
    response = await kserve_grpc.infer(request)

    assert response.id == "kserve-1"
    assert response.model_version == "v1"
    outputs = {output.name: output.as_numpy() for output in response.outputs}
    assert_close(outputs["probabilities"][:, 1], expected)
    assert outputs["label"].tolist() == (expected > 0.5).astype(int).tolist()
