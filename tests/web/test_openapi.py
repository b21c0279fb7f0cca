"""GET /openapi.json: a valid OpenAPI 3.1 document that covers every route and tells the truth."""

from __future__ import annotations

from typing import Any

import jsonschema
import openapi_spec_validator
import pytest
from web_helpers import METHODS, WEB_CODES, operations, tensor

from turnout import ModelServer
from turnout.web import create_app
from turnout.web.errors import ERROR_CODES
from turnout.web.openapi import OPENAPI_PATH, openapi_document


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return openapi_document()


def response_schema(
    document: dict[str, Any], path: str, method: str, status: int
) -> dict[str, Any]:
    """The documented JSON schema of one response, with the components its $refs point into."""
    response = document["paths"][path][method]["responses"][str(status)]
    schema = response["content"]["application/json"]["schema"]
    return {**schema, "components": document["components"]}


def check(instance: Any, schema: dict[str, Any]) -> None:
    """Validate ``instance`` against ``schema`` (JSON Schema 2020-12, as OpenAPI 3.1 uses)."""
    jsonschema.Draft202012Validator(schema).validate(instance)


def test_the_document_is_valid_openapi_3_1(document) -> None:
    openapi_spec_validator.validate(document)


def test_the_document_has_the_openapi_3_1_structure(document) -> None:
    assert document["openapi"].startswith("3.1.")
    assert document["info"]["title"] == "turnout"
    schemas = document["components"]["schemas"]
    for path, item in document["paths"].items():
        assert path.startswith("/")
        for method, op in item.items():
            assert method in METHODS
            assert "200" in op["responses"], (path, method)
            names = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert names == set(_template_names(path)), path
            for status, response in op["responses"].items():
                assert response["description"], (path, method, status)
    for name in _refs(document):
        assert name in schemas, name


def _template_names(path: str) -> list[str]:
    return [part.split("}", 1)[0] for part in path.split("{")[1:]]


def _refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = [value["$ref"].rsplit("/", 1)[-1]] if "$ref" in value else []
        return found + [name for v in value.values() for name in _refs(v)]
    if isinstance(value, list):
        return [name for v in value for name in _refs(v)]
    return []


async def test_every_route_on_the_app_is_documented_and_nothing_else(
    server: ModelServer, document
) -> None:
    app = create_app(server)
    routes = {
        (resource.canonical, route.method)
        for resource in app.router.resources()
        for route in resource
        if route.method != "HEAD"
    }
    assert routes, "the app has no routes?"
    documented = operations(document)
    assert routes - documented == set(), "routes missing from the OpenAPI document"
    assert documented - routes == set(), "documented routes the app does not serve"


def test_every_error_code_is_documented_under_its_status(document) -> None:
    statuses = {spec.code: spec.status for spec in ERROR_CODES.values()} | WEB_CODES
    for path, item in document["paths"].items():
        for method, op in item.items():
            for status, response in op["responses"].items():
                schema = response["content"].get("application/json", {}).get("schema", {})
                if "allOf" not in schema:  # not the Error body (a 200, a readiness 503)
                    continue
                assert schema["allOf"][0] == {"$ref": "#/components/schemas/Error"}
                codes = schema["allOf"][1]["properties"]["code"]["enum"]
                for code in codes:
                    assert statuses.get(code) == int(status), (path, method, status, code)
                if status == "503":
                    assert "Retry-After" in response["headers"]


async def test_served_over_http_as_json(http, document) -> None:
    response = await http.get(OPENAPI_PATH)
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.json() == document


async def test_a_v2_inference_answer_matches_its_schema(
    http, cancer, binary_data, document
) -> None:
    X = binary_data.X_test.iloc[:3]
    request = {"id": "req-1", "inputs": [tensor("input", X.to_numpy())]}
    response = await http.post("/v2/models/cancer/infer", json=request)
    assert response.status == 200
    body = await response.json()
    check(body, response_schema(document, "/v2/models/{model}/infer", "post", 200))
    assert {o["name"] for o in body["outputs"]} == {"label", "probabilities"}


@pytest.mark.parametrize(
    ("path", "method", "url", "payload", "status"),
    [
        ("/v2", "get", "/v2", None, 200),
        ("/v2/health/ready", "get", "/v2/health/ready", None, 200),
        ("/v2/models/{model}", "get", "/v2/models/cancer", None, 200),
        (
            "/v2/models/{model}/versions/{version}/ready",
            "get",
            "/v2/models/cancer/versions/v2/ready",
            None,
            200,
        ),
        ("/v1/models", "get", "/v1/models", None, 200),
        ("/v1/models/{model}:predict", "post", "/v1/models/cancer:predict", "rows", 200),
        ("/v2/models/{model}", "get", "/v2/models/nope", None, 404),
        ("/v2/models/{model}/infer", "post", "/v2/models/cancer/infer", {"inputs": []}, 400),
        ("/v1/models/{model}:predict", "post", "/v1/models/cancer:predict", "bad", 415),
    ],
)
async def test_other_answers_match_their_schemas(
    http, cancer, binary_data, document, path, method, url, payload, status
) -> None:
    if payload == "rows":
        payload = {"instances": binary_data.records(2)}
    if payload == "bad":
        response = await http.post(url, data=b"instances")
    else:
        response = await http.request(method.upper(), url, json=payload)
    assert response.status == status, await response.text()
    check(await response.json(), response_schema(document, path, method, status))
