"""The admin API: deploy, route, roll out, retire and inspect models over HTTP.

It is a separate aiohttp application, served on its own listener (127.0.0.1
by default), so the inference port can face clients while changes to the
models stay behind a token. Every route but ``/openapi.json`` requires
``Authorization: Bearer TOKEN`` (:mod:`turnout.web.auth`).

Endpoints (all JSON)::

    GET    /admin/status                                   every model and version
    GET    /admin/fleet                                    every live server sharing its state
    GET    /admin/health                                   every version's health
    GET    /admin/models/{model}                           one model: versions, routing, fallback
    POST   /admin/models/{model}/versions/{version}        upload and deploy an ONNX version
    DELETE /admin/models/{model}/versions/{version}        retire a version
    PUT    /admin/models/{model}/active                    {"version": v}
    GET    /admin/models/{model}/routing                   the RoutingConfig
    PUT    /admin/models/{model}/routing                   {"strategy": s, "params": {...}}
    POST   /admin/models/{model}/canary                    start a canary rollout
    DELETE /admin/models/{model}/canary                    abort it
    GET    /admin/models/{model}/rollouts                  rollout history
    POST   /admin/models/{model}/blue-green                switch to green, after smoke tests
    POST   /admin/models/{model}/blue-green/rollback       back to blue
    GET    /admin/models/{model}/versions/{version}/breaker
    POST   /admin/models/{model}/versions/{version}/breaker/reset
    GET    /admin/models/{model}/versions/{version}/health
    GET|PUT|DELETE /admin/models/{model}/fallback          {"version": v} or {"value": x}
    GET    /admin/models/{model}/compare?a=v1&b=v2         A/B comparison of outcomes
    POST   /admin/models/{model}/outcomes                  outcome feedback for request ids
    GET    /admin/models/{model}/shadow                    shadow versions' statistics
    GET    /admin/snapshot                                 all the status page shows

plus the status page at ``/ui/`` (:mod:`turnout.web.status_page`) and
the Open Inference Protocol's model repository extension
(:mod:`turnout.web.repository`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from turnout.core.errors import InvalidConfigError, TurnoutError
from turnout.core.execution.model_uris import MlflowSource
from turnout.core.names import check_name
from turnout.core.resilience.fallback import Fallback
from turnout.core.routing.config import RoutingConfig
from turnout.core.service.server import ModelServer
from turnout.web.app import check_max_body_bytes
from turnout.web.auth import check_token, loopback_only, require_token
from turnout.web.body import (
    bad_request,
    get_list,
    get_string,
    read_json,
    require_object,
    type_name,
)
from turnout.web.errors import error_middleware
from turnout.web.jsonio import dumps
from turnout.web.keys import MAX_BODY_KEY, SERVER_KEY
from turnout.web.records import fallback_json, model_view, to_json
from turnout.web.repository import setup_repository
from turnout.web.snapshot import setup_snapshot
from turnout.web.status_page import setup_status_page
from turnout.web.uploads import read_number, read_upload

__all__ = ["DEFAULT_ADMIN_MAX_BODY_BYTES", "create_admin_app"]

# Model uploads are base64 ONNX: a 100-tree forest is a few MB, so 64 MiB leaves room.
DEFAULT_ADMIN_MAX_BODY_BYTES = 64 * 1024 * 1024

_MODEL = "/admin/models/{model}"
_VERSION = _MODEL + "/versions/{version}"


def create_admin_app(
    server: ModelServer,
    *,
    token: str | None,
    allow_unauthenticated: bool = False,
    max_body_bytes: int = DEFAULT_ADMIN_MAX_BODY_BYTES,
) -> web.Application:
    """Return the admin API for ``server``, requiring ``token`` as a bearer token.

    With ``token=None`` the caller must pass ``allow_unauthenticated=True``,
    and the API then answers loopback connections only.
    """
    if not isinstance(server, ModelServer):
        raise InvalidConfigError(f"expected a ModelServer, got {type(server).__name__}")
    if token is None and not allow_unauthenticated:
        raise InvalidConfigError(
            "the admin API needs a token; pass allow_unauthenticated=True to serve it"
            " without one, to loopback connections only"
        )
    gate = require_token(check_token(token)) if token is not None else loopback_only
    check_max_body_bytes(max_body_bytes)
    app = web.Application(client_max_size=max_body_bytes, middlewares=[error_middleware, gate])
    app[SERVER_KEY] = server
    app[MAX_BODY_KEY] = max_body_bytes
    router = app.router
    router.add_get("/admin/status", status)
    router.add_get("/admin/health", health)
    router.add_get("/admin/fleet", fleet)
    router.add_get(_MODEL, model_status)
    router.add_post(_VERSION, deploy)
    router.add_delete(_VERSION, retire)
    router.add_put(_MODEL + "/active", set_active)
    router.add_get(_MODEL + "/routing", get_routing)
    router.add_put(_MODEL + "/routing", set_routing)
    router.add_post(_MODEL + "/canary", start_canary)
    router.add_delete(_MODEL + "/canary", abort_canary)
    router.add_get(_MODEL + "/rollouts", rollouts)
    router.add_post(_MODEL + "/blue-green", blue_green_switch)
    router.add_post(_MODEL + "/blue-green/rollback", blue_green_rollback)
    router.add_get(_VERSION + "/breaker", breaker)
    router.add_post(_VERSION + "/breaker/reset", reset_breaker)
    router.add_get(_VERSION + "/health", version_health)
    router.add_get(_MODEL + "/fallback", get_fallback)
    router.add_put(_MODEL + "/fallback", set_fallback)
    router.add_delete(_MODEL + "/fallback", clear_fallback)
    router.add_get(_MODEL + "/compare", compare)
    router.add_post(_MODEL + "/outcomes", outcomes)
    router.add_get(_MODEL + "/shadow", shadow)
    setup_repository(app)
    setup_snapshot(app)
    setup_status_page(app, token_required=token is not None)
    from turnout.web.admin_openapi import setup_admin_openapi

    setup_admin_openapi(app)
    return app


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(to_json(body), status=status, dumps=dumps)


def _names(request: web.Request) -> tuple[ModelServer, str, str | None]:
    """The server, and the model and version named in the URL, both checked."""
    model = check_name("model", request.match_info["model"])
    version = request.match_info.get("version")
    if version is not None:
        check_name("version", version)
    return request.app[SERVER_KEY], model, version


async def _body(request: web.Request) -> dict[str, Any]:
    return require_object(await read_json(request), None)


def _only(body: Mapping[str, Any], allowed: set[str]) -> None:
    """Refuse keys a request does not take: a typo must not pass for a default."""
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise bad_request(f"unknown keys {unknown}; this request takes {sorted(allowed)}")


# -- status and health ----------------------------------------------------------------------


async def fleet(request: web.Request) -> web.Response:
    """GET /admin/fleet: every live server sharing this one's control state (workers, hosts)."""
    return _json({"processes": await request.app[SERVER_KEY].fleet()})


async def status(request: web.Request) -> web.Response:
    """GET /admin/status: every model, its active version, routing and versions' status."""
    server = request.app[SERVER_KEY]
    models = sorted(server.get_all_models_status())
    # The pid tells the workers of `turnout serve --workers N` apart behind their one port.
    return _json(
        {"models": {model: model_view(server, model) for model in models}, "pid": os.getpid()}
    )


async def health(request: web.Request) -> web.Response:
    """GET /admin/health: the health report of every deployed version."""
    server = request.app[SERVER_KEY]
    reports = [
        await server.health_check(model, version)
        for model, versions in sorted(server.get_all_models_status().items())
        for version in versions
    ]
    return _json({"reports": reports})


async def model_status(request: web.Request) -> web.Response:
    """GET /admin/models/{model}: the model's versions, routing and fallback."""
    server, model, _ = _names(request)
    return _json(model_view(server, model))


async def version_health(request: web.Request) -> web.Response:
    """GET .../versions/{version}/health: one version's health report."""
    server, model, version = _names(request)
    return _json(await server.health_check(model, version))


# -- versions -------------------------------------------------------------------------------


async def deploy(request: web.Request) -> web.Response:
    """POST .../versions/{version}: deploy the uploaded ONNX model as this version; 201."""
    server, model, version = _names(request)
    assert version is not None
    upload = read_upload(await _body(request))
    source: bytes | MlflowSource = (
        _registry_source(server, upload.source) if isinstance(upload.source, str) else upload.source
    )
    # allow_pickle stays False: from a registry only the onnx flavor deploys.
    await server.deploy_model(model, version, source, allow_pickle=False, **upload.options)
    view = model_view(server, model)
    return _json(
        {
            "model": model,
            "version": version,
            "sha256": upload.sha256,
            "active": view["active"] == version,
            "status": view["versions"][version],
        },
        status=201,
    )


def _registry_source(server: ModelServer, uri: str) -> MlflowSource:
    """``uri`` as a request may name it: the tracking server's own artifacts, and nothing else."""
    from turnout.plugins.mlflow import MlflowTracker

    # A tracker configured with a tracking URI names the server it logs to; without
    # one, MLflow's own configuration must name it (see sources.resolve).
    tracking_uri = next(
        (
            plugin.config.tracking_uri
            for plugin in server.plugin_manager.get_plugins()
            if isinstance(plugin, MlflowTracker) and plugin.config.tracking_uri
        ),
        None,
    )
    return MlflowSource(uri, registry_only=True, tracking_uri=tracking_uri)


async def retire(request: web.Request) -> web.Response:
    """DELETE .../versions/{version}: retire the version; in-flight requests are answered."""
    server, model, version = _names(request)
    assert version is not None
    await server.retire_model(model, version)
    return _json({"model": model, "retired": version, "active": server.active_models.get(model)})


async def set_active(request: web.Request) -> web.Response:
    """PUT .../active: send all traffic to the version named in the body."""
    server, model, _ = _names(request)
    body = await _body(request)
    _only(body, {"version"})
    version = check_name("version", get_string(body, "version", "version"))
    await server.set_active_version(model, version)
    return _json(model_view(server, model))


# -- routing and rollouts -------------------------------------------------------------------


async def get_routing(request: web.Request) -> web.Response:
    """GET .../routing: the model's RoutingConfig."""
    server, model, _ = _names(request)
    return _json(server.get_routing(model).to_dict())


async def set_routing(request: web.Request) -> web.Response:
    """PUT .../routing: replace the model's routing (weighted, sticky, shadow, ...)."""
    server, model, _ = _names(request)
    body = await _body(request)
    _only(body, {"strategy", "params"})
    strategy = get_string(body, "strategy", "strategy")
    params = body.get("params", {})
    if not isinstance(params, dict):
        raise bad_request(f"params must be an object, not {type_name(params)}", "params")
    await server.set_routing(model, RoutingConfig(strategy or "", params))
    return _json(server.get_routing(model).to_dict())


_CANARY_NUMBERS = ("min_seconds", "max_error_rate", "max_latency_ratio")


async def start_canary(request: web.Request) -> web.Response:
    """POST .../canary: start rolling ``candidate`` out in steps, judged as it goes."""
    server, model, _ = _names(request)
    body = await _body(request)
    _only(body, {"candidate", "baseline", "steps", "min_requests", *_CANARY_NUMBERS})
    candidate = check_name("candidate", get_string(body, "candidate", "candidate"))
    options: dict[str, Any] = {}
    baseline = get_string(body, "baseline", "baseline", required=False)
    if baseline is not None:
        options["baseline"] = check_name("baseline", baseline)
    steps = get_list(body, "steps", "steps", required=False)
    if steps is not None:
        options["steps"] = [read_number(step, f"steps[{i}]") for i, step in enumerate(steps)]
    if "min_requests" in body:
        count = body["min_requests"]
        if isinstance(count, bool) or not isinstance(count, int):
            raise bad_request("min_requests must be a whole number", "min_requests")
        options["min_requests"] = count
    for key in _CANARY_NUMBERS:
        if key in body:
            options[key] = read_number(body[key], key)
    await server.start_canary(model, candidate, **options)
    return _json(model_view(server, model), status=201)


async def abort_canary(request: web.Request) -> web.Response:
    """DELETE .../canary: stop the rollout and send all traffic back to the baseline."""
    server, model, _ = _names(request)
    await server.abort_canary(model)
    return _json(model_view(server, model))


async def rollouts(request: web.Request) -> web.Response:
    """GET .../rollouts: the model's rollout events, oldest first."""
    server, model, _ = _names(request)
    return _json({"events": server.rollout_history(model)})


async def blue_green_switch(request: web.Request) -> web.Response:
    """POST .../blue-green: smoke-test ``green``, then switch all traffic to it."""
    server, model, _ = _names(request)
    body = await _body(request)
    _only(body, {"green", "samples", "expected", "tolerance"})
    green = check_name("green", get_string(body, "green", "green"))
    samples = get_list(body, "samples", "samples", required=False)
    expected = get_list(body, "expected", "expected", required=False)
    if (samples is None) != (expected is None):
        raise bad_request("send samples and expected together, or neither")
    options: dict[str, Any] = {"samples": samples, "expected": expected}
    if "tolerance" in body:
        options["tolerance"] = read_number(body["tolerance"], "tolerance")
    await server.blue_green_switch(model, green, **options)
    return _json(model_view(server, model))


async def blue_green_rollback(request: web.Request) -> web.Response:
    """POST .../blue-green/rollback: send all traffic back to blue."""
    server, model, _ = _names(request)
    await server.blue_green_rollback(model)
    return _json(model_view(server, model))


# -- breakers and fallbacks -----------------------------------------------------------------


async def breaker(request: web.Request) -> web.Response:
    """GET .../versions/{version}/breaker: the version's circuit breaker."""
    server, model, version = _names(request)
    return _json(server.circuit_breaker(model, version))


async def reset_breaker(request: web.Request) -> web.Response:
    """POST .../versions/{version}/breaker/reset: close the breaker and forget failures."""
    server, model, version = _names(request)
    assert version is not None
    await server.reset_circuit_breaker(model, version)
    return _json(server.circuit_breaker(model, version))


async def get_fallback(request: web.Request) -> web.Response:
    """GET .../fallback: the model's fallback, or null."""
    server, model, _ = _names(request)
    return _json({"fallback": fallback_json(server.get_fallback(model))})


async def set_fallback(request: web.Request) -> web.Response:
    """PUT .../fallback: serve ``{"version": v}`` or ``{"value": x}`` while a breaker is open."""
    server, model, _ = _names(request)
    body = await _body(request)
    _only(body, {"version", "value"})
    version = get_string(body, "version", "version", required=False)
    value = body.get("value")
    if value is not None and not _numbers(value):
        raise bad_request("value must be a number or a list of numbers", "value")
    try:
        fallback = Fallback(version=version, value=value)
    except InvalidConfigError as exc:
        raise bad_request(str(exc), code="invalid_config") from None
    await server.set_fallback(model, fallback)
    return _json({"fallback": fallback_json(server.get_fallback(model))})


def _numbers(value: object) -> bool:
    def number(item: object) -> bool:
        return isinstance(item, int | float) and not isinstance(item, bool)

    return number(value) or (isinstance(value, list) and all(number(item) for item in value))


async def clear_fallback(request: web.Request) -> web.Response:
    """DELETE .../fallback: answer with errors again while a breaker is open."""
    server, model, _ = _names(request)
    await server.set_fallback(model, None)
    return _json({"fallback": None})


# -- outcomes and comparisons ---------------------------------------------------------------


async def compare(request: web.Request) -> web.Response:
    """GET .../compare?a=v1&b=v2: whether the two versions' outcomes differ."""
    server, model, _ = _names(request)
    names = []
    for key in ("a", "b"):
        value = request.query.get(key)
        if value is None:
            raise bad_request(f"the query parameter {key} is missing: ?a=v1&b=v2", key)
        names.append(check_name(key, value))
    await server.refresh_outcomes(model)  # every worker's outcomes, not this one's only
    return _json(server.compare_versions(model, names[0], names[1]))


async def outcomes(request: web.Request) -> web.Response:
    """POST .../outcomes: ``{"outcomes": [{"request_id": ..., "outcome": x}, ...]}``."""
    server, model, _ = _names(request)
    body = await _body(request)
    _only(body, {"outcomes"})
    items = get_list(body, "outcomes", "outcomes")
    if not items:
        raise bad_request("outcomes is empty", "outcomes")
    parsed = []
    for i, raw in enumerate(items):
        where = f"outcomes[{i}]"
        item = require_object(raw, where)
        _only(item, {"request_id", "outcome"})
        request_id = get_string(item, "request_id", f"{where}.request_id")
        outcome = read_number(item.get("outcome"), f"{where}.outcome")
        parsed.append((request_id or "", outcome))
    served = []
    for i, (request_id, outcome) in enumerate(parsed):
        try:
            served.append(await server.record_outcome(model, request_id, outcome))
        except TurnoutError as exc:
            if not served:
                raise
            # The ones before were recorded: say so, so the client resends only the rest.
            raise bad_request(
                f"outcomes[{i}]: {exc}; outcomes[0:{i}] were recorded", f"outcomes[{i}]"
            ) from None
    return _json({"recorded": len(served), "versions": served})


async def shadow(request: web.Request) -> web.Response:
    """GET .../shadow: each shadow version's record against its primary."""
    server, model, _ = _names(request)
    return _json({"shadows": server.shadow_statistics(model)})
