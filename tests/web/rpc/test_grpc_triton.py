"""Triton's model configuration and statistics extensions over gRPC answer what HTTP's do.

tritonclient's asyncio gRPC client calls ModelConfig and ModelStatistics; the
same version's ``GET .../config`` and ``GET .../stats``, parsed into
tritonclient's own messages (Triton's JSON is those messages' JSON form),
must equal what comes back, field for field.
"""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf import json_format
from test_grpc_service import one_input, rows, status_of
from triton_grpc import model_config_pb2, service_pb2
from tritonclient.utils import InferenceServerException

from turnout import ModelServer
from turnout.core.deployments.faults import inject_faults
from turnout.web.rpc import messages


class Halver:
    """A hand-written regressor of one feature, which only the python runtime serves."""

    n_features_in_ = 1

    def predict(self, X: Any) -> np.ndarray[Any, Any]:
        return np.asarray(X)[:, 0] / 2


@pytest.fixture
async def served(cancer: ModelServer, tabular_classifier: Any) -> ModelServer:
    """``cancer`` (v1 active, v2), ``visits`` (string columns) and ``half`` (python runtime)."""
    await cancer.deploy_model("visits", "1", tabular_classifier)
    await cancer.deploy_model("half", "v1", Halver(), runtime="python")
    return cancer


async def http_json(http: Any, path: str) -> Any:
    response = await http.get(path)
    assert response.status == 200, await response.text()
    return await response.json()


def tensors(specs: Any) -> list[tuple[str, str, list[int]]]:
    """(name, data type, dims) of a config's inputs or outputs, from the message."""
    return [(t.name, model_config_pb2.DataType.Name(t.data_type), list(t.dims)) for t in specs]


@pytest.mark.parametrize(
    ("model", "version"), [("cancer", ""), ("cancer", "v2"), ("visits", ""), ("half", "")]
)
async def test_model_config_is_the_http_config(triton, http, served, model, version) -> None:
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/config"
    expected = await http_json(http, path)

    config = (await triton.get_model_config(model, version)).config
    as_json = await triton.get_model_config(model, version, as_json=True)

    assert config == json_format.ParseDict(expected, model_config_pb2.ModelConfig())
    assert (config.name, config.platform, config.backend, config.max_batch_size) == (
        expected["name"],
        expected["platform"],
        expected["backend"],
        expected["max_batch_size"],
    )
    for field in ("input", "output"):
        assert tensors(getattr(config, field)) == [
            (t["name"], t["data_type"], t["dims"]) for t in expected[field]
        ]
    assert (
        config.dynamic_batching.max_queue_delay_microseconds
        == (expected["dynamic_batching"]["max_queue_delay_microseconds"])
    )
    assert (
        config.parameters["version"].string_value
        == expected["parameters"]["version"]["string_value"]
    )
    # as_json is protobuf's JSON of the same message (int64 dims as strings).
    assert json_format.ParseDict(as_json["config"], model_config_pb2.ModelConfig()) == config
    assert as_json["config"]["input"][0]["data_type"] == expected["input"][0]["data_type"]


async def test_model_config_names_what_each_model_is(triton, served) -> None:
    cancer = (await triton.get_model_config("cancer")).config
    assert (cancer.platform, cancer.backend) == ("onnxruntime_onnx", "onnxruntime")
    assert tensors(cancer.input) == [("input", "TYPE_FP32", [30])]
    assert [o.name for o in cancer.output] == ["label", "probabilities", "predictions"]
    assert cancer.max_batch_size == served.get_deployment("cancer").batcher.config.max_batch_rows
    assert cancer.parameters["active"].string_value == "true"
    pinned = (await triton.get_model_config("cancer", "v2")).config
    assert pinned.parameters["version"].string_value == "v2"
    assert pinned.parameters["active"].string_value == "false"
    visits = (await triton.get_model_config("visits")).config
    # A string column is a BYTES tensor, TYPE_STRING in a configuration.
    assert ("sex", "TYPE_STRING", [1]) in tensors(visits.input)
    half = (await triton.get_model_config("half")).config
    assert (half.platform, half.backend) == ("python", "python")


async def test_statistics_move_with_model_infer_and_are_the_http_ones(
    triton, http, cancer, binary_data
) -> None:
    (v1,) = (await triton.get_inference_statistics("cancer", "v1")).model_stats
    assert (v1.name, v1.version, v1.last_inference) == ("cancer", "v1", 0)
    assert (v1.inference_count, v1.execution_count, v1.inference_stats.success.count) == (0, 0, 0)

    X = rows(binary_data, 4)
    for _ in range(3):
        await triton.infer("cancer", one_input(X))
    await triton.infer("cancer", one_input(X[:2]), model_version="v2")
    with inject_faults(cancer.get_deployment("cancer", "v1")) as faults:
        faults.fail_next()
        with pytest.raises(InferenceServerException, match="INTERNAL"):
            await triton.infer("cancer", one_input(X[:1]))

    response = await triton.get_inference_statistics("cancer")
    over_http = await http_json(http, "/v2/models/cancer/stats")
    assert response == json_format.ParseDict(over_http, service_pb2.ModelStatisticsResponse())

    stats = {(s.name, s.version): s for s in response.model_stats}
    assert list(stats) == [("cancer", "v1"), ("cancer", "v2")]
    v1, v2 = stats[("cancer", "v1")], stats[("cancer", "v2")]
    assert v1.inference_count == 3 * 4 + 1  # rows, the failed batch's too
    assert v1.execution_count == 4  # one batch per call: the calls came one at a time
    assert v1.inference_stats.success.count == 3
    assert v1.inference_stats.success.ns > 0
    assert v1.inference_stats.fail.count == 1
    assert v1.inference_stats.compute_infer.count == v1.execution_count
    assert v1.last_inference > 0
    assert list(v1.batch_stats) == []
    assert (v2.inference_count, v2.execution_count, v2.inference_stats.success.count) == (2, 1, 1)

    pinned = await triton.get_inference_statistics("cancer", "v1", as_json=True)
    assert pinned["model_stats"][0]["inference_count"] == "13"  # protobuf's JSON: uint64, quoted
    assert json_format.ParseDict(pinned, service_pb2.ModelStatisticsResponse()).model_stats == [v1]


async def test_statistics_of_every_model_are_the_http_ones(triton, http, served) -> None:
    response = await triton.get_inference_statistics()
    over_http = await http_json(http, "/v2/models/stats")

    assert response == json_format.ParseDict(over_http, service_pb2.ModelStatisticsResponse())
    assert [(s.name, s.version) for s in response.model_stats] == [
        ("cancer", "v1"),
        ("cancer", "v2"),
        ("half", "v1"),
        ("visits", "1"),
    ]
    as_json = await triton.get_inference_statistics(as_json=True)
    assert [s["name"] for s in as_json["model_stats"]] == ["cancer", "cancer", "half", "visits"]


def call_of(channel: grpc.aio.Channel, rpc: str) -> tuple[Any, Any]:
    """The RPC, with turnout's own message classes, and its request class."""
    request, response = messages.METHODS[rpc]
    call = channel.unary_unary(
        f"/{messages.SERVICE}/{rpc}",
        request_serializer=request.SerializeToString,
        response_deserializer=response.FromString,
    )
    return call, request


@pytest.mark.parametrize("rpc", ["ModelConfig", "ModelStatistics"])
async def test_unknown_models_are_not_found_and_bad_names_invalid(channel, cancer, rpc) -> None:
    call, request = call_of(channel, rpc)

    code, details, trailing = await status_of(call(request(name="nope")))
    assert code is grpc.StatusCode.NOT_FOUND
    assert "'nope' not found" in details
    assert trailing["turnout-error-code"] == "model_not_found"
    code, _, trailing = await status_of(call(request(name="cancer", version="v9")))
    assert code is grpc.StatusCode.NOT_FOUND
    assert trailing["turnout-error-code"] == "version_not_found"
    for name, version in (("../cancer", ""), ("cancer", "v 1"), ("x" * 200, "")):
        code, details, _ = await status_of(call(request(name=name, version=version)))
        assert code is grpc.StatusCode.INVALID_ARGUMENT, (name, version, details)


async def test_a_config_needs_a_model_and_statistics_a_model_for_a_version(channel, cancer) -> None:
    call, request = call_of(channel, "ModelConfig")
    code, _, trailing = await status_of(call(request()))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert trailing["turnout-error-field"] == "name"

    call, request = call_of(channel, "ModelStatistics")
    code, details, trailing = await status_of(call(request(version="v1")))
    assert code is grpc.StatusCode.INVALID_ARGUMENT, details
    assert trailing["turnout-error-field"] == "name"
