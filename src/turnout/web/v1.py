"""KServe's V1 protocol (the TensorFlow Serving REST style) over HTTP.

Specification: KServe "V1 Protocol" data plane,
https://kserve.github.io/website/docs/concepts/architecture/data-plane/v1-protocol.

Endpoints::

    GET  /                             {"status": "alive"}: liveness, as KServe's server answers
    GET  /v1/models                    {"models": [names]}
    GET  /v1/models/{model}            {"name": model, "ready": bool}
    POST /v1/models/{model}:predict    {"instances": [...]} -> {"predictions": [...]}

Instances are rows: objects keyed by feature name, or lists of values in the
model's feature order. Predictions are what :meth:`ModelServer.predict`
returns, one per instance. Like V2, ``parameters.key`` and
``parameters.timeout`` may go with the instances. V1 answers have no field
for it, so the version that served is named in the ``Model-Version``
header.
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from turnout.core.names import check_name
from turnout.web.body import (
    bad_request,
    check_json_type,
    get_list,
    parse_json,
    read_bytes,
    require_object,
)
from turnout.web.jsonio import array_to_json, dumps_bytes
from turnout.web.keys import SERVER_KEY
from turnout.web.models import is_ready
from turnout.web.params import CallOptions, call_options

__all__ = ["VERSION_HEADER", "setup_v1"]

VERSION_HEADER = "Model-Version"

# A model name never holds ":" (check_name refuses it), so ":predict" cannot be part of one.
_MODEL = "{model:[^{}/:]+}"


class _Predict(msgspec.Struct):
    # Rows of numbers, the common case; rows as objects go to the reference reader.
    instances: list[list[int | float]]
    parameters: dict[str, Any] | None = None


_DECODER = msgspec.json.Decoder(_Predict)
_NO_OPTIONS = CallOptions()


def read_predict(body: bytes) -> tuple[list[Any], CallOptions]:
    """Return a predict body's instances and call options, or raise a 400 naming the fault.

    Rows of numbers are decoded by msgspec in one compiled pass (see
    :mod:`turnout.web.v2_request` for why no scan of the body is needed);
    anything else is read field by field, and both give the same answer.
    """
    try:
        typed = _DECODER.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        typed = None
    if typed is not None and typed.instances:
        if typed.parameters is None:
            return typed.instances, _NO_OPTIONS
        return typed.instances, call_options({"parameters": typed.parameters})
    return read_predict_fields(require_object(parse_json(body), None))


def read_predict_fields(body: dict[str, Any]) -> tuple[list[Any], CallOptions]:
    """Read a parsed predict body field by field: the reference for :func:`read_predict`."""
    instances = get_list(body, "instances", "instances")
    if not instances:
        raise bad_request("instances is empty: send at least one instance", "instances")
    return instances, call_options(body)


def setup_v1(app: web.Application) -> None:
    """Add the V1 routes to ``app``."""
    app.router.add_get("/", server_live)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get(f"/v1/models/{_MODEL}", model_ready)
    app.router.add_post(f"/v1/models/{_MODEL}:predict", predict)


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # Bytes straight from orjson: json_response would encode a str to UTF-8 again.
    return web.Response(
        body=dumps_bytes(body),
        status=status,
        headers=headers,
        content_type="application/json",
        charset="utf-8",
    )


async def server_live(request: web.Request) -> web.Response:
    """GET /: 200 while the process answers at all (the KServe SDK's V1 ``is_server_live``)."""
    return _json({"status": "alive"})


async def list_models(request: web.Request) -> web.Response:
    """GET /v1/models: the names of every deployed model."""
    return _json({"models": sorted(request.app[SERVER_KEY].get_all_models_status())})


async def model_ready(request: web.Request) -> web.Response:
    """GET /v1/models/{model}: 200 if the model can serve now, 503 if not, 404 if unknown."""
    model = check_name("model", request.match_info["model"])
    ready = is_ready(request.app[SERVER_KEY], model, None)
    return _json({"name": model, "ready": ready}, 200 if ready else 503)


async def predict(request: web.Request) -> web.Response:
    """POST /v1/models/{model}:predict: one prediction per instance."""
    server = request.app[SERVER_KEY]
    model = check_name("model", request.match_info["model"])
    server.get_routing(model)  # 404 for an unknown model before the body is read
    check_json_type(request)
    instances, options = read_predict(await read_bytes(request))
    result = await server.infer(model, instances, key=options.key, timeout=options.timeout)
    return _json(
        {"predictions": array_to_json(result.outputs, flat=False)},
        headers={VERSION_HEADER: result.version},
    )
