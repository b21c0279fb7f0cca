"""The binary tensor data extension on POST /v2/.../infer, over a real loopback server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import jsonschema
import numpy as np
import pytest
import tritonclient.http as triton
from web_helpers import assert_close, expect_error, tensor

from turnout.web.openapi import openapi_document

INFER = "/v2/models/cancer/infer"
HEADER = "Inference-Header-Content-Length"
OCTET = "application/octet-stream"


def binary_request(
    header: dict[str, Any], *blobs: bytes, length: str | None = None
) -> tuple[bytes, dict[str, str]]:
    """Return a binary request's body and headers: the JSON header, then the blobs."""
    head = json.dumps(header).encode()
    headers = {"Content-Type": OCTET, HEADER: str(len(head)) if length is None else length}
    return head + b"".join(blobs), headers


def binary_input(name: str, array: np.ndarray[Any, Any], datatype: str) -> dict[str, Any]:
    size = array.nbytes
    return {
        "name": name,
        "shape": list(array.shape),
        "datatype": datatype,
        "parameters": {"binary_data_size": size},
    }


def parse_binary_response(raw: bytes, length: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a binary response into its JSON header and its outputs as arrays, by name."""
    header: dict[str, Any] = json.loads(raw[:length])
    dtypes = {"FP32": "<f4", "FP64": "<f8", "INT64": "<i8", "INT32": "<i4"}
    offset = length
    arrays: dict[str, Any] = {}
    for output in header["outputs"]:
        if "data" in output:
            arrays[output["name"]] = np.asarray(output["data"])
            continue
        size = output["parameters"]["binary_data_size"]
        chunk = raw[offset : offset + size]
        offset += size
        dtype = np.dtype(dtypes[output["datatype"]])
        arrays[output["name"]] = np.frombuffer(chunk, dtype=dtype).reshape(output["shape"])
    assert offset == len(raw)
    return header, arrays


async def test_server_metadata_lists_the_extension(http) -> None:
    metadata = await (await http.get("/v2")).json()
    assert "binary_tensor_data" in metadata["extensions"]


async def test_a_binary_fp32_input_equals_the_json_request(http, cancer, binary_data) -> None:
    X = binary_data.X_test.iloc[:6].to_numpy().astype(np.float32)
    as_json = await (await http.post(INFER, json={"inputs": [tensor("input", X)]})).json()

    body, headers = binary_request(
        {"id": "b-1", "inputs": [binary_input("input", X, "FP32")]}, X.astype("<f4").tobytes()
    )
    response = await http.post(INFER, data=body, headers=headers)
    assert response.status == 200, await response.text()
    assert response.content_type == "application/json"  # no binary outputs asked for
    answer = await response.json()
    assert answer["id"] == "b-1"
    assert answer["outputs"] == as_json["outputs"]

    # Any content type is taken when the header is there, as Triton does.
    headers["Content-Type"] = "application/json"
    again = await (await http.post(INFER, data=body, headers=headers)).json()
    assert again["outputs"] == as_json["outputs"]


@pytest.mark.parametrize(
    ("parameters", "outputs", "binary"),
    [
        ({"binary_data_output": True}, None, {"label", "probabilities"}),
        (None, [{"name": "probabilities", "parameters": {"binary_data": True}}], {"probabilities"}),
        (
            {"binary_data_output": True},
            [
                {"name": "label", "parameters": {"binary_data": False}},
                {"name": "probabilities"},
                {"name": "predictions"},
            ],
            {"probabilities", "predictions"},
        ),
    ],
)
async def test_binary_outputs_round_trip(
    http, cancer, binary_data, parameters, outputs, binary
) -> None:
    X = binary_data.X_test.iloc[:5].to_numpy()
    expected = await cancer.predict("cancer", X)
    request: dict[str, Any] = {"inputs": [tensor("input", X, "FP64")]}
    if parameters is not None:
        request["parameters"] = parameters
    if outputs is not None:
        request["outputs"] = outputs
    # A JSON request may ask for binary outputs too.
    response = await http.post(INFER, json=request)
    assert response.status == 200, await response.text()
    assert response.content_type == OCTET
    length = int(response.headers[HEADER])
    header, arrays = parse_binary_response(await response.read(), length)
    assert header["model_version"] == "v1"
    # The JSON header is the documented InferResponse.
    components = openapi_document()["components"]
    schema = {"$ref": "#/components/schemas/InferResponse", "components": components}
    jsonschema.Draft202012Validator(schema).validate(header)
    for output in header["outputs"]:
        assert ("data" not in output) == (output["name"] in binary)
        if output["name"] in binary:
            assert output["parameters"]["binary_data_size"] == arrays[output["name"]].nbytes
    if "probabilities" in arrays:
        assert arrays["probabilities"].shape == (5, 2)
        assert_close(arrays["probabilities"][:, 1], expected)
    if "label" in arrays:
        assert arrays["label"].tolist() == (expected > 0.5).astype(int).tolist()
    if "predictions" in arrays:
        assert_close(arrays["predictions"], expected)


async def test_mixed_json_and_binary_inputs(http, cancer, binary_data) -> None:
    X = binary_data.X_test.iloc[:4]
    expected = await cancer.predict("cancer", X)
    inputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for i, name in enumerate(binary_data.features):
        column = X[name].to_numpy()
        if i % 3 == 0:
            inputs.append(tensor(name, column, "FP64"))
        elif i % 3 == 1:
            inputs.append(binary_input(name, column.astype(np.float64), "FP64"))
            blobs.append(column.astype("<f8").tobytes())
        else:
            values = column.astype(np.float32).reshape(-1, 1)
            inputs.append(binary_input(name, values, "FP32"))
            blobs.append(values.astype("<f4").tobytes())
    request = {"inputs": inputs, "outputs": [{"name": "predictions"}]}
    body, headers = binary_request(request, *blobs)
    response = await http.post(INFER, data=body, headers=headers)
    assert response.status == 200, await response.text()
    assert_close((await response.json())["outputs"][0]["data"], expected)


def _good() -> tuple[dict[str, Any], bytes]:
    values = np.ones((2, 30), dtype="<f4")
    return {"inputs": [binary_input("input", values, "FP32")]}, values.tobytes()


def _with_input(**changes: Any) -> dict[str, Any]:
    header, _ = _good()
    header["inputs"][0].update(changes)
    return header


@pytest.mark.parametrize(
    ("header", "blob", "length", "field", "words"),
    [
        (None, None, "12abc", HEADER, "whole number"),
        (None, None, "", HEADER, "whole number"),
        (None, None, "1.5", HEADER, "whole number"),
        (None, None, "-3", HEADER, "negative"),
        (None, None, "100000", HEADER, "only"),
        (None, None, "9" * 5000, HEADER, "whole number"),
        (None, None, "0" * 5000 + "1" * 25, HEADER, "whole number"),
        (None, b"\x00" * 244, None, "inputs", "add up to 240"),
        (None, b"\x00" * 236, None, "inputs[0].parameters.binary_data_size", "only 236"),
        (
            _with_input(parameters={"binary_data_size": 232}),
            b"\x00" * 232,
            None,
            "inputs[0].parameters.binary_data_size",
            "takes 240 bytes",
        ),
        (
            _with_input(shape=[3, 30]),
            None,
            None,
            "inputs[0].parameters.binary_data_size",
            "takes 360 bytes",
        ),
        (
            _with_input(datatype="FP16", parameters={"binary_data_size": 120}),
            b"\x00" * 120,
            None,
            "inputs[0].datatype",
            "not supported",
        ),
        (
            _with_input(datatype="BYTES"),
            None,
            None,
            "inputs[0].parameters.binary_data_size",
            "do not hold 60 BYTES elements",
        ),
        (
            _with_input(parameters={"binary_data_size": -4}),
            b"",
            None,
            "inputs[0].parameters.binary_data_size",
            "non-negative",
        ),
        (
            _with_input(parameters={"binary_data_size": "240"}),
            None,
            None,
            "inputs[0].parameters.binary_data_size",
            "non-negative",
        ),
        (_with_input(data=[1.0] * 60), None, None, "inputs[0].data", "both"),
        (
            {**_good()[0], "parameters": {"binary_data_output": "yes"}},
            None,
            None,
            "parameters.binary_data_output",
            "true or false",
        ),
        (
            {**_good()[0], "outputs": [{"name": "label", "parameters": {"binary_data": 1}}]},
            None,
            None,
            "outputs[0].parameters.binary_data",
            "true or false",
        ),
    ],
)
async def test_malformed_binary_requests_are_400_json(
    http, cancer, header, blob, length, field, words
) -> None:
    good_header, good_blob = _good()
    body, headers = binary_request(
        good_header if header is None else header,
        good_blob if blob is None else blob,
        length=length,
    )
    body_json = await expect_error(
        await http.post(INFER, data=body, headers=headers), 400, "invalid_request"
    )
    assert body_json.get("field") == field, body_json
    assert words in body_json["error"], body_json


async def test_nan_in_binary_data_is_400_naming_row_and_feature(http, cancer) -> None:
    values = np.ones((2, 30), dtype="<f4")
    values[1, 2] = np.nan
    header = {"inputs": [binary_input("input", values, "FP32")]}
    body, headers = binary_request(header, values.tobytes())
    error = await expect_error(
        await http.post(INFER, data=body, headers=headers), 400, "invalid_input"
    )
    assert error["error"].startswith("row 1, feature 'mean perimeter': nan is not allowed")
    assert "allow_nan=True" in error["error"]


async def test_nan_in_binary_data_reaches_a_model_deployed_with_allow_nan(
    http, server, binary_data
) -> None:
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(SimpleImputer(), LogisticRegression(max_iter=5000))
    model.fit(binary_data.X_train, binary_data.y_train)
    await server.deploy_model("gaps", "v1", model, allow_nan=True)
    values = binary_data.X_test.to_numpy(dtype="<f4")[:3]
    values[:, 0] = np.nan
    header = {"inputs": [binary_input("input", values, "FP32")]}
    body, headers = binary_request(header, values.tobytes())

    response = await http.post("/v2/models/gaps/infer", data=body, headers=headers)

    assert response.status == 200, await response.text()
    outputs = {o["name"]: o for o in (await response.json())["outputs"]}
    got = np.asarray(outputs["probabilities"]["data"]).reshape(3, 2)[:, 1]
    rows = binary_data.X_test.iloc[:3].assign(**{binary_data.features[0]: np.nan})
    np.testing.assert_allclose(got, model.predict_proba(rows)[:, 1], atol=1e-5)


@pytest.mark.parametrize(
    ("head", "code", "words"),
    [
        (b"[1, 2]", "invalid_request", "must be a JSON object, not a list"),
        (b'"inputs"', "invalid_request", "must be a JSON object, not a string"),
        (b'{"inputs": [', "malformed_json", "first 12 bytes"),
    ],
)
async def test_a_json_header_that_is_not_an_object_is_400(http, cancer, head, code, words) -> None:
    headers = {"Content-Type": OCTET, HEADER: str(len(head))}
    error = await expect_error(await http.post(INFER, data=head, headers=headers), 400, code)
    assert words in error["error"]


async def test_binary_without_the_header(http, cancer) -> None:
    header, blob = _good()
    raw = json.dumps(header).encode() + blob
    # octet-stream without the header's length: nothing says where the JSON ends.
    error = await expect_error(
        await http.post(INFER, data=raw, headers={"Content-Type": OCTET}), 400, "invalid_request"
    )
    assert HEADER in error["error"]
    # JSON naming a binary_data_size, with no binary part at all.
    error = await expect_error(await http.post(INFER, json=header), 400, "invalid_request")
    assert error["field"] == "inputs[0].parameters.binary_data_size"
    # The V1 protocol has no binary extension.
    await expect_error(
        await http.post("/v1/models/cancer:predict", data=raw, headers={"Content-Type": OCTET}),
        415,
        "unsupported_media_type",
    )


async def test_a_binary_body_over_the_limit_is_413(make_client, cancer) -> None:
    client = await make_client(max_body_bytes=1000)
    values = np.ones((10, 30), dtype="<f4")
    body, headers = binary_request(
        {"inputs": [binary_input("input", values, "FP32")]}, values.tobytes()
    )
    await expect_error(await client.post(INFER, data=body, headers=headers), 413, "body_too_large")


async def test_tritonclient_with_default_settings(http, cancer, binary_data) -> None:
    X = binary_data.X_test.iloc[:8].to_numpy().astype(np.float32)
    expected = await cancer.predict("cancer", X)
    url = f"{http.server.host}:{http.server.port}"

    def call() -> Any:
        client = triton.InferenceServerClient(url=url)
        try:
            assert client.is_server_live()
            assert client.is_model_ready("cancer")
            inputs = [triton.InferInput("input", list(X.shape), "FP32")]
            inputs[0].set_data_from_numpy(X)  # binary_data=True by default
            result = client.infer("cancer", inputs)  # no outputs: all of them, in binary
            outputs = [triton.InferRequestedOutput("predictions")]  # binary_data=True
            predictions = client.infer("cancer", inputs, outputs=outputs)
            return result, predictions
        finally:
            client.close()

    result, predictions = await asyncio.to_thread(call)
    assert result.get_response()["model_version"] == "v1"
    assert_close(result.as_numpy("probabilities")[:, 1], expected)
    assert result.as_numpy("label").tolist() == (expected > 0.5).astype(int).tolist()
    assert_close(predictions.as_numpy("predictions"), expected)
