"""``GET /openapi.json``: the whole HTTP API as an OpenAPI 3.1 document.

The document is a plain dict built from small helpers below: one per kind of
schema, parameter or response that comes back more than once. Status codes
and machine codes follow :mod:`turnout.web.errors`; ``tests/web/test_openapi.py``
checks that every route on the app is documented here, and no other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

import turnout
from turnout.core.names import MAX_NAME_LENGTH
from turnout.web.binary import BINARY_CONTENT_TYPE, HEADER_LENGTH
from turnout.web.jsonio import dumps
from turnout.web.tensors import INPUT_DATATYPES
from turnout.web.v1 import VERSION_HEADER

__all__ = ["OPENAPI_PATH", "add_document_route", "openapi_document", "setup_openapi"]

OPENAPI_PATH = "/openapi.json"

Schema = dict[str, Any]

_V2 = "Open Inference Protocol (V2)"
_V1 = "KServe V1"
_OPS = "Operations"

# What each error status means, for its response's description (docs/http.md, "Errors").
_STATUS_MEANINGS: Mapping[int, str] = {
    400: "The request is malformed, does not follow the protocol, or does not fit the model.",
    401: "No admin token was sent (Authorization: Bearer TOKEN).",
    403: "The admin token is wrong, or, with no token configured, the client is not local.",
    404: "The model, or the version, is not deployed.",
    409: "The version exists already, or a smoke test refused the switch.",
    413: "The request body is over the server's limit (8 MiB by default).",
    415: "The request body is not application/json (nor binary, on V2 inference).",
    422: "The uploaded model cannot be served: not ONNX, invalid, or failing on a row.",
    500: "The model failed on this request's batch, or a bug; the detail is in the server log.",
    503: "Refused for load, an open circuit breaker, or shutdown; retry after Retry-After.",
    504: "The request's timeout passed before its answer was ready.",
}

ErrorCodes = dict[int, tuple[str, ...]]


def model_errors(*, pinned: bool, serving: bool = False) -> ErrorCodes:
    """The machine codes, by status, of a route naming a model (and ``pinned``: a version).

    A ``serving`` route also reads a JSON body and runs the model.
    """
    # not_found: a name the route's pattern cannot hold (a ':' or '/') matches no route.
    not_found = (
        ("model_not_found", "version_not_found", "not_found")
        if pinned
        else ("model_not_found", "not_found")
    )
    if not serving:
        return {400: ("invalid_name",), 404: not_found, 500: ("internal_error",)}
    return {
        400: ("malformed_json", "invalid_request", "invalid_input", "invalid_name"),
        404: not_found,
        413: ("body_too_large",),
        415: ("unsupported_media_type",),
        500: ("model_failed", "internal_error"),
        503: ("overloaded", "circuit_open", "server_closed"),
        504: ("deadline_exceeded",),
    }


# --- schema helpers -------------------------------------------------------------------------


def ref(name: str) -> Schema:
    """A reference to ``#/components/schemas/{name}``."""
    return {"$ref": f"#/components/schemas/{name}"}


def obj(
    properties: Mapping[str, Schema],
    *,
    required: tuple[str, ...] | None = None,
    closed: bool = True,
    description: str | None = None,
) -> Schema:
    """An object schema; every property is required unless ``required`` says otherwise.

    ``closed`` objects (what the server answers) admit no other properties, so
    a field added to a response without documenting it fails the tests.
    """
    schema: Schema = {"type": "object", "properties": dict(properties)}
    schema["required"] = list(properties if required is None else required)
    if closed:
        schema["additionalProperties"] = False
    if description is not None:
        schema["description"] = description
    return schema


def array(items: Schema, description: str | None = None) -> Schema:
    """An array schema of ``items``."""
    schema: Schema = {"type": "array", "items": items}
    if description is not None:
        schema["description"] = description
    return schema


def string(description: str | None = None, **extra: Any) -> Schema:
    """A string schema."""
    schema: Schema = {"type": "string", **extra}
    if description is not None:
        schema["description"] = description
    return schema


BOOLEAN: Schema = {"type": "boolean"}
SHAPE: Schema = array({"type": "integer"}, "Dimensions; -1 for one that varies (rows).")
# A value in tensor data or predictions: numbers; null for NaN and infinities; strings for
# string class labels; booleans as the protocol allows.
SCALAR: Schema = {"type": ["number", "string", "boolean", "null"]}


def _tensor_metadata() -> Schema:
    return obj({"name": string(), "datatype": string(), "shape": SHAPE})


def _request_input() -> Schema:
    nested: Schema = {"anyOf": [SCALAR, {"type": "array"}]}
    return obj(
        {
            "name": string("The 2-D tensor's name (not checked), or a feature's name."),
            "shape": {**SHAPE, "minItems": 1, "maxItems": 2},
            "datatype": string(enum=list(INPUT_DATATYPES)),
            "data": array(nested, "Row-major values, flat or nested in the shape."),
            "parameters": obj(
                {"binary_data_size": _byte_count("The input's data is this many binary bytes.")},
                required=(),
                closed=False,
            ),
        },
        required=("name", "shape", "datatype"),
        closed=False,
    )


def _byte_count(description: str) -> Schema:
    return {"type": "integer", "minimum": 0, "description": description}


def _call_parameters() -> Schema:
    return obj(
        {
            "key": string(
                "Routing key: a sticky routing sends one key to one version.", minLength=1
            ),
            "timeout": {
                "type": "number",
                "exclusiveMinimum": 0,
                "description": "Deadline in seconds.",
            },
            "binary_data_output": {
                **BOOLEAN,
                "description": "Return every output as binary data (V2 inference only).",
            },
        },
        required=(),
        closed=False,
        description="turnout's request parameters; others are accepted and ignored.",
    )


def _schemas() -> dict[str, Schema]:
    return {
        "Error": obj(
            {
                "error": string("What went wrong; no traceback, paths or credentials."),
                "code": string("Stable machine code."),
                "field": string("The request field at fault, e.g. inputs[0].shape."),
            },
            required=("error", "code"),
        ),
        "ServerMetadata": obj(
            {"name": string(const="turnout"), "version": string(), "extensions": array(string())}
        ),
        "Live": obj({"live": BOOLEAN}),
        "Ready": obj({"ready": BOOLEAN}),
        "ModelReady": obj({"name": string(), "ready": BOOLEAN}),
        "TensorMetadata": _tensor_metadata(),
        "ModelMetadata": obj(
            {
                "name": string(),
                "versions": array(string()),
                "platform": string(enum=["onnxruntime_onnx", "python"]),
                "inputs": array(ref("TensorMetadata")),
                "outputs": array(ref("TensorMetadata")),
                "parameters": obj(
                    {
                        "version": string("The version described."),
                        "active": BOOLEAN,
                        "task": string(),
                        "features": {"type": ["array", "null"], "items": string()},
                        "classes": {
                            "type": ["array", "null"],
                            "items": {"type": ["integer", "string"]},
                        },
                    }
                ),
            }
        ),
        "CallParameters": _call_parameters(),
        "RequestInput": _request_input(),
        "InferRequest": obj(
            {
                "id": string("Echoed in the response."),
                "inputs": {**array(ref("RequestInput")), "minItems": 1},
                "outputs": array(
                    obj(
                        {
                            "name": string(),
                            "parameters": obj(
                                {"binary_data": {**BOOLEAN, "description": "Return it in binary."}},
                                required=(),
                                closed=False,
                            ),
                        },
                        required=("name",),
                        closed=False,
                    )
                ),
                "parameters": ref("CallParameters"),
            },
            required=("inputs",),
            closed=False,
        ),
        "ResponseOutput": obj(
            {
                "name": string(enum=["label", "probabilities", "predictions"]),
                "datatype": string(),
                "shape": SHAPE,
                "data": array(SCALAR, "Flat, row-major; absent for a binary output."),
                "parameters": obj(
                    {"binary_data_size": _byte_count("The output's bytes after the JSON.")}
                ),
            },
            required=("name", "datatype", "shape"),
        ),
        "InferResponse": obj(
            {
                "model_name": string(),
                "model_version": string("The version that served this request."),
                "id": string("The request's id, else parameters.request_id."),
                "parameters": obj(
                    {
                        "request_id": string("turnout's id of this answer, for feedback."),
                        "fallback": {"const": True},
                    },
                    required=("request_id",),
                ),
                "outputs": array(ref("ResponseOutput")),
            }
        ),
        "ModelList": obj({"models": array(string())}),
        "PredictRequest": obj(
            {
                "instances": {
                    **array({"type": ["object", "array"]}, "Rows: by feature, or in order."),
                    "minItems": 1,
                },
                "parameters": ref("CallParameters"),
            },
            required=("instances",),
            closed=False,
        ),
        "PredictResponse": obj(
            {"predictions": array({"anyOf": [SCALAR, array(SCALAR)]}, "One per instance.")}
        ),
        "Alive": obj({"status": string(const="alive")}),
        **_triton_schemas(),
    }


def _triton_schemas() -> dict[str, Schema]:
    """Triton's model configuration and statistics answers (turnout.web.triton)."""
    count: Schema = {"type": "integer", "minimum": 0}
    tensor = obj(
        {
            "name": string(),
            "data_type": string("TYPE_FP32, TYPE_INT64, TYPE_STRING, ..."),
            "dims": array({"type": "integer"}, "Dimensions after the batch one; -1 varies."),
        }
    )
    return {
        "DurationStat": obj({"count": count, "ns": {**count, "description": "Nanoseconds."}}),
        "ModelConfig": obj(
            {
                "name": string(),
                "platform": string(enum=["onnxruntime_onnx", "python"]),
                "backend": string(enum=["onnxruntime", "python"]),
                "max_batch_size": {**count, "description": "The version's max_batch_rows."},
                "input": array(tensor),
                "output": array(tensor),
                "dynamic_batching": obj({"max_queue_delay_microseconds": count}),
                "parameters": obj(
                    {
                        "version": obj({"string_value": string()}),
                        "active": obj({"string_value": string(enum=["true", "false"])}),
                    }
                ),
            }
        ),
        "ModelStat": obj(
            {
                "name": string(),
                "version": string(),
                "last_inference": {**count, "description": "Milliseconds since the epoch."},
                "inference_count": {**count, "description": "Rows run through the model."},
                "execution_count": {**count, "description": "Batches executed."},
                "inference_stats": obj(
                    {
                        "success": ref("DurationStat"),
                        "fail": ref("DurationStat"),
                        "compute_infer": ref("DurationStat"),
                    }
                ),
                "batch_stats": {**array({"type": "object"}), "maxItems": 0},
            }
        ),
        "ModelStatistics": obj({"model_stats": array(ref("ModelStat"))}),
    }


# --- parameters, bodies and responses ---------------------------------------------------------


# What check_name accepts: a model or version name is safe in a URL and as a file name.
NAME: Schema = string(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", maxLength=MAX_NAME_LENGTH)


def path_param(name: str, description: str) -> dict[str, Any]:
    """A required path parameter holding a model or version name."""
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": NAME,
    }


MODEL = path_param("model", "The model's name.")
VERSION = path_param("version", "A version of the model; without it the routing picks one.")


def json_content(schema: Schema) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def ok(schema_name: str, description: str = "OK") -> dict[str, Any]:
    """A 200 response with a JSON body of the named schema."""
    return {"description": description, "content": json_content(ref(schema_name))}


def json_body(schema_name: str) -> dict[str, Any]:
    """A required JSON request body of the named schema."""
    return {"required": True, "content": json_content(ref(schema_name))}


def errors(codes: ErrorCodes) -> dict[str, Any]:
    """The error responses with these statuses, each listing the machine codes it may carry."""
    responses: dict[str, Any] = {}
    for status, names in sorted(codes.items()):
        schema = {"allOf": [ref("Error"), obj({"code": string(enum=list(names))}, closed=False)]}
        response: dict[str, Any] = {
            "description": _STATUS_MEANINGS[status],
            "content": json_content(schema),
        }
        if status == 503:
            response["headers"] = {
                "Retry-After": {
                    "description": "Whole seconds to wait before retrying.",
                    "schema": {"type": "integer", "minimum": 1},
                }
            }
        responses[str(status)] = response
    return responses


def operation(
    summary: str,
    tag: str,
    responses: dict[str, Any],
    *,
    parameters: list[dict[str, Any]] | None = None,
    body: str | None = None,
) -> dict[str, Any]:
    """One operation: its summary, tag, path parameters, request body and responses."""
    op: dict[str, Any] = {"summary": summary, "tags": [tag]}
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = json_body(body)
    op["responses"] = responses
    return op


def readiness(summary: str, tag: str, parameters: list[dict[str, Any]]) -> dict[str, Any]:
    """A model readiness check: 200 or 503 with the same body; 400 or 404 for a bad name."""
    return operation(
        summary,
        tag,
        {
            "200": ok("ModelReady", "The model can serve now."),
            "503": ok("ModelReady", "Not ready: no active version, breaker open, or closing."),
            **errors(model_errors(pinned=VERSION in parameters)),
        },
        parameters=parameters,
    )


def _v2_model_paths(prefix: str, parameters: list[dict[str, Any]]) -> dict[str, Any]:
    pinned = VERSION in parameters
    which = " (a pinned version)" if pinned else ""
    return {
        prefix: {
            "get": operation(
                f"Model metadata{which}",
                _V2,
                {"200": ok("ModelMetadata"), **errors(model_errors(pinned=pinned))},
                parameters=parameters,
            )
        },
        f"{prefix}/ready": {"get": readiness(f"Model ready{which}", _V2, parameters)},
        f"{prefix}/infer": {"post": _binary_tensors(_infer_operation(which, pinned, parameters))},
        f"{prefix}/config": {
            "get": operation(
                f"Model configuration (Triton){which}",
                _V2,
                {"200": ok("ModelConfig"), **errors(model_errors(pinned=pinned))},
                parameters=parameters,
            )
        },
        f"{prefix}/stats": {
            "get": operation(
                f"Model statistics (Triton){which}",
                _V2,
                {"200": ok("ModelStatistics"), **errors(model_errors(pinned=pinned))},
                parameters=parameters,
            )
        },
    }


def _infer_operation(which: str, pinned: bool, parameters: list[dict[str, Any]]) -> dict[str, Any]:
    return operation(
        f"Inference{which}",
        _V2,
        {"200": ok("InferResponse"), **errors(model_errors(pinned=pinned, serving=True))},
        parameters=[*parameters, _INFER_HEADER],
        body="InferRequest",
    )


_INFER_HEADER: dict[str, Any] = {
    "name": HEADER_LENGTH,
    "in": "header",
    "required": False,
    "description": (
        "Binary tensor data extension: the length in bytes of the JSON inference request at"
        " the start of the body; the rest is the binary data of the inputs with"
        " parameters.binary_data_size, in input order. With it, any Content-Type is taken."
    ),
    "schema": {"type": "integer", "minimum": 0},
}


def _binary_tensors(op: dict[str, Any]) -> dict[str, Any]:
    """Add the binary tensor data extension's body and answer to an inference operation."""
    raw = {
        "schema": {
            "type": "string",
            "contentMediaType": BINARY_CONTENT_TYPE,
            "description": f"The JSON header ({HEADER_LENGTH} bytes), then raw tensor data.",
        }
    }
    op["requestBody"]["content"][BINARY_CONTENT_TYPE] = raw
    ok_response = op["responses"]["200"]
    ok_response["description"] = (
        "OK: JSON, or, when binary outputs are asked for, the JSON header followed by the"
        " outputs' bytes."
    )
    ok_response["content"][BINARY_CONTENT_TYPE] = raw
    ok_response["headers"] = {
        HEADER_LENGTH: {
            "description": "On a binary answer: the length in bytes of its JSON header.",
            "schema": {"type": "integer", "minimum": 0},
        }
    }
    return op


def _version_header(op: dict[str, Any]) -> dict[str, Any]:
    """Document the header that names the version which answered a V1 prediction."""
    op["responses"]["200"]["headers"] = {
        VERSION_HEADER: {
            "description": "The version that served this request (V1 bodies have no field).",
            "schema": string(),
        }
    }
    return op


def _paths() -> dict[str, Any]:
    plain = errors({500: ("internal_error",)})
    return {
        "/v2": {"get": operation("Server metadata", _V2, {"200": ok("ServerMetadata"), **plain})},
        "/v2/health/live": {
            "get": operation(
                "Server live", _V2, {"200": ok("Live", "The process answers."), **plain}
            )
        },
        "/v2/health/ready": {
            "get": operation(
                "Server ready",
                _V2,
                {
                    "200": ok("Ready", "The server admits requests."),
                    "503": ok("Ready", "The server is shutting down."),
                    **plain,
                },
            )
        },
        **_v2_model_paths("/v2/models/{model}", [MODEL]),
        **_v2_model_paths("/v2/models/{model}/versions/{version}", [MODEL, VERSION]),
        "/v2/models/stats": {
            "get": operation(
                "Statistics of every version of every model (Triton)",
                _V2,
                {"200": ok("ModelStatistics"), **plain},
            )
        },
        "/": {"get": operation("Server live (KServe V1)", _V1, {"200": ok("Alive"), **plain})},
        "/v1/models": {"get": operation("Deployed models", _V1, {"200": ok("ModelList"), **plain})},
        "/v1/models/{model}": {"get": readiness("Model ready", _V1, [MODEL])},
        "/v1/models/{model}:predict": {
            "post": _version_header(
                operation(
                    "Predict, one prediction per instance",
                    _V1,
                    {
                        "200": ok("PredictResponse"),
                        **errors(model_errors(pinned=False, serving=True)),
                    },
                    parameters=[MODEL],
                    body="PredictRequest",
                )
            )
        },
        "/metrics": {
            "get": operation(
                "Serving metrics, one sample per model and version",
                _OPS,
                {
                    "200": {
                        "description": "The Prometheus text exposition format.",
                        "content": {"text/plain": {"schema": string()}},
                    },
                    **plain,
                },
            )
        },
        OPENAPI_PATH: {
            "get": operation(
                "This document",
                _OPS,
                {
                    "200": {
                        "description": "The OpenAPI 3.1 document of this API.",
                        "content": json_content({"type": "object"}),
                    },
                    **plain,
                },
            )
        },
    }


def openapi_document() -> dict[str, Any]:
    """Return the OpenAPI 3.1 document of every route :func:`~turnout.web.create_app` serves."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "turnout",
            "version": turnout.__version__,
            "description": (
                "Model serving over the Open Inference Protocol (KServe V2) and KServe V1;"
                " see docs/http.md. Any path answers an unknown endpoint with 404 `not_found`"
                " and a wrong method with 405 `method_not_allowed` (and an `Allow` header),"
                " both with the Error body."
            ),
        },
        "tags": [{"name": _V2}, {"name": _V1}, {"name": _OPS}],
        "paths": _paths(),
        "components": {"schemas": _schemas()},
    }


def setup_openapi(app: web.Application) -> None:
    """Add ``GET /openapi.json`` to ``app``."""
    add_document_route(app, openapi_document())


def add_document_route(app: web.Application, document: Mapping[str, Any]) -> None:
    """Serve ``document`` at ``GET /openapi.json``, serialised once."""
    body = dumps(document)

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(text=body, content_type="application/json")

    app.router.add_get(OPENAPI_PATH, openapi)
