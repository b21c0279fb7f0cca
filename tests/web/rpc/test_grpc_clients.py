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
