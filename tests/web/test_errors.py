"""Errors over HTTP: every bad request is a 4xx JSON body with a code, never a 500.

Overload, open breakers, deadlines and model failures are produced for real,
by wrapping a deployed version's runtime in a FaultInjectingRuntime.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from web_helpers import expect_error, send_head, tensor

from turnout import BatchingConfig, BreakerConfig, TurnoutError
from turnout.core import errors as core_errors
from turnout.core.deployments.faults import inject_faults
from turnout.web import ERROR_CODES, create_app
from turnout.web.errors import scrub

INFER = "/v2/models/cancer/infer"
JSON = {"Content-Type": "application/json"}


async def until(condition: Any, turns: int = 2000) -> None:
    """Let other tasks run until ``condition()`` holds."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition never held")


async def post(http: Any, path: str, body: Any) -> Any:
    """POST ``body`` as JSON (a coroutine, so it can be a task)."""
    return await http.post(path, json=body)


def rows(n: int = 2) -> list[list[float]]:
    """``n`` plausible rows of 30 features."""
    return np.linspace(0.1, 3.0, 30 * n).reshape(n, 30).tolist()


def body_with(**tensor_fields: Any) -> dict[str, Any]:
    """A V2 request of one 2-D tensor of two rows, with some fields replaced."""
    fields = {"name": "input", "shape": [2, 30], "datatype": "FP32", "data": rows(2)}
    fields.update(tensor_fields)
    return {"inputs": [{k: v for k, v in fields.items() if v is not ...}]}


# -- the mapping itself ------------------------------------------------------------


def test_every_turnout_error_has_its_own_status_and_code() -> None:
    names = core_errors.__all__
    classes = [getattr(core_errors, name) for name in names]
    assert all(issubclass(cls, TurnoutError) for cls in classes)
    missing = [cls.__name__ for cls in classes if cls not in ERROR_CODES]
    assert missing == []
    statuses = {cls.__name__: ERROR_CODES[cls].status for cls in classes}
    assert statuses["InvalidInputError"] == 400
    assert statuses["ModelNotFoundError"] == statuses["VersionNotFoundError"] == 404
    assert statuses["VersionExistsError"] == 409
    assert statuses["DeadlineExceededError"] == 504
    assert {statuses[n] for n in ("OverloadedError", "CircuitOpenError", "ServerClosedError")} == {
        503
    }
    five_hundreds = sorted(n for n, s in statuses.items() if s == 500)
    assert five_hundreds == ["InferenceError", "PluginError", "StoreError", "TurnoutError"]
    codes = [ERROR_CODES[cls].code for cls in classes if cls is not TurnoutError]
    assert len(set(codes)) == len(codes)  # only the root shares internal_error (with PluginError)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("cannot read /home/alice/models/m.onnx: no such file", "cannot read <path>: no such file"),
        ("failed at C:\\Users\\bob\\m.onnx", "failed at <path>"),
        ("auth failed: token=abc123def", "auth failed: token=<redacted>"),
        ("header Authorization: Bearer xyz", "header Authorization: Bearer <redacted>"),
        ("url?api_key=s3cr3t&x=1", "url?api_key=<redacted>"),
        ("the token is missing", "the token is missing"),
        (
            "row 0, feature 'mean radius': expected a number",
            "row 0, feature 'mean radius': expected a number",
        ),
        ("2/3 of requests and 10/s", "2/3 of requests and 10/s"),
    ],
)
def test_messages_are_scrubbed_of_paths_and_secrets(message: str, expected: str) -> None:
    assert scrub(message) == expected


# -- routing and protocol errors -----------------------------------------------------


async def test_an_unknown_endpoint_is_404_json(http) -> None:
    await expect_error(await http.get("/v3/anything"), 404, "not_found")
    await expect_error(await http.get("/v2/nothing"), 404, "not_found")


async def test_a_wrong_method_is_405_json_with_allow(http, cancer) -> None:
    response = await http.get(INFER)
    await expect_error(response, 405, "method_not_allowed")
    assert response.headers["Allow"] == "POST"
    await expect_error(await http.delete("/v2/models/cancer"), 405, "method_not_allowed")


async def test_an_unsafe_model_name_is_400(http) -> None:
    body = await expect_error(await http.get("/v2/models/.hidden"), 400, "invalid_name")
    assert "unsafe characters" in body["error"]
    await expect_error(await http.get("/v2/models/" + "m" * 200), 400, "invalid_name")


@pytest.mark.parametrize(
    ("content_type", "data"),
    [
        ("text/plain", b"{}"),
        ("application/x-www-form-urlencoded", b"inputs=1"),
        ("application/jsonx", b"{}"),
    ],
)
async def test_a_body_that_is_not_json_is_415(http, cancer, content_type, data) -> None:
    # application/octet-stream is the binary tensor extension's type on V2: see test_binary.py.
    for path in (INFER, "/v1/models/cancer:predict"):
        response = await http.post(path, data=data, headers={"Content-Type": content_type})
        body = await expect_error(response, 415, "unsupported_media_type")
        assert content_type in body["error"]


async def test_a_json_body_without_a_content_type_is_read_as_json(
    http, cancer, binary_data
) -> None:
    # As tritonclient sends its JSON requests: no Content-Type header at all.
    X = binary_data.X_test.iloc[:2].to_numpy()
    requests = {
        INFER: {"inputs": [tensor("input", X, "FP64")]},
        "/v1/models/cancer:predict": {"instances": X.tolist()},
    }
    for path, body in requests.items():
        response = await http.post(
            path, data=json.dumps(body).encode(), skip_auto_headers=["Content-Type"]
        )
        assert "Content-Type" not in response.request_info.headers
        assert response.status == 200, await response.text()
    response = await http.post(INFER, data=b"{", skip_auto_headers=["Content-Type"])
    await expect_error(response, 400, "malformed_json")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"inputs": [',
        b"{'inputs': []}",
        b"",
        b"   ",
        b'{"inputs": [{"name": "input", "shape": [1, 1], "datatype": "FP32", "data": [NaN]}]}',
        b'{"inputs": [{"name": "input", "shape": [1, 1], "datatype": "FP32", "data": [Infinity]}]}',
        b'{"a": "\xff\xfe"}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"inputs": [1' + b"0" * 5000 + b"]}",
    ],
)
async def test_malformed_json_is_400(http, cancer, raw) -> None:
    response = await http.post(INFER, data=raw, headers={"Content-Type": "application/json"})
    await expect_error(response, 400, "malformed_json")


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ([], None, "must be a JSON object"),
        ({}, "inputs", "inputs is missing"),
        ({"inputs": None}, "inputs", "inputs is missing"),
        ({"inputs": {}}, "inputs", "must be a list"),
        ({"inputs": []}, "inputs", "at least one"),
        ({"inputs": [3]}, "inputs[0]", "JSON object"),
        (body_with(name=...), "inputs[0].name", "missing"),
        (body_with(name=7), "inputs[0].name", "must be a string"),
        (body_with(shape=...), "inputs[0].shape", "missing"),
        (body_with(shape="2,30"), "inputs[0].shape", "must be a list"),
        (body_with(shape=[2, -30]), "inputs[0].shape", "non-negative integers"),
        (body_with(shape=[2, 30.0]), "inputs[0].shape", "non-negative integers"),
        (body_with(shape=[2, True]), "inputs[0].shape", "non-negative integers"),
        (body_with(shape=[1, 2, 30]), "inputs[0].shape", "1 or 2 dimensions"),
        (body_with(datatype=...), "inputs[0].datatype", "missing"),
        (body_with(datatype="FP16"), "inputs[0].datatype", "not supported"),
        (body_with(datatype="UINT8"), "inputs[0].datatype", "not supported"),
        (body_with(datatype="BYTES"), "inputs[0].data", "holds strings, not a number"),
        (body_with(datatype="fp32"), "inputs[0].datatype", "not supported"),
        (body_with(data=...), "inputs[0].data", "missing"),
        (body_with(data=5), "inputs[0].data", "must be a list"),
        (body_with(shape=[2, 30], data=rows(2)[0]), "inputs[0].data", "holds 60 values"),
        (body_with(shape=[3, 30]), "inputs[0].data", "nested as [2, 30]"),
        (body_with(data=[rows(1)[0], rows(1)[0][:29]]), "inputs[0].data", "same length"),
        (
            body_with(data=[*rows(1), ["a"] * 30]),
            "inputs[0].data",
            "data[1][0]: expected a number, got a string",
        ),
        (body_with(data=[[None] * 30, *rows(1)]), "inputs[0].data", "got null"),
        (body_with(data=[[{"a": 1}] * 30, *rows(1)]), "inputs[0].data", "got an object"),
        (body_with(data=[[10**30] * 30, *rows(1)]), "inputs[0].data", "out of range"),
        (body_with(data=[[1e39] * 30, *rows(1)]), "inputs[0].data", "out of range for FP32"),
        (body_with(datatype="INT64"), "inputs[0].data", "whole numbers"),
        (
            body_with(datatype="INT32", data=[[2**40] * 30] * 2),
            "inputs[0].data",
            "out of range for INT32",
        ),
        ({**body_with(), "id": 5}, "id", "must be a string"),
        ({**body_with(), "outputs": [{"nom": "label"}]}, "outputs[0].name", "missing"),
        ({**body_with(), "outputs": "label"}, "outputs", "must be a list"),
        ({**body_with(), "parameters": []}, "parameters", "JSON object"),
        ({**body_with(), "parameters": {"key": 3}}, "parameters.key", "must be a string"),
        ({**body_with(), "parameters": {"key": ""}}, "parameters.key", "must not be empty"),
        (
            {**body_with(), "parameters": {"timeout": "1s"}},
            "parameters.timeout",
            "number of seconds",
        ),
        ({**body_with(), "parameters": {"timeout": 0}}, "parameters.timeout", "positive"),
        ({**body_with(), "parameters": {"timeout": -1}}, "parameters.timeout", "positive"),
        (
            {**body_with(), "parameters": {"timeout": True}},
            "parameters.timeout",
            "number of seconds",
        ),
        ({**body_with(), "parameters": {"timeout": 10**400}}, "parameters.timeout", "finite"),
    ],
)
async def test_a_request_the_protocol_does_not_allow_is_400(
    http, cancer, body, field, words
) -> None:
    response = await http.post(INFER, json=body)
    error = await expect_error(response, 400, "invalid_request")
    assert error.get("field") == field
    assert words in error["error"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (body_with(shape=[0, 30], data=[]), "empty"),
        (body_with(shape=[2, 29], data=np.ones((2, 29)).tolist()), "expected 30 columns, got 29"),
        (body_with(shape=[2], data=[1.0, 2.0]), "inputs[0].shape must be [rows, 30]"),
        (body_with(name="x"), "this model has no input 'x'"),
        (
            {"inputs": [tensor("input", np.ones((1, 30))), tensor("mean radius", [1.0])]},
            "comes alone",
        ),
        (body_with(name="mean radius", shape=[2], data=[1.0, 2.0]), "missing"),
        (
            {"inputs": [tensor("mean radius", [1.0]), tensor("mean radiuss", [1.0])]},
            "'mean radiuss' is not a feature of this model",
        ),
        (body_with(shape=[1, 30], data=[[1.0] * 29 + [True]]), None),
    ],
)
async def test_inputs_the_model_cannot_take_are_400(http, cancer, body, words) -> None:
    response = await http.post(INFER, json=body)
    if words is None:  # booleans are read as 0 and 1, as the protocol allows
        assert response.status == 200, await response.text()
        return
    error = await expect_error(response, 400, "invalid_input")
    assert words in error["error"]


async def test_per_feature_tensors_must_agree(http, cancer, binary_data) -> None:
    X = binary_data.X_test.iloc[:3]
    inputs = [tensor(name, X[name].to_numpy()) for name in binary_data.features]
    inputs[4] = tensor(binary_data.features[4], X[binary_data.features[4]].to_numpy()[:2])
    error = await expect_error(
        await http.post(INFER, json={"inputs": inputs}), 400, "invalid_request"
    )
    assert "has 2 rows, but inputs[0] has 3" in error["error"]

    inputs = [tensor(name, X[name].to_numpy()) for name in binary_data.features]
    inputs[1] = inputs[0]
    error = await expect_error(
        await http.post(INFER, json={"inputs": inputs}), 400, "invalid_request"
    )
    assert "sent twice" in error["error"]

    inputs = [tensor(name, X[name].to_numpy()) for name in binary_data.features]
    inputs[0]["shape"] = [3, 2]
    inputs[0]["data"] = inputs[0]["data"] * 2
    error = await expect_error(
        await http.post(INFER, json={"inputs": inputs}), 400, "invalid_request"
    )
    assert error["field"] == "inputs[0].shape"


async def test_a_number_beyond_float64_is_400(http, cancer) -> None:
    raw = b'{"inputs": [{"name": "input", "shape": [1, 1], "datatype": "FP64", "data": [1e400]}]}'
    response = await http.post(INFER, data=raw, headers={"Content-Type": "application/json"})
    error = await expect_error(response, 400, "invalid_request")
    assert "too large" in error["error"]


async def test_per_feature_tensors_need_feature_names(http, server, logistic_model) -> None:
    await server.deploy_model("plain", "v1", logistic_model)
    inputs = [tensor(f"f{i}", [1.0]) for i in range(30)]
    error = await expect_error(
        await http.post("/v2/models/plain/infer", json={"inputs": inputs}), 400, "invalid_input"
    )
    assert "no feature names" in error["error"]


async def test_too_many_rows_is_400(http, server, binary_model) -> None:
    await server.deploy_model(
        "cancer", "v1", binary_model, batching=BatchingConfig(max_request_rows=8)
    )
    response = await http.post(INFER, json=body_with(shape=[9, 30], data=rows(9)))
    error = await expect_error(response, 400, "invalid_input")
    assert "limit is 8" in error["error"]


async def test_an_oversized_body_is_413(make_client, cancer) -> None:
    http = await make_client(max_body_bytes=4096)
    big = body_with(shape=[40, 30], data=rows(40))
    assert len(json.dumps(big)) > 4096
    error = await expect_error(await http.post(INFER, json=big), 413, "body_too_large")
    assert "4096" in error["error"]
    await expect_error(
        await http.post("/v1/models/cancer:predict", json={"instances": rows(40)}),
        413,
        "body_too_large",
    )

    # Without a Content-Length (chunked), aiohttp's own limit stops the read.
    async def chunks() -> Any:
        payload = json.dumps(big).encode()
        for i in range(0, len(payload), 1000):
            yield payload[i : i + 1000]

    response = await http.post(INFER, data=chunks(), headers={"Content-Type": "application/json"})
    await expect_error(response, 413, "body_too_large")

    # A body under the limit is served.
    small = body_with(shape=[1, 30], data=rows(1))
    assert (await http.post(INFER, json=small)).status == 200


async def test_the_default_body_limit_is_8_mib(http, cancer) -> None:
    payload = io.BytesIO(b'{"inputs": [' + b" " * (8 * 1024 * 1024) + b"]}")
    response = await http.post(INFER, data=payload, headers={"Content-Type": "application/json"})
    await expect_error(response, 413, "body_too_large")


# -- the server refusing or failing -------------------------------------------------


async def test_overload_is_503_with_retry_after(http, server, binary_model, caplog) -> None:
    config = BatchingConfig(max_batch_rows=2, max_queue_rows=2, max_request_rows=2)
    deployment = await server.deploy_model("cancer", "v1", binary_model, batching=config)
    one = body_with(shape=[1, 30], data=rows(1))
    two = body_with()
    with inject_faults(deployment) as fault:
        fault.hang()
        first = asyncio.create_task(post(http, INFER, one))
        await until(lambda: deployment.batcher.statistics().batches_in_flight == 1)
        queued = asyncio.create_task(post(http, INFER, two))
        await until(lambda: deployment.batcher.statistics().queued_rows == 2)
        response = await http.post(INFER, json=one)
        error = await expect_error(response, 503, "overloaded")
        assert response.headers["Retry-After"] == "1"
        assert "overloaded" in error["error"]
        fault.release()
        assert (await first).status == 200
        assert (await queued).status == 200
    # Refusals for load are counted, not logged: a flood of them must not flood the log.
    assert not [r for r in caplog.records if r.name == "turnout.web" and r.levelname == "ERROR"]


async def test_an_open_breaker_is_503_with_its_retry_after(http, server, binary_model) -> None:
    breaker = BreakerConfig(params={"min_calls": 1, "threshold": 0.5}, cool_down=42.0)
    deployment = await server.deploy_model("cancer", "v1", binary_model, breaker=breaker)
    one = body_with(shape=[1, 30], data=rows(1))
    with inject_faults(deployment) as fault:
        fault.fail_next(1)
        error = await expect_error(await http.post(INFER, json=one), 500, "model_failed")
        assert "injected" not in error["error"]  # the detail stays in the server's log
        response = await http.post(INFER, json=one)
        await expect_error(response, 503, "circuit_open")
        assert 40 <= int(response.headers["Retry-After"]) <= 42
    ready = await http.get("/v2/models/cancer/ready")
    assert (ready.status, await ready.json()) == (503, {"name": "cancer", "ready": False})


async def test_a_missed_deadline_is_504(http, server, binary_model) -> None:
    deployment = await server.deploy_model("cancer", "v1", binary_model)
    request = {**body_with(shape=[1, 30], data=rows(1)), "parameters": {"timeout": 0.05}}
    with inject_faults(deployment) as fault:
        fault.hang()
        try:
            await expect_error(await http.post(INFER, json=request), 504, "deadline_exceeded")
        finally:
            fault.release()


async def test_a_model_failure_is_500_without_detail(http, server, binary_model, caplog) -> None:
    deployment = await server.deploy_model("cancer", "v1", binary_model)
    with inject_faults(deployment) as fault:
        fault.fail_next(1)
        response = await http.post("/v1/models/cancer:predict", json={"instances": rows(1)})
        error = await expect_error(response, 500, "model_failed")
    assert "injected" not in error["error"]
    assert any("injected failure" in record.getMessage() for record in caplog.records)


# -- no request a client can send is a 5xx ----------------------------------------------

_ODD_VALUES: list[Any] = [
    None,
    True,
    0,
    -1,
    2**70,
    1.5,
    1e308,
    "",
    "x",
    "FP32",
    [],
    [[]],
    [None],
    ["a", 1],
    [[1, 2], [3]],
    {},
    {"name": "label"},
    [{}],
    [2, 30],
    [0],
]


def _mutations(request: Any, rng: random.Random) -> Any:
    """Return ``request`` with one value somewhere replaced, dropped or wrapped."""
    if isinstance(request, dict) and request and rng.random() < 0.8:
        key = rng.choice(sorted(request))
        copy = dict(request)
        roll = rng.random()
        if roll < 0.2:
            del copy[key]
        elif roll < 0.6:
            copy[key] = rng.choice(_ODD_VALUES)
        else:
            copy[key] = _mutations(copy[key], rng)
        return copy
    if isinstance(request, list) and request and rng.random() < 0.8:
        copy = list(request)
        i = rng.randrange(len(copy))
        copy[i] = _mutations(copy[i], rng) if rng.random() < 0.6 else rng.choice(_ODD_VALUES)
        return copy
    return rng.choice(_ODD_VALUES)


async def test_no_mangled_request_is_a_server_error(http, cancer, binary_data) -> None:
    rng = random.Random(0)
    X = binary_data.X_test.iloc[:2]
    v2 = {
        "id": "1",
        "parameters": {"key": "k", "timeout": 5},
        "inputs": [tensor("input", X.to_numpy())],
        "outputs": [{"name": "label"}],
    }
    v2_features = {"inputs": [tensor(name, X[name].to_numpy()) for name in binary_data.features]}
    v1 = {"instances": binary_data.records(2), "parameters": {"key": "k"}}
    cases = [
        (INFER, v2),
        ("/v2/models/cancer/versions/v2/infer", v2_features),
        ("/v1/models/cancer:predict", v1),
    ]
    statuses: set[int] = set()
    for _ in range(150):
        for path, request in cases:
            mangled = _mutations(_mutations(request, rng), rng)
            response = await http.post(path, data=json.dumps(mangled), headers=JSON)
            statuses.add(response.status)
            assert response.status < 500, (path, mangled, await response.text())
            body = await response.json()
            assert (response.status == 200) == ("error" not in body)
    assert {200, 400} <= statuses


@pytest.mark.parametrize(
    ("body", "words"),
    [
        # Sizes are checked as Python integers before anything is allocated.
        (
            {"inputs": [{"name": "input", "shape": [16, 2**60], "datatype": "FP32", "data": [1]}]},
            "holds 18446744073709551616 values, but data has 1",
        ),
        (
            {
                "inputs": [
                    {"name": "input", "shape": [2**62, 2**62], "datatype": "FP64", "data": []}
                ]
            },
            "values, but data has 0",
        ),
        ({"inputs": [tensor("mean radius", [1.0]), tensor("mean radius", [2.0])]}, "sent twice"),
        ({"inputs": [tensor(f"f{i}", [1.0]) for i in range(5000)]}, "one per feature (30)"),
    ],
)
async def test_hostile_shapes_and_inputs_are_400(http, cancer, body, words) -> None:
    response = await http.post(INFER, json=body)
    error = await expect_error(response, 400, (await response.json())["code"])
    assert error["code"] in ("invalid_request", "invalid_input")
    assert words in error["error"]
    assert (await http.get("/v2/health/ready")).status == 200


async def test_a_body_that_never_arrives_is_408(http, cancer, monkeypatch) -> None:
    monkeypatch.setattr("turnout.web.body.BODY_READ_TIMEOUT", 0.2)
    reader, writer = await send_head(http.server.host, http.server.port, 1000, b'{"inputs": [')
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
    assert head.startswith(b"HTTP/1.1 408"), head
    assert b"application/json" in head
    writer.close()
    assert (await http.get("/v2/health/ready")).status == 200


async def test_a_client_that_leaves_mid_body_is_no_error_in_the_log(cancer, caplog) -> None:
    # A runner as `turnout serve` makes one: handlers are not cancelled when a client leaves.
    runner = web.AppRunner(create_app(cancer))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        _reader, writer = await send_head(host, port, 1000, b'{"inputs": [')
        await asyncio.sleep(0.2)  # the handler is reading the body
        writer.close()
        await writer.wait_closed()
        await asyncio.sleep(0.3)
    finally:
        await runner.cleanup()
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


async def test_a_100_mb_body_is_refused_from_its_headers_alone(http, cancer) -> None:
    # Nothing of the body is sent: the declared length is enough to refuse it.
    reader, writer = await send_head(http.server.host, http.server.port, 100 * 1024 * 1024)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
    writer.close()
    assert head.startswith(b"HTTP/1.1 413"), head
    assert b"application/json" in head
    assert (await http.get("/v2/health/ready")).status == 200
