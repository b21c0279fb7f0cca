"""The Open Inference Protocol (V2) over a real aiohttp server, with real ONNX models."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from web_helpers import assert_close, expect_error, tensor

from turnout import ModelServer, RoutingConfig

INFER = "/v2/models/cancer/infer"


async def test_server_metadata_liveness_and_readiness(http, server, binary_model) -> None:
    response = await http.get("/v2")
    assert response.status == 200
    metadata = await response.json()
    assert metadata["name"] == "turnout"
    assert metadata["version"]
    assert metadata["extensions"] == ["binary_tensor_data", "model_configuration", "statistics"]

    assert await (await http.get("/v2/health/live")).json() == {"live": True}
    # Live, but with nothing to serve not ready: a balancer must send it no traffic yet.
    ready = await http.get("/v2/health/ready")
    assert (ready.status, await ready.json()) == (503, {"ready": False})

    await server.deploy_model("cancer", "v1", binary_model)
    ready = await http.get("/v2/health/ready")
    assert (ready.status, await ready.json()) == (200, {"ready": True})

    await server.close()
    ready = await http.get("/v2/health/ready")
    assert (ready.status, await ready.json()) == (503, {"ready": False})
    assert (await http.get("/v2/health/live")).status == 200


async def test_model_metadata_describes_inputs_outputs_and_versions(
    http, cancer, binary_data
) -> None:
    response = await http.get("/v2/models/cancer")
    assert response.status == 200
    metadata = await response.json()
    assert metadata["name"] == "cancer"
    assert metadata["versions"] == ["v1", "v2"]
    assert metadata["platform"] == "onnxruntime_onnx"
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 30]}]
    assert metadata["outputs"] == [
        {"name": "label", "datatype": "INT64", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
        {"name": "predictions", "datatype": "FP32", "shape": [-1]},
    ]
    parameters = metadata["parameters"]
    assert parameters["version"] == "v1"
    assert parameters["active"] is True
    assert parameters["task"] == "classifier"
    assert parameters["features"] == binary_data.features
    assert parameters["classes"] == [0, 1]

    pinned = await (await http.get("/v2/models/cancer/versions/v2")).json()
    assert pinned["parameters"]["version"] == "v2"
    assert pinned["parameters"]["active"] is False


async def test_metadata_of_a_regressor_and_a_multiclass_model(
    http, server, forest_regressor, iris_model
) -> None:
    await server.deploy_model("diabetes", "v1", forest_regressor)
    await server.deploy_model("iris", "v1", iris_model)

    diabetes = await (await http.get("/v2/models/diabetes")).json()
    assert diabetes["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 10]}]
    assert diabetes["outputs"] == [{"name": "predictions", "datatype": "FP32", "shape": [-1]}]
    assert diabetes["parameters"]["task"] == "regressor"
    assert diabetes["parameters"]["features"] is None

    iris = await (await http.get("/v2/models/iris")).json()
    assert [o["name"] for o in iris["outputs"]] == ["label", "probabilities", "predictions"]
    assert iris["outputs"][1]["shape"] == [-1, 3]
    assert iris["outputs"][2]["shape"] == [-1, 3]


async def test_model_readiness(http, cancer) -> None:
    for path in ("/v2/models/cancer/ready", "/v2/models/cancer/versions/v2/ready"):
        response = await http.get(path)
        assert (response.status, await response.json()) == (200, {"name": "cancer", "ready": True})
    await expect_error(await http.get("/v2/models/nope/ready"), 404, "model_not_found")
    await expect_error(
        await http.get("/v2/models/cancer/versions/v9/ready"), 404, "version_not_found"
    )

    await cancer.retire_model("cancer", "v1")  # the active one: v2 is left, inactive
    response = await http.get("/v2/models/cancer/ready")
    assert (response.status, await response.json()) == (503, {"name": "cancer", "ready": False})


async def test_unknown_models_and_versions_are_404_json(http, cancer) -> None:
    body = await expect_error(await http.get("/v2/models/nope"), 404, "model_not_found")
    assert "nope" in body["error"]
    await expect_error(await http.get("/v2/models/cancer/versions/v9"), 404, "version_not_found")
    request = {"inputs": [tensor("input", np.zeros((1, 30)))]}
    await expect_error(
        await http.post("/v2/models/nope/infer", json=request), 404, "model_not_found"
    )
    await expect_error(
        await http.post("/v2/models/cancer/versions/v9/infer", json=request),
        404,
        "version_not_found",
    )


async def test_infer_with_one_2d_tensor_equals_predict(http, cancer, binary_data) -> None:
    X = binary_data.X_test.iloc[:7]
    expected = await cancer.predict("cancer", X)

    response = await http.post(INFER, json={"inputs": [tensor("input", X.to_numpy())]})
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["model_name"] == "cancer"
    assert body["model_version"] == "v1"
    label, probabilities = body["outputs"]
    assert label["name"] == "label"
    assert label["datatype"] == "INT64"
    assert label["shape"] == [7]
    assert probabilities["name"] == "probabilities"
    assert probabilities["datatype"] == "FP32"
    assert probabilities["shape"] == [7, 2]
    assert_close(np.reshape(probabilities["data"], (7, 2))[:, 1], expected)
    assert label["data"] == (expected > 0.5).astype(int).tolist()

    # Nested data, FP64: the same answer.
    nested = {"name": "input", "shape": [7, 30], "datatype": "FP64", "data": X.to_numpy().tolist()}
    again = await (await http.post(INFER, json={"inputs": [nested]})).json()
    assert again["outputs"][1]["data"] == probabilities["data"]


async def test_infer_with_one_tensor_per_feature_equals_predict(http, cancer, binary_data) -> None:
    X = binary_data.X_test.iloc[:5]
    expected = await cancer.predict("cancer", X)
    # Any order; [rows] or [rows, 1] shapes.
    names = list(reversed(binary_data.features))
    inputs = [
        tensor(name, X[name].to_numpy().reshape(-1, 1) if i % 2 else X[name].to_numpy())
        for i, name in enumerate(names)
    ]
    response = await http.post(INFER, json={"inputs": inputs, "outputs": [{"name": "predictions"}]})
    assert response.status == 200, await response.text()
    (predictions,) = (await response.json())["outputs"]
    assert predictions["name"] == "predictions"
    assert predictions["shape"] == [5]
    assert_close(predictions["data"], expected)


async def test_integer_tensors_are_accepted(http, cancer, binary_data) -> None:
    X = np.round(binary_data.X_test.iloc[:3].to_numpy())
    expected = await cancer.predict("cancer", X)
    request = {"inputs": [tensor("input", X.astype(np.int64), "INT64")]}
    body = await (await http.post(INFER, json=request)).json()
    assert_close(np.reshape(body["outputs"][1]["data"], (3, 2))[:, 1], expected)


@pytest.mark.parametrize(
    ("requested", "names"),
    [
        (["probabilities"], ["probabilities"]),
        (["label"], ["label"]),
        (["predictions", "label"], ["predictions", "label"]),
        (["label", "label"], ["label"]),
        ([], ["label", "probabilities"]),
    ],
)
async def test_outputs_selects_what_comes_back(http, cancer, binary_data, requested, names) -> None:
    request = {
        "inputs": [tensor("input", binary_data.X_test.iloc[:2].to_numpy())],
        "outputs": [{"name": name} for name in requested],
    }
    response = await http.post(INFER, json=request)
    assert response.status == 200, await response.text()
    assert [o["name"] for o in (await response.json())["outputs"]] == names


async def test_an_unknown_output_is_400(http, cancer, binary_data) -> None:
    request = {
        "inputs": [tensor("input", binary_data.X_test.iloc[:2].to_numpy())],
        "outputs": [{"name": "label"}, {"name": "scores"}],
    }
    body = await expect_error(await http.post(INFER, json=request), 400, "invalid_request")
    assert body["field"] == "outputs[1].name"
    assert "'scores'" in body["error"]


async def test_a_regressor_answers_with_predictions(
    http, server, forest_regressor, regression_data
) -> None:
    await server.deploy_model("diabetes", "v1", forest_regressor)
    X = regression_data.X_test.to_numpy()[:4]
    expected = await server.predict("diabetes", X)
    body = await (
        await http.post("/v2/models/diabetes/infer", json={"inputs": [tensor("input", X)]})
    ).json()
    (predictions,) = body["outputs"]
    assert predictions["name"] == "predictions"
    assert_close(predictions["data"], expected)

    request = {"inputs": [tensor("input", X)], "outputs": [{"name": "label"}]}
    await expect_error(
        await http.post("/v2/models/diabetes/infer", json=request), 400, "invalid_request"
    )


async def test_a_multiclass_model_answers_with_every_class(
    http, server, iris_model, multiclass_data
) -> None:
    await server.deploy_model("iris", "v1", iris_model)
    X = multiclass_data.X_test.to_numpy()[:6]
    body = await (
        await http.post("/v2/models/iris/infer", json={"inputs": [tensor("input", X)]})
    ).json()
    label, probabilities = body["outputs"]
    assert probabilities["shape"] == [6, 3]
    assert_close(np.reshape(probabilities["data"], (6, 3)), iris_model.predict_proba(X))
    assert label["data"] == iris_model.predict(X).tolist()


async def test_a_pinned_version_url_is_served_by_that_version(
    http, cancer, binary_model_v2, binary_data
) -> None:
    X = binary_data.X_test.iloc[:4]
    expected = await cancer.predict("cancer", X, version="v2")
    response = await http.post(
        "/v2/models/cancer/versions/v2/infer",
        json={"inputs": [tensor("input", X.to_numpy())], "outputs": [{"name": "predictions"}]},
    )
    body = await response.json()
    assert body["model_version"] == "v2"
    assert_close(body["outputs"][0]["data"], expected)
    assert_close(body["outputs"][0]["data"], binary_model_v2.predict_proba(X)[:, 1])


async def test_model_version_names_the_version_that_served(http, cancer, binary_data) -> None:
    await cancer.setup_ab_test("cancer", ["v1", "v2"], [0.5, 0.5])
    X = binary_data.X_test.iloc[:1]
    answers = {
        version: (await cancer.predict("cancer", X, version=version))[0] for version in ("v1", "v2")
    }
    assert abs(answers["v1"] - answers["v2"]) > 1e-3
    request = {"inputs": [tensor("input", X.to_numpy())], "outputs": [{"name": "predictions"}]}
    served = set()
    for _ in range(40):
        body = await (await http.post(INFER, json=request)).json()
        version = body["model_version"]
        served.add(version)
        assert_close(body["outputs"][0]["data"], [answers[version]])
    assert served == {"v1", "v2"}


async def test_id_is_echoed_and_key_routes_sticky(http, cancer, binary_data) -> None:
    await cancer.set_routing(
        "cancer", RoutingConfig("sticky", {"versions": ["v1", "v2"], "weights": [0.5, 0.5]})
    )
    request: dict[str, Any] = {"inputs": [tensor("input", binary_data.X_test.iloc[:1].to_numpy())]}
    body = await (await http.post(INFER, json={**request, "id": "req-42"})).json()
    assert body["id"] == "req-42"
    assert isinstance(body["parameters"]["request_id"], str)

    body = await (await http.post(INFER, json=request)).json()
    assert body["id"] == body["parameters"]["request_id"]  # none sent: turnout's own

    seen = set()
    for key in (f"user-{i}" for i in range(12)):
        keyed = {**request, "parameters": {"key": key}}
        versions = {
            (await (await http.post(INFER, json=keyed)).json())["model_version"] for _ in range(3)
        }
        assert len(versions) == 1, key
        seen |= versions
    assert seen == {"v1", "v2"}


async def test_extra_parameters_and_content_type_charset_are_accepted(
    http, cancer, binary_data
) -> None:
    request = {
        "inputs": [tensor("input", binary_data.X_test.iloc[:1].to_numpy())],
        "parameters": {"timeout": 5, "content_type": "np", "headers": {}},
    }
    response = await http.post(
        INFER,
        data=json.dumps(request),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert response.status == 200, await response.text()


async def test_a_served_request_after_close_is_503_with_retry_after(
    http, cancer, binary_data
) -> None:
    await cancer.close()
    request = {"inputs": [tensor("input", binary_data.X_test.iloc[:1].to_numpy())]}
    response = await http.post(INFER, json=request)
    await expect_error(response, 503, "server_closed")
    assert response.headers["Retry-After"] == "1"


async def test_the_server_is_stored_under_a_typed_key(server: ModelServer) -> None:
    from turnout.web import SERVER_KEY, create_app

    app = create_app(server)
    assert app[SERVER_KEY] is server


class Halver:
    """A hand-written regressor of one feature, which only the python runtime serves."""

    n_features_in_ = 1

    def predict(self, X: Any) -> np.ndarray[Any, Any]:
        return np.asarray(X)[:, 0] / 2


async def test_a_python_version_says_so_in_its_metadata_and_config(
    http, server: ModelServer
) -> None:
    await server.deploy_model("half", "v1", Halver(), runtime="python")

    metadata = await (await http.get("/v2/models/half")).json()
    config = await (await http.get("/v2/models/half/config")).json()

    assert metadata["platform"] == "python"
    assert (config["platform"], config["backend"]) == ("python", "python")
    request = {"inputs": [tensor("input", np.array([[3.0]]))]}
    answer = await (await http.post("/v2/models/half/infer", json=request)).json()
    assert answer["outputs"][0]["data"] == [1.5]
