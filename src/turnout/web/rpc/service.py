"""The Open Inference Protocol's gRPC service, answered by a ModelServer.

Each RPC does what its HTTP twin in :mod:`turnout.web.v2`,
:mod:`turnout.web.triton` or :mod:`turnout.web.repository` does, through the
same functions: the same routing, batching, input checks and resilience, and
the same error for the same mistake (as a gRPC status: :mod:`turnout.web.rpc.status`).

turnout-specific request parameters, as over HTTP: ``key`` (a string: the
routing key, for sticky routing) and ``timeout`` (seconds, a number). A
client's gRPC deadline bounds the request too: the shorter of the two
applies. The response's ``parameters["request_id"]`` identifies the answer
for outcome feedback.

The repository RPCs change what is served, so they are held to the admin
API's rules: off unless the server has an admin API; with its token, they
need ``authorization: Bearer <token>`` in the call's metadata; without one
(an admin API opened to loopback only), only calls from this machine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import json_format

import turnout
from turnout.core.names import check_name
from turnout.core.service.server import ModelServer
from turnout.web import triton
from turnout.web.auth import check_bearer
from turnout.web.body import bad_request
from turnout.web.errors import RequestError
from turnout.web.hosts import is_loopback
from turnout.web.models import deployment_in_hand, is_ready, is_server_ready
from turnout.web.params import CallOptions, call_options
from turnout.web.repository import file_version, load_files, repository_index, unload_model
from turnout.web.rpc import messages
from turnout.web.rpc.status import abort_with
from turnout.web.rpc.tensors import input_tensors, set_output
from turnout.web.v2 import (
    MAX_INPUTS,
    SERVER_NAME,
    answered_outputs,
    check_requested,
    describe_model,
)
from turnout.web.v2_inputs import rows_from_inputs

__all__ = ["InferenceService", "RepositoryAccess"]

_REPOSITORY_RPCS = frozenset({"RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload"})
_NO_OPTIONS = CallOptions()

Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


@dataclass(frozen=True)
class RepositoryAccess:
    """Who may call the repository RPCs: nobody, holders of ``token``, or loopback callers.

    ``enabled=False`` (no admin API) refuses every call; ``token=None`` with
    ``enabled=True`` admits only callers on this machine.
    """

    enabled: bool = False
    token: str | None = None


class InferenceService:
    """The ``inference.GRPCInferenceService`` RPCs, for one ModelServer.

    ``draining`` is set once shutdown begins: ServerReady then says false.
    """

    def __init__(
        self,
        server: ModelServer,
        *,
        access: RepositoryAccess | None = None,
        draining: asyncio.Event | None = None,
    ) -> None:
        self._server = server
        self._access = access or RepositoryAccess()
        self._token = None if self._access.token is None else self._access.token.encode("ascii")
        self._draining = draining or asyncio.Event()
        self._handlers: Mapping[str, Handler] = {
            "ServerLive": self.server_live,
            "ServerReady": self.server_ready,
            "ModelReady": self.model_ready,
            "ServerMetadata": self.server_metadata,
            "ModelMetadata": self.model_metadata,
            "ModelInfer": self.model_infer,
            "ModelConfig": self.model_config,
            "ModelStatistics": self.model_statistics,
            "RepositoryIndex": self.repository_index,
            "RepositoryModelLoad": self.repository_model_load,
            "RepositoryModelUnload": self.repository_model_unload,
        }

    def generic_handler(self) -> grpc.GenericRpcHandler:
        """Return the handler to add to a ``grpc.aio`` server."""
        methods = {
            name: grpc.unary_unary_rpc_method_handler(
                self._guarded(name, self._handlers[name]),
                request_deserializer=request.FromString,
                response_serializer=response.SerializeToString,
            )
            for name, (request, response) in messages.METHODS.items()
        }
        return grpc.method_handlers_generic_handler(messages.SERVICE, methods)

    def _guarded(self, name: str, handler: Handler) -> Handler:
        """Wrap ``handler``: the repository gate first, and every failure as a status."""
        rpc = f"{messages.SERVICE}/{name}"
        gated = name in _REPOSITORY_RPCS

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                if gated:
                    self._check_access(context)
                return await handler(request, context)
            except (asyncio.CancelledError, grpc.aio.AbortError):
                # The client went away or the deadline passed, or the status is set:
                # gRPC itself answers these.
                raise
            except Exception as exc:
                await abort_with(context, exc, rpc)

        return call

    def _check_access(self, context: grpc.aio.ServicerContext) -> None:
        if not self._access.enabled:
            raise RequestError(
                403,
                "forbidden",
                "the model repository API is off: serve with an admin API (an admin token)"
                " to use it",
            )
        if self._token is not None:
            check_bearer(_metadata(context).get("authorization"), self._token)
        elif not is_loopback(_peer_host(context.peer())):
            raise RequestError(
                403, "forbidden", "the admin API has no token configured and answers only loopback"
            )

    async def server_live(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """ServerLive: true while the process answers at all."""
        return messages.ServerLiveResponse(live=True)

    async def server_ready(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """ServerReady: true while a model can serve and shutdown has not begun."""
        ready = not self._draining.is_set() and is_server_ready(self._server)
        return messages.ServerReadyResponse(ready=ready)

    async def model_ready(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """ModelReady: whether the model (or version) can serve now; NOT_FOUND if unknown."""
        model, version = _names(request.name, request.version, "name")
        return messages.ModelReadyResponse(ready=is_ready(self._server, model, version))

    async def server_metadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """ServerMetadata: the server's name, version and protocol extensions."""
        extensions = list(triton.EXTENSIONS)
        if self._access.enabled:
            extensions.append("model_repository")
        return messages.ServerMetadataResponse(
            name=SERVER_NAME, version=turnout.__version__, extensions=extensions
        )

    async def model_metadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """ModelMetadata: the model's versions, platform, inputs and outputs."""
        model, version = _names(request.name, request.version, "name")
        described = describe_model(self._server, model, version)
        response = messages.ModelMetadataResponse(
            name=model, versions=described["versions"], platform=described["platform"]
        )
        for field in ("inputs", "outputs"):
            for spec in described[field]:
                getattr(response, field).add(
                    name=spec["name"], datatype=spec["datatype"], shape=spec["shape"]
                )
        return response

    async def model_infer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """ModelInfer: run the request's inputs through the model."""
        model, version = _names(request.model_name, request.model_version, "model_name")
        deployment = deployment_in_hand(self._server, model, version)
        limit = MAX_INPUTS if deployment is None else deployment.schema.n_features
        tensors = input_tensors(request, limit)
        requested = [output.name for output in request.outputs] or None
        check_requested(requested, deployment)
        options = _call_options(request.parameters, context.time_remaining())
        rows = rows_from_inputs(tensors, deployment)
        result = await self._server.infer(
            model, rows, version=version, key=options.key, timeout=options.timeout
        )
        response = messages.ModelInferResponse(
            model_name=model,
            model_version=result.version,
            id=request.id or result.request_id,
        )
        response.parameters["request_id"].string_param = result.request_id
        if result.fallback:
            response.parameters["fallback"].bool_param = True
        for name, array in answered_outputs(result, requested).items():
            set_output(response, name, array)
        return response

    async def model_config(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """ModelConfig: the version's configuration (the active one without a version)."""
        model, version = _names(request.name, request.version, "name")
        deployment = self._server.get_deployment(model, version)
        # describe_config answers Triton's JSON form of the message: parsed, not rebuilt.
        config = json_format.ParseDict(
            triton.describe_config(self._server, deployment), messages.ModelConfig()
        )
        return messages.ModelConfigResponse(config=config)

    async def model_statistics(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """ModelStatistics: per-version statistics of every model, of a model, or of one version."""
        if request.name:
            model, version = _names(request.name, request.version, "name")
        elif request.version:
            raise bad_request("version needs a model: name is empty", "name")
        else:
            model, version = None, None
        response = messages.ModelStatisticsResponse()
        for deployment in triton.statistics_deployments(self._server, model, version):
            described = triton.describe_statistics(deployment)
            json_format.ParseDict(described, response.model_stats.add())
        return response

    async def repository_index(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """RepositoryIndex: every version, READY or UNAVAILABLE (``ready``: READY only)."""
        response = messages.RepositoryIndexResponse()
        for entry in repository_index(self._server, request.ready):
            response.models.add(**entry)
        return response

    async def repository_model_load(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """RepositoryModelLoad: deploy the ONNX files in ``parameters`` as versions."""
        model = check_name("model", request.model_name)
        files: dict[str, bytes] = {}
        config: str | None = None
        for key, value in request.parameters.items():
            where = f"parameters[{key!r}]"
            kind = value.WhichOneof("parameter_choice")
            if key == "config":
                if kind != "string_param":
                    raise bad_request(f"{where} must be a string of JSON", where)
                config = value.string_param
                continue
            version = file_version(key, where)
            if kind != "bytes_param":
                raise bad_request(f"{where} must hold the ONNX file's bytes", where)
            files[version] = value.bytes_param
        await load_files(self._server, model, files, config)
        return messages.RepositoryModelLoadResponse()

    async def repository_model_unload(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """RepositoryModelUnload: retire every version; requests in flight are answered."""
        await unload_model(self._server, check_name("model", request.model_name))
        return messages.RepositoryModelUnloadResponse()


def _names(model: str, version: str, field: str) -> tuple[str, str | None]:
    """The model and version a request names; an empty version leaves the choice to routing."""
    if not model:
        raise bad_request(f"{field} must name a model", field)
    return check_name("model", model), check_name("version", version) if version else None


def _call_options(parameters: Any, remaining: float | None) -> CallOptions:
    """Read ``key`` and ``timeout`` as the HTTP side does; the call's deadline bounds it."""
    if parameters:
        values = {name: _value(parameter) for name, parameter in parameters.items()}
        options = call_options({"parameters": values})
    else:  # most calls carry no parameters: no dict, no parsing, no dataclasses.replace
        options = _NO_OPTIONS
    if remaining is None:
        return options
    # A deadline already past still gets an answer: DEADLINE_EXCEEDED, from the batcher.
    remaining = max(remaining, 1e-3)
    timeout = remaining if options.timeout is None else min(options.timeout, remaining)
    return CallOptions(options.key, timeout)


def _value(parameter: Any) -> object:
    """The Python value an ``InferParameter`` holds (None if unset)."""
    kind = parameter.WhichOneof("parameter_choice")
    return None if kind is None else getattr(parameter, kind)


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    return {
        key.lower(): value
        for key, value in context.invocation_metadata() or ()
        if isinstance(value, str)
    }


def _peer_host(peer: str) -> str:
    """The host of a gRPC peer string: ``ipv4:127.0.0.1:5000``, ``ipv6:[::1]:5000``."""
    kind, _, address = peer.partition(":")
    if kind == "ipv6":
        return address.rpartition("]")[0].lstrip("[")
    if kind == "ipv4":
        return address.rpartition(":")[0]
    return ""
