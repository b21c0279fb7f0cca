"""``GET /openapi.json`` on the admin listener: the admin API as an OpenAPI 3.1 document.

Built from the same helpers as the inference API's document
(:mod:`turnout.web.openapi`); ``tests/web/test_admin_openapi.py`` checks that
every admin route is documented here, and no other.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

import turnout
from turnout.core.execution.outputs import OutputMode
from turnout.web.openapi import (
    BOOLEAN,
    OPENAPI_PATH,
    ErrorCodes,
    Schema,
    add_document_route,
    array,
    errors,
    json_content,
    obj,
    ok,
    operation,
    path_param,
    ref,
    string,
)

__all__ = ["admin_openapi_document", "setup_admin_openapi"]

_ADMIN = "Admin"
_REPOSITORY = "Model repository (V2 extension)"

MODEL = path_param("model", "The model's name.")
VERSION = path_param("version", "A version of the model.")

NUMBER: Schema = {"type": "number"}
NULLABLE_STRING: Schema = {"type": ["string", "null"]}
ANY_OBJECT: Schema = {"type": "object"}


def admin_errors(*, body: bool) -> ErrorCodes:
    """The machine codes, by status, an admin operation may answer with (``body``: it reads one)."""
    codes: ErrorCodes = {
        400: ("invalid_name", "invalid_request", "invalid_config", "invalid_routing"),
        401: ("unauthorized",),
        403: ("forbidden",),
        404: ("model_not_found", "version_not_found", "not_found"),
        500: ("internal_error", "store_failed"),
        503: ("server_closed", "unavailable"),
    }
    if body:
        codes[400] = (*codes[400], "malformed_json", "invalid_input")
        codes.update(
            {
                409: ("version_exists", "smoke_test_failed"),
                413: ("body_too_large",),
                415: ("unsupported_media_type",),
                422: ("conversion_failed",),
            }
        )
    return codes


def _options() -> dict[str, Schema]:
    return {
        "features": array(string(), "Feature names, in the model's input order."),
        "metadata": {**ANY_OBJECT, "description": "Your own data, kept with the version."},
        "output": string(enum=[mode.value for mode in OutputMode]),
        "set_active": {**BOOLEAN, "description": "Activate it (default: only if none is)."},
        "allow_nan": BOOLEAN,
        "batching": {**ANY_OBJECT, "description": "BatchingConfig fields."},
        "breaker": {**ANY_OBJECT, "description": "BreakerConfig fields."},
        "error_threshold": NUMBER,
    }


def _schemas() -> dict[str, Schema]:
    routing = obj({"strategy": string(minLength=1), "params": ANY_OBJECT}, required=("strategy",))
    fallback = {
        "oneOf": [
            obj({"version": string()}),
            obj({"value": {"anyOf": [NUMBER, array(NUMBER)]}}),
        ]
    }
    return {
        "Error": obj(
            {"error": string(), "code": string(), "field": string()}, required=("error", "code")
        ),
        "RoutingConfig": routing,
        "Fallback": fallback,
        "FallbackBody": obj({"fallback": {"anyOf": [ref("Fallback"), {"type": "null"}]}}),
        "Model": obj(
            {
                "name": string(),
                "active": NULLABLE_STRING,
                "routing": ref("RoutingConfig"),
                "fallback": {"anyOf": [ref("Fallback"), {"type": "null"}]},
                "versions": {
                    "type": "object",
                    "additionalProperties": ANY_OBJECT,
                    "description": "Each version's status, metrics, metadata and breaker.",
                },
            }
        ),
        "Fleet": obj(
            {
                "processes": {
                    "type": "object",
                    "description": "By lease holder name: pid, host, leads, models (loaded"
                    " versions and revision applied), unloaded, at (epoch seconds).",
                    "additionalProperties": {"type": "object"},
                }
            }
        ),
        "Snapshot": obj(
            {
                "at": {**NUMBER, "description": "When it was taken (epoch seconds)."},
                "sample_seconds": {**NUMBER, "description": "The traffic history's interval."},
                "models": array(
                    ANY_OBJECT,
                    "Per model: versions (status, health, breaker, each with since;"
                    " traffic history), routing, split, observed, canary, rollouts,"
                    " comparison, shadows.",
                ),
                "fleet": array(ANY_OBJECT, "Each live server's heartbeat, less its traffic."),
            }
        ),
        "Status": obj(
            {
                "models": {"type": "object", "additionalProperties": ref("Model")},
                "pid": {"type": "integer", "description": "The answering worker's process id."},
            }
        ),
        "HealthReport": obj(
            {
                "model_id": string(),
                "version": string(),
                "status": string(enum=["healthy", "degraded", "unhealthy", "unknown"]),
                "circuit_breaker_open": BOOLEAN,
                "last_request_time": NULLABLE_STRING,
                "request_count": {"type": "integer"},
                "error_rate": {"type": ["number", "null"]},
                "reasons": array(string()),
            }
        ),
        "Health": obj({"reports": array(ref("HealthReport"))}),
        "Upload": obj(
            {
                "onnx": string("The .onnx file, base64.", contentEncoding="base64"),
                "mlflow_uri": string(
                    "Instead of onnx: models:/name/3, models:/name@alias or runs:/<id>/model in"
                    " the server's MLflow; its onnx flavor is deployed."
                ),
                **_options(),
                "replace": {**BOOLEAN, "description": "Replace the version if it exists."},
            },
            required=(),
        ),
        "Deployed": obj(
            {
                "model": string(),
                "version": string(),
                "sha256": {
                    "type": ["string", "null"],
                    "description": "SHA-256 of the ONNX bytes received; null for an MLflow URI.",
                },
                "active": BOOLEAN,
                "status": ANY_OBJECT,
            }
        ),
        "Retired": obj({"model": string(), "retired": string(), "active": NULLABLE_STRING}),
        "SetActive": obj({"version": string()}),
        "Canary": obj(
            {
                "candidate": string(),
                "baseline": string("The version judged against; the active one if absent."),
                "steps": array(NUMBER, "The candidate's share at each step, e.g. [0.05, 0.25]."),
                "min_requests": {"type": "integer"},
                "min_seconds": NUMBER,
                "max_error_rate": NUMBER,
                "max_latency_ratio": NUMBER,
            },
            required=("candidate",),
        ),
        "Rollouts": obj({"events": array(ANY_OBJECT)}),
        "BlueGreen": obj(
            {
                "green": string(),
                "samples": array({"type": ["object", "array"]}, "Rows to smoke-test green on."),
                "expected": array({}, "What green must answer for the samples."),
                "tolerance": NUMBER,
            },
            required=("green",),
        ),
        "Breaker": obj(
            {
                "state": string(enum=["closed", "open", "half_open"]),
                "reason": string(),
                "opened_at": {"type": ["number", "null"]},
                "retry_after": NUMBER,
                "cool_down": NUMBER,
                "probes_in_flight": {"type": "integer"},
                "probe_successes": {"type": "integer"},
                "times_opened": {"type": "integer"},
            }
        ),
        "Comparison": {**ANY_OBJECT, "required": ["a", "b", "difference", "verdict"]},
        "Outcomes": obj(
            {
                "outcomes": {
                    **array(
                        obj(
                            {
                                "request_id": string("parameters.request_id of an answer."),
                                "outcome": NUMBER,
                            }
                        )
                    ),
                    "minItems": 1,
                }
            }
        ),
        "Recorded": obj(
            {"recorded": {"type": "integer"}, "versions": array(string(), "Who served each.")}
        ),
        "Shadows": obj({"shadows": array(ANY_OBJECT)}),
        # The extension's requests may carry more than turnout reads (Triton's do).
        "IndexRequest": obj({"ready": BOOLEAN}, required=(), closed=False),
        "IndexEntry": obj(
            {
                "name": string(),
                "version": string(),
                "state": string(enum=["READY", "UNAVAILABLE"]),
                "reason": string(),
            },
            required=("name", "version", "state"),
        ),
        "LoadRequest": obj(
            {
                "parameters": {
                    "type": "object",
                    "description": (
                        "'file:<version>/model.onnx': base64 ONNX, one per version to deploy;"
                        " 'config': a JSON string of deploy options."
                    ),
                    "properties": {"config": string()},
                    "additionalProperties": string(contentEncoding="base64"),
                }
            },
            required=(),
            closed=False,
        ),
        "Loaded": obj({"name": string(), "versions": array(string())}),
    }


def _op(
    summary: str,
    answer: str,
    *,
    parameters: list[dict[str, Any]],
    body: str | None = None,
    tag: str = _ADMIN,
    status: int = 200,
) -> dict[str, Any]:
    responses = {str(status): ok(answer)}
    responses.update(errors(admin_errors(body=body is not None)))
    op = operation(summary, tag, responses, parameters=parameters, body=body)
    return op


def _optional_body(op: dict[str, Any]) -> dict[str, Any]:
    op["requestBody"]["required"] = False
    return op


def _paths() -> dict[str, Any]:
    m, mv = [MODEL], [MODEL, VERSION]
    model = "/admin/models/{model}"
    version = model + "/versions/{version}"
    return {
        "/admin/status": {"get": _op("Every model and version", "Status", parameters=[])},
        "/admin/fleet": {
            "get": _op("Every live server sharing this one's control state", "Fleet", parameters=[])
        },
        "/admin/health": {"get": _op("Every version's health", "Health", parameters=[])},
        "/admin/snapshot": {
            "get": _op("All the status page shows, in one answer", "Snapshot", parameters=[])
        },
        model: {"get": _op("One model", "Model", parameters=m)},
        version: {
            "post": _op(
                "Deploy an ONNX version", "Deployed", parameters=mv, body="Upload", status=201
            ),
            "delete": _op("Retire a version", "Retired", parameters=mv),
        },
        model + "/active": {
            "put": _op("Set the active version", "Model", parameters=m, body="SetActive")
        },
        model + "/routing": {
            "get": _op("The model's routing", "RoutingConfig", parameters=m),
            "put": _op("Set the routing", "RoutingConfig", parameters=m, body="RoutingConfig"),
        },
        model + "/canary": {
            "post": _op("Start a canary rollout", "Model", parameters=m, body="Canary", status=201),
            "delete": _op("Abort the canary rollout", "Model", parameters=m),
        },
        model + "/rollouts": {"get": _op("Rollout history", "Rollouts", parameters=m)},
        model + "/blue-green": {
            "post": _op("Blue-green switch to green", "Model", parameters=m, body="BlueGreen")
        },
        model + "/blue-green/rollback": {"post": _op("Roll back to blue", "Model", parameters=m)},
        version + "/breaker": {"get": _op("A version's circuit breaker", "Breaker", parameters=mv)},
        version + "/breaker/reset": {
            "post": _op("Close a version's circuit breaker", "Breaker", parameters=mv)
        },
        version + "/health": {"get": _op("A version's health", "HealthReport", parameters=mv)},
        model + "/fallback": {
            "get": _op("The model's fallback", "FallbackBody", parameters=m),
            "put": _op("Set the fallback", "FallbackBody", parameters=m, body="Fallback"),
            "delete": _op("Remove the fallback", "FallbackBody", parameters=m),
        },
        model + "/compare": {
            "get": _op(
                "Compare two versions' outcomes",
                "Comparison",
                parameters=[
                    *m,
                    {"name": "a", "in": "query", "required": True, "schema": string()},
                    {"name": "b", "in": "query", "required": True, "schema": string()},
                ],
            )
        },
        model + "/outcomes": {
            "post": _op("Record outcomes of answers", "Recorded", parameters=m, body="Outcomes")
        },
        model + "/shadow": {"get": _op("Shadow versions' statistics", "Shadows", parameters=m)},
        "/v2/repository/index": {
            "post": _optional_body(
                {
                    **_op(
                        "Every version and its state",
                        "IndexEntry",
                        parameters=[],
                        tag=_REPOSITORY,
                        body="IndexRequest",
                    ),
                }
            )
        },
        "/v2/repository/models/{model}/load": {
            "post": _optional_body(
                _op(
                    "Deploy the versions sent",
                    "Loaded",
                    parameters=m,
                    body="LoadRequest",
                    tag=_REPOSITORY,
                )
            )
        },
        "/v2/repository/models/{model}/unload": {
            "post": _op("Retire every version", "Loaded", parameters=m, tag=_REPOSITORY)
        },
        OPENAPI_PATH: {
            "get": {
                "summary": "This document",
                "tags": [_ADMIN],
                "security": [],
                "responses": {
                    "200": {
                        "description": "The OpenAPI 3.1 document of the admin API.",
                        "content": json_content(ANY_OBJECT),
                    }
                },
            }
        },
    }


def admin_openapi_document() -> dict[str, Any]:
    """Return the OpenAPI 3.1 document of the admin API (:func:`create_admin_app`)."""
    document = {
        "openapi": "3.1.0",
        "info": {
            "title": "turnout admin",
            "version": turnout.__version__,
            "description": (
                "Deploy, route, roll out and inspect models; see docs/http.md, 'Admin API'."
                " Every operation but this document needs 'Authorization: Bearer TOKEN'."
            ),
        },
        "tags": [{"name": _ADMIN}, {"name": _REPOSITORY}],
        "security": [{"bearer": []}],
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
    index = document["paths"]["/v2/repository/index"]["post"]  # type: ignore[index]
    index["responses"]["200"] = {
        "description": "OK",
        "content": json_content(array(ref("IndexEntry"))),
    }
    return document


def setup_admin_openapi(app: web.Application) -> None:
    """Add ``GET /openapi.json`` (the admin document) to ``app``."""
    add_document_route(app, admin_openapi_document())
