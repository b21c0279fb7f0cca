"""KServe V1 over a real aiohttp server, with real ONNX models."""

from __future__ import annotations

import numpy as np
import pytest
from web_helpers import assert_close, expect_error

PREDICT = "/v1/models/cancer:predict"


async def test_predict_with_instances_keyed_by_feature_equals_predict(
    http, cancer, binary_data
) -> None:
    instances = binary_data.records(6)
    expected = await cancer.predict("cancer", instances)
    response = await http.post(PREDICT, json={"instances": instances})
    assert response.status == 200, await response.text()
    body = await response.json()
    assert list(body) == ["predictions"]
    assert_close(body["predictions"], expected)


async def test_predict_with_lists_of_values_equals_predict(http, cancer, binary_data) -> None:
    instances = binary_data.X_test.iloc[:4].to_numpy().tolist()
    expected = await cancer.predict("cancer", instances)
    body = await (await http.post(PREDICT, json={"instances": instances})).json()
    assert_close(body["predictions"], expected)


async def test_a_multiclass_model_predicts_a_row_of_probabilities_per_instance(
    http, server, iris_model, multiclass_data
) -> None:
    await server.deploy_model("iris", "v1", iris_model)
    X = multiclass_data.X_test.to_numpy()[:5]
    body = await (await http.post("/v1/models/iris:predict", json={"instances": X.tolist()})).json()
    assert np.shape(body["predictions"]) == (5, 3)
    assert_close(body["predictions"], iris_model.predict_proba(X))


async def test_a_label_deployment_predicts_labels(
    http, server, iris_model, multiclass_data
) -> None:
    await server.deploy_model("iris", "v1", iris_model, output="label")
    X = multiclass_data.X_test.to_numpy()[:5]
    body = await (await http.post("/v1/models/iris:predict", json={"instances": X.tolist()})).json()
    assert body["predictions"] == iris_model.predict(X).tolist()


async def test_key_and_timeout_parameters_are_honoured(http, cancer, binary_data) -> None:
    request = {"instances": binary_data.records(1), "parameters": {"key": "u1", "timeout": 5}}
    assert (await http.post(PREDICT, json=request)).status == 200
    request["parameters"] = {"timeout": "soon"}
    error = await expect_error(await http.post(PREDICT, json=request), 400, "invalid_request")
    assert error["field"] == "parameters.timeout"


async def test_list_models_and_model_readiness(http, cancer, server, forest_regressor) -> None:
    await server.deploy_model("diabetes", "v1", forest_regressor)
    assert await (await http.get("/v1/models")).json() == {"models": ["cancer", "diabetes"]}
    response = await http.get("/v1/models/cancer")
    assert (response.status, await response.json()) == (200, {"name": "cancer", "ready": True})
    await expect_error(await http.get("/v1/models/nope"), 404, "model_not_found")


async def test_an_unknown_model_is_404(http, cancer) -> None:
    response = await http.post("/v1/models/nope:predict", json={"instances": [[1.0]]})
    await expect_error(response, 404, "model_not_found")


async def test_predict_is_post_only(http, cancer) -> None:
    response = await http.get(PREDICT)
    await expect_error(response, 405, "method_not_allowed")
    assert response.headers["Allow"] == "POST"


@pytest.mark.parametrize(
    ("body", "status", "code", "words"),
    [
        ({}, 400, "invalid_request", "instances is missing"),
        ({"inputs": [[1.0]]}, 400, "invalid_request", "instances is missing"),
        ({"instances": {"mean radius": 1.0}}, 400, "invalid_request", "must be a list"),
        ({"instances": []}, 400, "invalid_request", "at least one"),
        ([[1.0]], 400, "invalid_request", "JSON object"),
        ({"instances": [[1.0, 2.0]]}, 400, "invalid_input", "expected 30 values"),
        ({"instances": [1.0, 2.0]}, 400, "invalid_input", "row 0"),
        ({"instances": [{"mean radius": 1.0}]}, 400, "invalid_input", "missing feature"),
        ({"instances": [["x"] * 30]}, 400, "invalid_input", "expected a number"),
        ({"instances": [[None] * 30]}, 400, "invalid_input", "expected a number"),
        ({"instances": [[1.0] * 30, {"a": 1}]}, 400, "invalid_input", "row 1"),
        ({"instances": [[1.0] * 30] * 5000}, 400, "invalid_input", "limit is 4096"),
    ],
)
async def test_bad_instances_are_4xx(http, cancer, body, status, code, words) -> None:
    error = await expect_error(await http.post(PREDICT, json=body), status, code)
    assert words in error["error"]


async def test_an_unknown_feature_is_named(http, cancer, binary_data) -> None:
    (row,) = binary_data.records(1)
    row["mean radiuss"] = row.pop("mean radius")
    error = await expect_error(
        await http.post(PREDICT, json={"instances": [row]}), 400, "invalid_input"
    )
    assert "mean radius" in error["error"]
    assert error["field"] in ("mean radius", "mean radiuss")
