"""Triton's model configuration and statistics extensions of the V2 protocol, over HTTP.

Specifications: ``docs/protocol/extension_model_configuration.md`` and
``docs/protocol/extension_statistics.md`` in triton-inference-server/server.
tritonclient's ``get_model_config`` and ``get_inference_statistics`` call them.
The gRPC service's ``ModelConfig`` and ``ModelStatistics`` RPCs
(:mod:`turnout.web.rpc.service`) answer the same dicts, parsed into Triton's
messages: the JSON here is Triton's JSON form of those messages.

Endpoints::

    GET  /v2/models/{model}[/versions/{version}]/config    the version's configuration
    GET  /v2/models[/{model}[/versions/{version}]]/stats    per-version statistics

Both are built from what turnout already knows: the deployment's signature
and batching options, and its serving metrics. turnout measures a request's
whole time (queue and model) and each batch's execution, not Triton's
split into queue, input, infer and output: ``inference_stats`` has
``success``, ``fail`` and ``compute_infer``, and ``batch_stats`` is empty
(batch sizes are counted in power-of-two buckets, on ``/metrics``).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from turnout.core.deployments.registry import Deployment
from turnout.core.names import check_name
from turnout.core.service.server import ModelServer
from turnout.web.jsonio import dumps_bytes
from turnout.web.keys import SERVER_KEY
from turnout.web.models import TensorSpec, input_specs, model_versions, output_specs

__all__ = ["describe_config", "describe_statistics", "setup_triton", "statistics_deployments"]

EXTENSIONS = ["model_configuration", "statistics"]


def setup_triton(app: web.Application) -> None:
    """Add the model configuration and statistics routes to ``app``."""
    router = app.router
    # A fixed path: aiohttp matches the longest path first, so no model named "stats"
    # hides it (and GET /v2/models/stats is this route, as on Triton).
    router.add_get("/v2/models/stats", statistics)
    for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        router.add_get(f"{prefix}/config", config)
        router.add_get(f"{prefix}/stats", statistics)


def _json(body: Any) -> web.Response:
    return web.Response(body=dumps_bytes(body), content_type="application/json", charset="utf-8")


async def config(request: web.Request) -> web.Response:
    """GET .../config: the version's configuration (the active one without a version)."""
    model = check_name("model", request.match_info["model"])
    version = request.match_info.get("version")
    if version is not None:
        check_name("version", version)
    server = request.app[SERVER_KEY]
    return _json(describe_config(server, server.get_deployment(model, version)))


async def statistics(request: web.Request) -> web.Response:
    """GET .../stats: the statistics of every version of every model, of a model, or of one."""
    deployments = statistics_deployments(
        request.app[SERVER_KEY], request.match_info.get("model"), request.match_info.get("version")
    )
    return _json({"model_stats": [describe_statistics(d) for d in deployments]})


def statistics_deployments(
    server: ModelServer, model: str | None, version: str | None = None
) -> list[Deployment]:
    """The versions a statistics request names: all of every model (``model`` None), or of one.

    ``version`` picks one version of ``model`` (it needs a model). An unknown
    model or version raises its not-found error (a 404); a bad name, a 400.
    """
    if model is None:
        return [
            server.get_deployment(name, v)
            for name in sorted(server.get_all_models_status())
            for v in model_versions(server, name)
        ]
    check_name("model", model)
    if version is None:
        return [server.get_deployment(model, v) for v in model_versions(server, model)]
    return [server.get_deployment(model, check_name("version", version))]


def describe_config(server: ModelServer, deployment: Deployment) -> dict[str, Any]:
    """Return a version's ``ModelConfig`` as Triton's JSON: inputs, outputs, batching."""
    batching = deployment.batcher.config
    onnx = deployment.loaded.onnx_bytes is not None
    active = server.active_models.get(deployment.model_id) == deployment.version
    return {
        "name": deployment.model_id,
        "platform": "onnxruntime_onnx" if onnx else "python",
        "backend": "onnxruntime" if onnx else "python",
        "max_batch_size": batching.max_batch_rows,
        # Triton's dims leave out the batch dimension when max_batch_size > 0.
        "input": [_tensor_config(spec) for spec in input_specs(deployment)],
        "output": [_tensor_config(spec) for spec in output_specs(deployment)],
        "dynamic_batching": {
            "max_queue_delay_microseconds": round(batching.max_delay_ms * 1000),
        },
        "parameters": {
            "version": {"string_value": deployment.version},
            "active": {"string_value": "true" if active else "false"},
        },
    }


def _tensor_config(spec: TensorSpec) -> dict[str, Any]:
    # Triton names BYTES tensors TYPE_STRING in a configuration.
    datatype = "STRING" if spec.datatype == "BYTES" else spec.datatype
    return {"name": spec.name, "data_type": f"TYPE_{datatype}", "dims": list(spec.shape[1:])}


def describe_statistics(deployment: Deployment) -> dict[str, Any]:
    """Return a version's ``$model_stat``: requests, executions and their durations."""
    metrics = deployment.metrics
    failed = metrics.errors + metrics.timeouts
    last = metrics.last_request_time
    return {
        "name": deployment.model_id,
        "version": deployment.version,
        # Milliseconds since the epoch; 0 before the first request, as Triton answers.
        "last_inference": 0 if last is None else round(last.timestamp() * 1000),
        "inference_count": metrics.rows,
        "execution_count": metrics.batches,
        "inference_stats": {
            "success": _duration(
                metrics.requests - failed,
                metrics.latency.total - metrics.failed_latency_seconds,
            ),
            "fail": _duration(failed, metrics.failed_latency_seconds),
            "compute_infer": _duration(metrics.batches, metrics.compute_seconds),
        },
        "batch_stats": [],
    }


def _duration(count: int, seconds: float) -> dict[str, int]:
    return {"count": count, "ns": max(0, round(seconds * 1e9))}
