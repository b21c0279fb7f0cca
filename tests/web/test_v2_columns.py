"""String columns over HTTP: a BYTES tensor per string column, JSON or binary, V2 and V1."""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from web_helpers import expect_error

INFER = "/v2/models/visits/infer"


@pytest.fixture
async def visits(server, tabular_classifier) -> Any:
    """The tabular classifier deployed as model ``visits``."""
    await server.deploy_model("visits", "1", tabular_classifier)
    return server


def column_tensors(frame: Any) -> list[dict[str, Any]]:
    """One V2 tensor per column of ``frame``: BYTES for strings, FP64 for numbers."""
    tensors = []
    for name in frame.columns:
        values = frame[name].tolist()
        datatype = "BYTES" if isinstance(values[0], str) else "FP64"
        tensors.append(
            {"name": name, "shape": [len(values), 1], "datatype": datatype, "data": values}
        )
    return tensors


def expected_of(model: Any, frame: Any) -> np.ndarray[Any, Any]:
    """The classifier's positive-class probabilities, as turnout returns them."""
    return np.asarray(model.predict_proba(frame)[:, 1])


async def test_metadata_lists_one_input_per_column(http, visits, tabular_data) -> None:
    metadata = await (await http.get("/v2/models/visits")).json()

    inputs = {spec["name"]: spec for spec in metadata["inputs"]}
    assert list(inputs) == tabular_data.features
    assert inputs["sex"] == {"name": "sex", "datatype": "BYTES", "shape": [-1, 1]}
    assert inputs["age"] == {"name": "age", "datatype": "FP32", "shape": [-1, 1]}


async def test_json_bytes_tensors_give_the_pipelines_answer(
    http, visits, tabular_classifier, tabular_data
) -> None:
    frame = tabular_data.X_test.iloc[:7]

    response = await http.post(INFER, json={"inputs": column_tensors(frame)})

    assert response.status == 200, await response.text()
    outputs = {o["name"]: o for o in (await response.json())["outputs"]}
    got = np.asarray(outputs["probabilities"]["data"]).reshape(7, 2)[:, 1]
    np.testing.assert_allclose(got, expected_of(tabular_classifier, frame), atol=1e-5)


async def test_a_binary_bytes_tensor_is_read_from_its_length_prefixed_elements(
    http, visits, tabular_classifier, tabular_data
) -> None:
    frame = tabular_data.X_test.iloc[:3]
    tensors = column_tensors(frame)
    sex = tensors[1]
    assert sex["name"] == "sex"
    blob = b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in sex["data"])
    del sex["data"]
    sex["parameters"] = {"binary_data_size": len(blob)}
    head = json.dumps({"inputs": tensors}).encode()

    response = await http.post(
        INFER,
        data=head + blob,
        headers={"Inference-Header-Content-Length": str(len(head))},
    )

    assert response.status == 200, await response.text()
    outputs = {o["name"]: o for o in (await response.json())["outputs"]}
    got = np.asarray(outputs["probabilities"]["data"]).reshape(3, 2)[:, 1]
    np.testing.assert_allclose(got, expected_of(tabular_classifier, frame), atol=1e-5)

    sex["parameters"] = {"binary_data_size": len(blob) - 1}
    head = json.dumps({"inputs": tensors}).encode()
    short = await http.post(
        INFER, data=head + blob[:-1], headers={"Inference-Header-Content-Length": str(len(head))}
    )
    body = await expect_error(short, 400, "invalid_request")
    assert "do not hold 3 BYTES elements" in body["error"]


async def test_tritonclient_sends_string_columns_as_json_and_binary(
    http, visits, tabular_classifier, tabular_data
) -> None:
    frame = tabular_data.X_test.iloc[:4]
    address = f"{http.server.host}:{http.server.port}"

    def call(binary: bool) -> np.ndarray[Any, Any]:
        client = triton.InferenceServerClient(url=address)
        try:
            inputs = []
            for name in frame.columns:
                values = frame[name].to_numpy().reshape(-1, 1)
                strings = values.dtype == object
                datatype = "BYTES" if strings else "FP32"
                tensor = triton.InferInput(name, list(values.shape), datatype)
                tensor.set_data_from_numpy(
                    values if strings else values.astype(np.float32), binary_data=binary
                )
                inputs.append(tensor)
            output = triton.InferRequestedOutput("probabilities", binary_data=binary)
            result = client.infer("visits", inputs, outputs=[output])
            return np.asarray(result.as_numpy("probabilities"))[:, 1]
        finally:
            client.close()

    expected = expected_of(tabular_classifier, frame)
    for binary in (False, True):
        got = await asyncio.to_thread(call, binary)
        np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize(
    ("change", "code", "words", "field"),
    [
        (("sex", "BYTES", ["female", "other"]), "invalid_input", "unknown category 'other'", "sex"),
        (
            ("sex", "BYTES", ["female", 3]),
            "invalid_request",
            "holds strings, not",
            "inputs[1].data",
        ),
        (("sex", "FP32", [1.0, 0.0]), "invalid_input", "expected a string, got float", "sex"),
        (("age", "BYTES", ["59", "60"]), "invalid_input", "expected a number, got str", "age"),
        (
            ("sex", "STRING", ["a", "b"]),
            "invalid_request",
            "is not supported",
            "inputs[1].datatype",
        ),
    ],
)
async def test_bad_columns_get_a_400_naming_them(
    http, visits, tabular_data, change, code, words, field
) -> None:
    name, datatype, data = change
    tensors = column_tensors(tabular_data.X_test.iloc[:2])
    for tensor in tensors:
        if tensor["name"] == name:
            tensor.update(datatype=datatype, data=data)

    response = await http.post(INFER, json={"inputs": tensors})

    body = await expect_error(response, 400, code)
    assert words in body["error"], body
    assert body["field"] == field, body
    assert visits.get_deployment("visits").breaker.state.value == "closed"


async def test_a_missing_column_and_a_whole_tensor_are_refused(http, visits, tabular_data) -> None:
    tensors = column_tensors(tabular_data.X_test.iloc[:2])

    missing = await http.post(INFER, json={"inputs": tensors[:-1]})
    whole = await http.post(
        INFER,
        json={
            "inputs": [{"name": "input", "shape": [1, 10], "datatype": "FP32", "data": [0] * 10}]
        },
    )

    assert (
        "feature 'bmi_band' is missing"
        in (await expect_error(missing, 400, "invalid_input"))["error"]
    )
    assert (
        "'input' is not a feature of this model"
        in (await expect_error(whole, 400, "invalid_input"))["error"]
    )


async def test_v1_instances_may_hold_strings(
    http, visits, tabular_classifier, tabular_data
) -> None:
    frame = tabular_data.X_test.iloc[:3]

    response = await http.post(
        "/v1/models/visits:predict", json={"instances": frame.to_dict("records")}
    )
    refused = await http.post(
        "/v1/models/visits:predict",
        json={"instances": [{**tabular_data.records(1)[0], "bmi_band": "?"}]},
    )

    assert response.status == 200, await response.text()
    got = (await response.json())["predictions"]
    np.testing.assert_allclose(got, expected_of(tabular_classifier, frame), atol=1e-5)
    body = await expect_error(refused, 400, "invalid_input")
    assert body["error"].startswith("row 0, feature 'bmi_band': unknown category '?'")
