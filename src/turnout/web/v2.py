"""The Open Inference Protocol (KServe V2) over HTTP/REST, as KServe, Triton and MLServer speak it.

Specification: "Open Inference Protocol, HTTP/REST", kserve/open-inference-protocol,
``specification/protocol/inference_rest.md`` (also published as
https://kserve.github.io/website/docs/concepts/architecture/data-plane/v2-protocol).

Endpoints::

    GET  /v2                                         server metadata
    GET  /v2/health/live                             server live
    GET  /v2/health/ready                            server ready
    GET  /v2/models/{model}[/versions/{version}]         model metadata
    GET  /v2/models/{model}[/versions/{version}]/ready   model ready
    POST /v2/models/{model}[/versions/{version}]/infer   inference

Without a version the model's routing picks one; ``model_version`` in the
response names the version that served. turnout-specific request
parameters: ``key`` (routing key, for sticky routing) and ``timeout``
(seconds). The response's ``parameters.request_id`` identifies the answer
for outcome feedback.

The binary tensor data extension (Triton's
``docs/protocol/extension_binary_data.md`` in triton-inference-server/server)
is supported on ``infer``: inputs may come as raw bytes after the JSON header
(``Inference-Header-Content-Length``), and outputs go back that way when the
request asks for them. :mod:`turnout.web.binary` does the byte-level work.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from aiohttp import web

import turnout
from turnout.core.deployments.registry import Deployment
from turnout.core.names import check_name
from turnout.core.service.server import InferenceResult, ModelServer
from turnout.web import triton
from turnout.web.binary import binary_response
from turnout.web.body import bad_request
from turnout.web.jsonio import dumps_bytes
from turnout.web.keys import DRAINING_KEY, SERVER_KEY
from turnout.web.models import (
    LABEL,
    OUTPUT_NAMES,
    PREDICTIONS,
    PROBABILITIES,
    deployment_in_hand,
    input_specs,
    is_ready,
    is_server_ready,
    model_versions,
    output_specs,
    result_outputs,
)
from turnout.web.tensors import encode
from turnout.web.v2_inputs import rows_from_inputs
from turnout.web.v2_request import read_infer_request

__all__ = ["answered_outputs", "check_requested", "describe_model", "setup_v2"]

SERVER_NAME = "turnout"
EXTENSIONS = ["binary_tensor_data", *triton.EXTENSIONS]
# Input tensors a request may hold when no version is in hand to say how many features.
MAX_INPUTS = 4096


def setup_v2(app: web.Application) -> None:
    """Add the V2 routes to ``app``."""
    router = app.router
    prefixes = ("/v2/models/{model}", "/v2/models/{model}/versions/{version}")
    # aiohttp tries the resources under /v2/models one after the other, in the
    # order they were added: inference, nearly all the traffic, comes first.
    for prefix in prefixes:
        router.add_post(f"{prefix}/infer", infer)
    router.add_get("/v2", server_metadata)
    router.add_get("/v2/health/live", server_live)
    router.add_get("/v2/health/ready", server_ready)
    for prefix in prefixes:
        router.add_get(prefix, model_metadata)
        router.add_get(f"{prefix}/ready", model_ready)


def _json(body: Any, status: int = 200) -> web.Response:
    # Bytes straight from orjson: json_response would encode a str to UTF-8 again.
    return web.Response(
        body=dumps_bytes(body), status=status, content_type="application/json", charset="utf-8"
    )


def _names(request: web.Request) -> tuple[str, str | None]:
    model = check_name("model", request.match_info["model"])
    version = request.match_info.get("version")
    return model, None if version is None else check_name("version", version)


async def server_metadata(request: web.Request) -> web.Response:
    """GET /v2: the server's name, version and protocol extensions."""
    return _json({"name": SERVER_NAME, "version": turnout.__version__, "extensions": EXTENSIONS})


async def server_live(request: web.Request) -> web.Response:
    """GET /v2/health/live: 200 while the process answers at all."""
    return _json({"live": True})


async def server_ready(request: web.Request) -> web.Response:
    """GET /v2/health/ready: 200 while a model can serve and shutdown has not begun, else 503."""
    ready = not request.app[DRAINING_KEY].is_set() and is_server_ready(request.app[SERVER_KEY])
    return _json({"ready": ready}, 200 if ready else 503)


async def model_ready(request: web.Request) -> web.Response:
    """GET .../ready: 200 if the model (or version) can serve now, 503 if not, 404 if unknown."""
    model, version = _names(request)
    ready = is_ready(request.app[SERVER_KEY], model, version)
    return _json({"name": model, "ready": ready}, 200 if ready else 503)


async def model_metadata(request: web.Request) -> web.Response:
    """GET /v2/models/{model}[/versions/{version}]: inputs, outputs and versions."""
    model, version = _names(request)
    return _json(describe_model(request.app[SERVER_KEY], model, version))


def describe_model(server: ModelServer, model: str, version: str | None) -> dict[str, Any]:
    """Return the ``$metadata_model_response`` of a model (its active version, or ``version``)."""
    deployment = server.get_deployment(model, version)
    signature = deployment.loaded.signature
    features = deployment.schema.feature_names
    parameters: dict[str, Any] = {
        "version": deployment.version,
        "active": server.active_models.get(model) == deployment.version,
        "task": deployment.decoder.task.value,
        "features": None if features is None else list(features),
        "classes": None if signature.classes is None else list(signature.classes),
    }
    return {
        "name": model,
        "versions": model_versions(server, model),
        "platform": "onnxruntime_onnx" if deployment.loaded.onnx_bytes is not None else "python",
        "inputs": [spec.to_json() for spec in input_specs(deployment)],
        "outputs": [spec.to_json() for spec in output_specs(deployment)],
        "parameters": parameters,
    }


async def infer(request: web.Request) -> web.Response:
    """POST .../infer: run the request's inputs through the model."""
    server = request.app[SERVER_KEY]
    model, version = _names(request)
    deployment = deployment_in_hand(server, model, version)
    limit = MAX_INPUTS if deployment is None else deployment.schema.n_features
    decoded = await read_infer_request(request, limit)
    requested, binary, options = decoded.requested, decoded.binary, decoded.options
    check_requested(requested, deployment)
    rows = rows_from_inputs(decoded.tensors, deployment)
    result = await server.infer(
        model, rows, version=version, key=options.key, timeout=options.timeout
    )
    outputs = answered_outputs(result, requested)
    parameters: dict[str, Any] = {"request_id": result.request_id}
    if result.fallback:
        parameters["fallback"] = True
    answer = {
        "model_name": model,
        "model_version": result.version,
        "id": decoded.id if decoded.id is not None else result.request_id,
        "parameters": parameters,
        "outputs": [encode(name, array) for name, array in outputs.items()],
    }
    in_binary = binary.among(list(outputs))
    return binary_response(answer, outputs, in_binary) if in_binary else _json(answer)


def check_requested(requested: Sequence[str] | None, deployment: Deployment | None) -> None:
    """Refuse (400) a requested output the model does not have, before it runs."""
    if requested is None:
        return
    offered = OUTPUT_NAMES if deployment is None else [s.name for s in output_specs(deployment)]
    for i, name in enumerate(requested):
        if name not in offered:
            where = f"outputs[{i}].name"
            raise bad_request(
                f"{where}: this model has no output {name[:60]!r}; its outputs are"
                f" {', '.join(offered)}",
                where,
            )


def answered_outputs(
    result: InferenceResult, requested: Sequence[str] | None
) -> dict[str, np.ndarray[Any, Any]]:
    """Return the outputs an answer carries, in order: those requested, else the defaults.

    A classifier answers with label and probabilities by default, anything
    else with predictions; a requested output the answer lacks (a fixed
    fallback value has no labels) is left out.
    """
    outputs = result_outputs(result)
    if requested is None:
        requested = [name for name in (LABEL, PROBABILITIES) if name in outputs] or [PREDICTIONS]
    return {name: outputs[name] for name in requested if name in outputs}
