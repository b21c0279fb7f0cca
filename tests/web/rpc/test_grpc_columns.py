"""String columns over gRPC: BYTES tensors, raw (as tritonclient sends them) and typed."""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np
import pytest
from test_grpc_service import infer, status_of
from triton_grpc import triton_aio

from turnout.web.rpc import messages


@pytest.fixture
async def visits(server, tabular_classifier) -> Any:
    """The tabular classifier deployed as model ``visits``."""
    await server.deploy_model("visits", "1", tabular_classifier)
    return server


async def test_tritonclient_sends_bytes_columns_raw(
    triton, visits, tabular_classifier, tabular_data
) -> None:
    frame = tabular_data.X_test.iloc[:5]
    inputs = []
    for name in frame.columns:
        values = frame[name].to_numpy().reshape(-1, 1)
        strings = values.dtype == object
        tensor = triton_aio.InferInput(name, list(values.shape), "BYTES" if strings else "FP32")
        tensor.set_data_from_numpy(values if strings else values.astype(np.float32))
        inputs.append(tensor)

    result = await triton.infer("visits", inputs)
    metadata = await triton.get_model_metadata("visits", as_json=True)

    expected = tabular_classifier.predict_proba(frame)[:, 1]
    np.testing.assert_allclose(result.as_numpy("probabilities")[:, 1], expected, atol=1e-5)
    sex = next(spec for spec in metadata["inputs"] if spec["name"] == "sex")
    assert sex == {"name": "sex", "datatype": "BYTES", "shape": ["-1", "1"]}


async def test_typed_bytes_contents_and_their_errors(
    channel, visits, tabular_classifier, tabular_data
) -> None:
    frame = tabular_data.X_test.iloc[:2]

    def request_of(frame: Any, **replace: list[Any]) -> Any:
        request = messages.ModelInferRequest(model_name="visits")
        for name in frame.columns:
            values = replace.get(name, frame[name].tolist())
            strings = isinstance(values[0], str | bytes)
            tensor = request.inputs.add(
                name=name, datatype="BYTES" if strings else "FP64", shape=[len(values), 1]
            )
            if strings:
                tensor.contents.bytes_contents.extend(
                    v if isinstance(v, bytes) else v.encode() for v in values
                )
            else:
                tensor.contents.fp64_contents.extend(values)
        return request

    response = await infer(channel, request_of(frame))
    names = [output.name for output in response.outputs]
    raw = response.raw_output_contents[names.index("probabilities")]
    expected = tabular_classifier.predict_proba(frame)[:, 1]
    np.testing.assert_allclose(np.frombuffer(raw, "<f4").reshape(2, 2)[:, 1], expected, atol=1e-5)

    cases = {
        "unknown category": (request_of(frame, sex=["female", "other"]), "sex"),
        "not UTF-8": (request_of(frame, sex=[b"female", b"\xff"]), "inputs[1].contents"),
    }
    for case, (request, field) in cases.items():
        code, details, trailing = await status_of(infer(channel, request))
        assert code is grpc.StatusCode.INVALID_ARGUMENT, (case, details)
        assert trailing.get("turnout-error-field", "").startswith(field), (case, trailing)
    assert visits.get_deployment("visits").metrics.errors == 0
