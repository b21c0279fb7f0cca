"""The Open Inference Protocol over gRPC, as tritonclient's asyncio client calls it.

The same model answers the same rows over gRPC as through ModelServer.predict,
bad requests get the status their HTTP twin's 4xx maps to, and the
repository RPCs follow the admin API's rules.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import numpy as np
import pytest
from triton_grpc import triton_aio
from tritonclient.utils import InferenceServerException
from web_helpers import ADMIN_TOKEN, assert_close

from turnout import BatchingConfig, ModelServer
from turnout.core.execution.convert import load_model
from turnout.web.rpc import messages
from turnout.web.rpc.service import RepositoryAccess


def rows(data: Any, n: int, dtype: Any = np.float32) -> np.ndarray[Any, Any]:
    return data.X_test.iloc[:n].to_numpy().astype(dtype)


def one_input(
    array: np.ndarray[Any, Any], datatype: str = "FP32", name: str = "input"
) -> list[Any]:
    tensor = triton_aio.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return [tensor]


async def test_live_ready_and_server_metadata(triton, cancer) -> None:
    assert await triton.is_server_live()
    assert await triton.is_server_ready()
    assert await triton.is_model_ready("cancer")
    assert await triton.is_model_ready("cancer", "v2")
    metadata = await triton.get_server_metadata(as_json=True)
    assert metadata["name"] == "turnout"
    # The repository RPCs are off without an admin API; configuration and statistics are on.
    assert metadata["extensions"] == ["model_configuration", "statistics"]


async def test_model_metadata_names_inputs_outputs_and_versions(triton, cancer) -> None:
    metadata = await triton.get_model_metadata("cancer", as_json=True)
    assert metadata["name"] == "cancer"
    assert metadata["versions"] == ["v1", "v2"]
    assert metadata["platform"] == "onnxruntime_onnx"
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": ["-1", "30"]}]
    assert [o["name"] for o in metadata["outputs"]] == ["label", "probabilities", "predictions"]


async def test_infer_answers_as_predict_does(triton, cancer, binary_data) -> None:
    X = rows(binary_data, 8)
    expected = await cancer.predict("cancer", X)

    result = await triton.infer("cancer", one_input(X), request_id="req-7")

    answer = result.get_response(as_json=True)
    assert answer["model_version"] == "v1"
    assert answer["id"] == "req-7"
    assert answer["parameters"]["request_id"]["string_param"]
    assert_close(result.as_numpy("probabilities")[:, 1], expected)
    assert result.as_numpy("label").tolist() == (expected > 0.5).astype(int).tolist()


@pytest.mark.parametrize(("datatype", "dtype"), [("FP64", np.float64), ("INT64", np.int64)])
async def test_infer_takes_fp64_and_int64_inputs(
    triton, cancer, binary_data, datatype, dtype
) -> None:
    X = np.round(rows(binary_data, 4, np.float64)).astype(dtype)
    expected = await cancer.predict("cancer", X.astype(np.float32))

    result = await triton.infer("cancer", one_input(X, datatype))

    assert_close(result.as_numpy("probabilities")[:, 1], expected)


async def test_infer_pins_a_version_and_returns_the_outputs_asked_for(
    triton, cancer, binary_data
) -> None:
    X = rows(binary_data, 3)
    expected = await cancer.predict("cancer", X, version="v2")
    outputs = [triton_aio.InferRequestedOutput("probabilities")]

    result = await triton.infer("cancer", one_input(X), model_version="v2", outputs=outputs)

    assert result.get_response().model_version == "v2"
    assert [o.name for o in result.get_response().outputs] == ["probabilities"]
    assert_close(result.as_numpy("probabilities")[:, 1], expected)


async def test_one_tensor_per_feature_works_as_over_http(triton, cancer, binary_data) -> None:
    X = rows(binary_data, 2)
    inputs = []
    for j, feature in enumerate(binary_data.features):
        tensor = triton_aio.InferInput(feature, [2], "FP32")
        tensor.set_data_from_numpy(np.ascontiguousarray(X[:, j]))
        inputs.append(tensor)

    result = await triton.infer("cancer", inputs)

    assert_close(result.as_numpy("probabilities")[:, 1], await cancer.predict("cancer", X))


async def test_typed_contents_are_read_as_raw_ones_are(channel, cancer, binary_data) -> None:
    X = rows(binary_data, 2)
    request = messages.ModelInferRequest(model_name="cancer", id="typed")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=list(X.shape))
    tensor.contents.fp32_contents.extend(X.reshape(-1).tolist())

    response = await infer(channel, request)

    assert response.id == "typed"
    names = [output.name for output in response.outputs]
    probabilities = np.frombuffer(response.raw_output_contents[names.index("probabilities")], "<f4")
    assert_close(probabilities.reshape(2, 2)[:, 1], await cancer.predict("cancer", X))


async def infer(channel: grpc.aio.Channel, request: Any, **kwargs: Any) -> Any:
    """Call ModelInfer with turnout's own message classes."""
    call = channel.unary_unary(
        f"/{messages.SERVICE}/ModelInfer",
        request_serializer=messages.ModelInferRequest.SerializeToString,
        response_deserializer=messages.ModelInferResponse.FromString,
    )
    return await call(request, **kwargs)


async def status_of(call: Any) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    """Await a call expected to fail; return its code, details and trailing metadata."""
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await call
    error = failed.value
    return error.code(), error.details() or "", dict(error.trailing_metadata() or ())


def request_of(array: np.ndarray[Any, Any], model: str = "cancer", **fields: Any) -> Any:
    request = messages.ModelInferRequest(model_name=model, **fields)
    request.inputs.add(name="input", datatype="FP32", shape=list(array.shape))
    request.raw_input_contents.append(array.astype("<f4").tobytes())
    return request


async def test_bad_requests_get_invalid_argument_naming_the_field(channel, cancer) -> None:
    good = np.ones((1, 30), np.float32)
    nan = good.copy()
    nan[0, 3] = np.nan
    short = messages.ModelInferRequest(model_name="cancer")
    short.inputs.add(name="input", datatype="FP32", shape=[1, 30])
    short.raw_input_contents.append(b"\0" * 12)
    mixed = request_of(good)
    mixed.inputs[0].contents.fp32_contents.append(1.0)
    strings = messages.ModelInferRequest(model_name="cancer")
    strings.inputs.add(name="input", datatype="BYTES", shape=[1, 30])
    strings.inputs[0].contents.bytes_contents.extend([b"17.9"] * 30)
    wrong_width = request_of(np.ones((1, 29), np.float32))
    unknown_output = request_of(good)
    unknown_output.outputs.add(name="nope")
    empty = messages.ModelInferRequest(model_name="cancer")
    cases = {
        "NaN": (request_of(nan), "mean area"),
        "short raw": (short, "raw_inputs[0]"),
        "raw and typed": (mixed, "inputs[0].contents"),
        "BYTES": (strings, "mean radius"),
        "width": (wrong_width, "columns"),
        "output": (unknown_output, "outputs[0].name"),
        "no inputs": (empty, "inputs"),
    }
    for case, (request, field) in cases.items():
        code, details, trailing = await status_of(infer(channel, request))
        assert code is grpc.StatusCode.INVALID_ARGUMENT, (case, details)
        assert trailing.get("turnout-error-field", "").startswith(field), (case, trailing)
    metrics = cancer.get_deployment("cancer", "v1").metrics
    assert metrics.errors == 0  # nothing the client got wrong counts against the model


async def test_nan_reaches_a_model_deployed_with_allow_nan(
    channel, server: ModelServer, binary_data
) -> None:
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(SimpleImputer(), LogisticRegression(max_iter=5000))
    model.fit(binary_data.X_train, binary_data.y_train)
    await server.deploy_model("gaps", "v1", model, allow_nan=True)
    rows = binary_data.X_test.iloc[:3].assign(**{binary_data.features[0]: np.nan})

    answer = await infer(channel, request_of(rows.to_numpy(np.float32), "gaps"))

    (probabilities,) = [o for o in answer.outputs if o.name == "probabilities"]
    index = [o.name for o in answer.outputs].index("probabilities")
    got = np.frombuffer(answer.raw_output_contents[index], "<f4").reshape(3, 2)[:, 1]
    assert list(probabilities.shape) == [3, 2]
    np.testing.assert_allclose(got, model.predict_proba(rows)[:, 1], atol=1e-5)


async def test_unknown_model_and_version_are_not_found(channel, cancer) -> None:
    good = np.ones((1, 30), np.float32)
    code, details, trailing = await status_of(infer(channel, request_of(good, "nope")))
    assert code is grpc.StatusCode.NOT_FOUND
    assert "'nope' not found" in details
    assert trailing["turnout-error-code"] == "model_not_found"
    code, _, trailing = await status_of(infer(channel, request_of(good, model_version="v9")))
    assert code is grpc.StatusCode.NOT_FOUND
    assert trailing["turnout-error-code"] == "version_not_found"


async def test_a_deadline_the_model_cannot_meet_is_deadline_exceeded(
    channel, server: ModelServer, binary_model
) -> None:
    from turnout.core.deployments.faults import inject_faults

    await server.deploy_model("slow", "v1", binary_model)
    with inject_faults(server.get_deployment("slow")) as faults:
        faults.slow_down(0.5)
        request = request_of(np.ones((1, 30), np.float32), "slow")
        code, _, _ = await status_of(infer(channel, request, timeout=0.1))
        assert code is grpc.StatusCode.DEADLINE_EXCEEDED
        request.parameters["timeout"].double_param = 0.1
        code, _, trailing = await status_of(infer(channel, request, timeout=5))
        assert code is grpc.StatusCode.DEADLINE_EXCEEDED
        assert trailing["turnout-error-code"] == "deadline_exceeded"


async def test_a_full_queue_is_resource_exhausted(
    channel, server: ModelServer, binary_model
) -> None:
    from turnout.core.deployments.faults import inject_faults

    config = BatchingConfig(max_batch_rows=1, max_queue_rows=1, max_request_rows=1)
    await server.deploy_model("small", "v1", binary_model, batching=config)
    with inject_faults(server.get_deployment("small")) as faults:
        faults.slow_down(0.3)
        request = request_of(np.ones((1, 30), np.float32), "small")
        calls = [asyncio.ensure_future(infer(channel, request)) for _ in range(4)]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
    refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert refused, outcomes
    assert {error.code() for error in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert dict(refused[0].trailing_metadata())["retry-after"] == "1"


async def test_a_message_past_the_limit_is_refused_before_it_is_read(
    start_grpc_service, cancer
) -> None:
    address = await start_grpc_service(max_message_bytes=1024)
    async with grpc.aio.insecure_channel(address) as channel:
        code, _, _ = await status_of(infer(channel, request_of(np.ones((64, 30), np.float32))))
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_server_ready_is_false_once_draining(start_grpc_service, cancer) -> None:
    draining = asyncio.Event()
    address = await start_grpc_service(draining=draining)
    client = triton_aio.InferenceServerClient(url=address)
    try:
        assert await client.is_server_ready()
        draining.set()
        assert not await client.is_server_ready()
    finally:
        await client.close()


async def test_repository_rpcs_are_off_without_an_admin_api(triton, cancer) -> None:
    with pytest.raises(InferenceServerException, match="repository API is off"):
        await triton.get_model_repository_index()
    with pytest.raises(InferenceServerException, match="repository API is off"):
        await triton.unload_model("cancer")
    assert await triton.is_model_ready("cancer")


async def test_repository_rpcs_need_the_admin_token(start_grpc_service, cancer) -> None:
    address = await start_grpc_service(access=RepositoryAccess(enabled=True, token=ADMIN_TOKEN))
    client = triton_aio.InferenceServerClient(url=address)
    try:
        with pytest.raises(InferenceServerException, match="Authorization"):
            await client.get_model_repository_index()
        with pytest.raises(InferenceServerException, match="token is wrong"):
            await client.unload_model("cancer", headers={"authorization": "Bearer " + "x" * 20})
        auth = {"authorization": f"Bearer {ADMIN_TOKEN}"}
        index = await client.get_model_repository_index(headers=auth, as_json=True)
        assert {(m["name"], m["version"], m["state"]) for m in index["models"]} == {
            ("cancer", "v1", "READY"),
            ("cancer", "v2", "READY"),
        }
    finally:
        await client.close()


async def test_load_deploys_onnx_files_and_unload_retires_them(
    start_grpc_service, cancer, binary_model
) -> None:
    onnx_bytes = load_model(binary_model).onnx_bytes
    address = await start_grpc_service(access=RepositoryAccess(enabled=True, token=ADMIN_TOKEN))
    auth = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    client = triton_aio.InferenceServerClient(url=address)
    try:
        await client.load_model("fresh", headers=auth, files={"file:v1/model.onnx": onnx_bytes})
        assert await client.is_model_ready("fresh", "v1")
        with pytest.raises(InferenceServerException, match="not a parameter load takes"):
            await client.load_model("fresh", headers=auth, files={"file:v2/x.py": b"print()"})
        with pytest.raises(InferenceServerException, match=r"conversion|ONNX"):
            await client.load_model("fresh", headers=auth, files={"file:v2/model.onnx": b"no"})
        await client.unload_model("fresh", headers=auth)
        with pytest.raises(InferenceServerException, match="not found"):
            await client.is_model_ready("fresh")
    finally:
        await client.close()


async def test_unimplemented_rpcs_say_so(triton, cancer) -> None:
    with pytest.raises(InferenceServerException, match=r"(?i)unimplemented"):
        await triton.get_log_settings()
    with pytest.raises(InferenceServerException, match=r"(?i)unimplemented"):
        await triton.get_system_shared_memory_status()
