"""The Open Inference Protocol's model repository extension, on the admin API.

The endpoints Triton and MLServer tooling use (Triton's
``docs/protocol/extension_model_repository.md``)::

    POST /v2/repository/index                      [{"name", "version", "state", "reason"}]
    POST /v2/repository/models/{model}/load        deploy the versions sent as files
    POST /v2/repository/models/{model}/unload      retire every version of the model

``load`` takes Triton's file override: ``{"parameters": {"file:<version>/model.onnx":
base64 ONNX, "config": "<JSON of deploy options>"}}``; each file becomes (or
replaces) that version. Only ONNX files are accepted, under that one name: a
request never names a path to read. Without files, ``load`` of a deployed model
succeeds and changes nothing, as the model is loaded already; turnout has no
unloaded-but-known state, so ``unload`` retires the versions and they leave
the repository.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

import anyio
from aiohttp import web

from turnout.core.errors import ModelNotFoundError, TurnoutError
from turnout.core.execution.convert import load_model
from turnout.core.names import check_name
from turnout.core.routing.config import RoutingConfig
from turnout.core.service.server import ModelServer
from turnout.web.body import (
    bad_request,
    check_json_type,
    get_object,
    parse_json,
    read_bytes,
    require_object,
    type_name,
)
from turnout.web.jsonio import JSONError, dumps, loads
from turnout.web.keys import SERVER_KEY
from turnout.web.models import is_ready
from turnout.web.uploads import decode_onnx, read_options

__all__ = ["file_version", "load_files", "repository_index", "setup_repository", "unload_model"]

_FILE = re.compile(r"file:(?P<version>[^/]+)/model\.onnx")


def setup_repository(app: web.Application) -> None:
    """Add the model repository extension's routes to ``app``."""
    app.router.add_post("/v2/repository/index", index)
    app.router.add_post("/v2/repository/models/{model}/load", load)
    app.router.add_post("/v2/repository/models/{model}/unload", unload)


def _json(body: Any) -> web.Response:
    return web.json_response(body, dumps=dumps)


async def _optional_body(request: web.Request) -> dict[str, Any]:
    """The JSON object body, or {} when there is none (the extension makes it optional)."""
    raw = await read_bytes(request)
    if not raw:
        return {}
    check_json_type(request)
    return require_object(parse_json(raw), None)


async def index(request: web.Request) -> web.Response:
    """POST /v2/repository/index: every version, READY or UNAVAILABLE (``ready``: READY only)."""
    body = await _optional_body(request)
    only_ready = body.get("ready", False)
    if not isinstance(only_ready, bool):
        raise bad_request(f"ready must be true or false, not {type_name(only_ready)}", "ready")
    return _json(repository_index(request.app[SERVER_KEY], only_ready))


def repository_index(server: ModelServer, only_ready: bool) -> list[dict[str, str]]:
    """Return every version as the extension's index lists it: name, version, state, reason."""
    entries = []
    for model, versions in sorted(server.get_all_models_status().items()):
        for version in sorted(versions):
            ready = is_ready(server, model, version)
            if only_ready and not ready:
                continue
            state = "READY" if ready else "UNAVAILABLE"
            entry = {"name": model, "version": version, "state": state}
            if not ready:
                entry["reason"] = "the server is closing" if server.closed else "circuit open"
            entries.append(entry)
    return entries


async def load(request: web.Request) -> web.Response:
    """POST .../models/{model}/load: deploy the ONNX files in ``parameters`` as versions."""
    server = request.app[SERVER_KEY]
    model = check_name("model", request.match_info["model"])
    parameters = get_object(await _optional_body(request), "parameters", "parameters") or {}
    files: dict[str, bytes] = {}
    config: str | None = None
    for key, value in parameters.items():
        where = f"parameters.{key}"
        if key == "config":
            if not isinstance(value, str):
                raise bad_request(f"{where} must be a JSON string, not {type_name(value)}", where)
            config = value
            continue
        files[file_version(key, where)] = decode_onnx(value, where)
    return _json({"name": model, "versions": await load_files(server, model, files, config)})


def file_version(key: str, where: str) -> str:
    """Return the version a load parameter ``file:<version>/model.onnx`` names, or raise a 400."""
    match = _FILE.fullmatch(key)
    if match is None:
        raise bad_request(
            f"{where} is not a parameter load takes: send 'config' and"
            " 'file:<version>/model.onnx' (ONNX) only",
            where,
        )
    return check_name("version", match["version"])


async def load_files(
    server: ModelServer, model: str, files: dict[str, bytes], config: str | None
) -> list[str]:
    """Deploy ``files`` (version -> ONNX) with the deploy options in ``config``; return versions.

    Without files the model must be deployed already (it is loaded: nothing to do).
    """
    if not files:
        if config is not None:
            raise bad_request("config without files: send the model as file:<version>/model.onnx")
        return sorted(_versions(server, model))
    options = {} if config is None else _config(config)
    await _deploy_all(server, model, files, options)
    return sorted(_versions(server, model))


async def _deploy_all(
    server: ModelServer, model: str, files: dict[str, bytes], options: dict[str, Any]
) -> None:
    """Deploy every file, or none: a load that fails must not leave half its versions."""
    # Every file is parsed and checked first, so the usual failure (a file that
    # is not a servable ONNX model) happens before anything changes.
    for onnx_bytes in files.values():
        await anyio.to_thread.run_sync(load_model, onnx_bytes)
    existing = set(server.get_all_models_status().get(model, {}))
    deployed: list[str] = []
    try:
        for version, onnx_bytes in sorted(files.items()):
            # A load replaces what it names, as Triton's reload does.
            await server.deploy_model(model, version, onnx_bytes, replace=True, **options)
            deployed.append(version)
    except TurnoutError:
        # Undo the versions this load added; one it replaced stays replaced.
        for version in reversed(deployed):
            if version not in existing:
                with contextlib.suppress(TurnoutError):
                    await server.retire_model(model, version)
        raise


def _config(value: str) -> dict[str, Any]:
    """Deploy options from ``parameters.config``: a JSON string, as Triton sends its config."""
    where = "parameters.config"
    try:
        config = require_object(loads(value.encode("utf-8", errors="surrogatepass")), where)
    except JSONError as exc:
        raise bad_request(f"{where} is not JSON: {exc}", where) from None
    except UnicodeEncodeError:
        raise bad_request(f"{where} is not valid text", where) from None
    if "replace" in config:
        raise bad_request(f"{where}: a load always replaces the versions it sends", where)
    return read_options(config, where=where)


def _versions(server: ModelServer, model: str) -> dict[str, Any]:
    versions = server.get_all_models_status().get(model)
    if not versions:
        raise ModelNotFoundError(
            f"Model '{model}' is not loaded; send it as parameters 'file:<version>/model.onnx'",
            model_id=model,
        )
    return versions


async def unload(request: web.Request) -> web.Response:
    """POST .../models/{model}/unload: retire every version; requests in flight are answered."""
    model = check_name("model", request.match_info["model"])
    await _optional_body(request)
    await unload_model(request.app[SERVER_KEY], model)
    return _json({"name": model, "versions": []})


async def unload_model(server: ModelServer, model: str) -> None:
    """Retire every version of ``model``, routing and fallback first; in-flight requests finish."""
    versions = _versions(server, model)
    # Routing and the fallback may hold versions; both go before the versions do.
    await server.set_fallback(model, None)
    active = server.active_models.get(model)
    if active is not None:
        await server.set_active_version(model, active)
    else:
        await server.set_routing(model, RoutingConfig())
    for version in sorted(versions, key=lambda v: v == active):
        await server.retire_model(model, version)
