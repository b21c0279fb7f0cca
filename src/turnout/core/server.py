"""ModelServer: the async facade that deploys models and answers predictions."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import Any

import anyio
import numpy as np

from turnout.core.batching import AdaptiveBatcher, BatchingConfig, BatchReport, BatchSlice
from turnout.core.clock import Clock, MonotonicClock
from turnout.core.convert import LoadedModel, load_model
from turnout.core.errors import (
    ConversionError,
    InvalidConfigError,
    InvalidInputError,
    OverloadedError,
    ServerClosedError,
    TurnoutError,
    VersionExistsError,
)
from turnout.core.health import HealthReport, HealthStatus
from turnout.core.metrics import VersionMetrics
from turnout.core.names import check_name
from turnout.core.onnx_model import wrap_onnx_model
from turnout.core.outputs import BatchOutput, OutputDecoder, OutputMode, parse_output_mode
from turnout.core.registry import Deployment, HealthCheckFn, ModelRegistry
from turnout.core.runtime import ModelRuntime, OnnxRuntime, PythonRuntime
from turnout.core.schema import InputSchema

__all__ = ["InferenceResult", "ModelServer"]

logger = logging.getLogger("turnout")

HEALTH_CHECK_TIMEOUT = 5.0


@dataclass(frozen=True)
class InferenceResult:
    """The full answer to one request: what served it, and every output it produced."""

    model_id: str
    version: str
    outputs: np.ndarray[Any, Any]
    labels: np.ndarray[Any, Any] | None
    probabilities: np.ndarray[Any, Any] | None
    latency_ms: float


class ModelServer:
    """Deploys versions of models and serves predictions through adaptive batchers.

    Use it as ``async with ModelServer() as server:``; leaving the block
    answers every admitted request and releases every model.
    """

    def __init__(
        self,
        *,
        batching: BatchingConfig | None = None,
        error_threshold: float = 0.5,
        mock_mode: bool = False,
        runtime_threads: int = 1,
        clock: Clock | None = None,
    ) -> None:
        self._batching = _check_batching(batching or BatchingConfig())
        self._error_threshold = _check_threshold(error_threshold)
        if not isinstance(runtime_threads, int) or not 1 <= runtime_threads <= 64:
            raise InvalidConfigError(
                f"runtime_threads must be an integer from 1 to 64, got {runtime_threads!r}"
            )
        self._runtime_threads = runtime_threads
        self.mock_mode = bool(mock_mode)
        self._clock = clock or MonotonicClock()
        self._registry = ModelRegistry()
        self._closed = False

    async def __aenter__(self) -> ModelServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- deployments ---------------------------------------------------------------

    async def deploy_model(
        self,
        model_id: str,
        version: str,
        model_instance: object,
        *,
        set_active: bool | None = None,
        metadata: Mapping[str, Any] | None = None,
        features: Sequence[str] | None = None,
        output: OutputMode | str | None = None,
        batching: BatchingConfig | None = None,
        allow_nan: bool = False,
        replace: bool = False,
        error_threshold: float | None = None,
        health_check_fn: HealthCheckFn | None = None,
    ) -> Deployment:
        """Deploy ``model_instance`` as ``version`` of ``model_id`` and return the Deployment.

        The model is a fitted scikit-learn estimator or Pipeline, an
        ``onnx.ModelProto``, ONNX bytes or a ``.onnx`` path. ``set_active=None``
        activates it only if the model has no active version yet.
        """
        check_name("model_id", model_id)
        check_name("version", version)
        self._check_open()
        if not replace and self._registry.contains(model_id, version):
            raise VersionExistsError(
                f"Version '{version}' of model '{model_id}' is already deployed;"
                " pass replace=True to replace it"
            )
        config = _check_batching(batching or self._batching)
        threshold = self._error_threshold if error_threshold is None else error_threshold
        threshold = _check_threshold(threshold)
        meta = _check_metadata(metadata)
        if health_check_fn is not None and not callable(health_check_fn):
            raise InvalidConfigError("health_check_fn must be callable as fn(model, version)")
        mode = parse_output_mode(output)

        name = f"{model_id}:{version}"
        loaded, runtime = await anyio.to_thread.run_sync(self._load, model_instance, features, name)
        try:
            decoder = OutputDecoder(loaded.signature, mode)
            schema = InputSchema(
                n_features=loaded.signature.n_features,
                dtype=loaded.signature.input_dtype,
                feature_names=loaded.signature.feature_names,
                allow_nan=allow_nan,
                max_rows=config.max_request_rows,
            )
        except TurnoutError:
            runtime.close()
            raise
        metrics = VersionMetrics()
        deployment = Deployment(
            model_id=model_id,
            version=version,
            loaded=loaded,
            model=loaded.estimator
            if loaded.estimator is not None
            else wrap_onnx_model(runtime, loaded.signature),
            schema=schema,
            decoder=decoder,
            runtime=runtime,
            batcher=None,  # type: ignore[arg-type]  # set just below: it needs execute
            metrics=metrics,
            metadata=meta,
            error_threshold=threshold,
            health_check_fn=health_check_fn,
        )
        deployment.batcher = AdaptiveBatcher(
            deployment.execute,
            config,
            name=name,
            clock=self._clock,
            on_batch=lambda report: _record_batch(metrics, report),
            on_timeout=metrics.record_timeout,
        )
        try:
            self._check_open()
            old = self._registry.add(deployment, replace=replace)
        except TurnoutError:
            await deployment.batcher.close()
            runtime.close()
            raise
        activate = set_active if set_active is not None else model_id not in self._registry.active
        if activate:
            self._registry.activate(model_id, version)
        logger.info("deployed %s (%s)%s", name, loaded.source, " [active]" if activate else "")
        if old is not None:
            await _release(old)
        return deployment

    def _load(
        self, model_instance: object, features: Sequence[str] | None, name: str
    ) -> tuple[LoadedModel, ModelRuntime]:
        """Convert and load a model, then prove it runs on one row; in a worker thread."""
        loaded = load_model(model_instance, features=features, convert=not self.mock_mode)
        runtime: ModelRuntime
        if loaded.onnx_bytes is None:
            runtime = PythonRuntime(loaded.estimator, loaded.signature)
        else:
            runtime = OnnxRuntime(
                loaded.onnx_bytes, loaded.signature, threads=self._runtime_threads
            )
        probe = np.zeros((1, loaded.signature.n_features), dtype=loaded.signature.input_dtype)
        try:
            runtime.run(probe)
        except TurnoutError as exc:
            runtime.close()
            raise ConversionError(f"{name} fails on a row of zeros: {exc}") from exc
        return loaded, runtime

    async def set_active_version(self, model_id: str, version: str) -> None:
        """Send the model's traffic to ``version`` from now on."""
        self._registry.activate(check_name("model_id", model_id), check_name("version", version))
        logger.info("active version of %s is now %s", model_id, version)

    async def retire_model(self, model_id: str, version: str) -> None:
        """Remove a version; requests it already admitted are still answered.

        Retiring the active version leaves the model without one until
        another is activated.
        """
        deployment = self._registry.remove(
            check_name("model_id", model_id), check_name("version", version)
        )
        logger.info("retired %s:%s", model_id, version)
        await _release(deployment)

    @property
    def active_models(self) -> Mapping[str, str]:
        """A read-only live mapping of model_id to its active version."""
        return self._registry.active

    def get_deployment(self, model_id: str, version: str | None = None) -> Deployment:
        """Return a deployed version (the active one when ``version`` is None)."""
        return self._registry.get(model_id, version)

    # -- predictions -----------------------------------------------------------------

    async def predict(
        self,
        model_id: str,
        inputs: object,
        *,
        version: str | None = None,
        key: str | None = None,
        timeout: float | None = None,
    ) -> np.ndarray[Any, Any]:
        """Return the model's predictions for ``inputs``, one per row.

        A binary classifier gives the positive-class probability per row, a
        multiclass one a (rows, classes) matrix, a regressor its values,
        unless the deployment chose ``output="label"``. ``timeout`` is in seconds.
        """
        _, piece = await self._submit(model_id, inputs, version, key, timeout)
        primary = piece.result.primary
        if piece.start == 0 and piece.stop == len(primary):
            return primary
        return primary[piece.start : piece.stop]

    async def infer(
        self,
        model_id: str,
        inputs: object,
        *,
        version: str | None = None,
        key: str | None = None,
        timeout: float | None = None,
    ) -> InferenceResult:
        """Like :meth:`predict`, but return the version that served, labels and probabilities."""
        started = self._clock.now()
        deployment, piece = await self._submit(model_id, inputs, version, key, timeout)
        out, rows = piece.result, slice(piece.start, piece.stop)
        return InferenceResult(
            model_id=model_id,
            version=deployment.version,
            outputs=out.primary[rows],
            labels=None if out.labels is None else out.labels[rows],
            probabilities=None if out.scores is None or out.labels is None else out.scores[rows],
            latency_ms=(self._clock.now() - started) * 1e3,
        )

    async def _submit(
        self,
        model_id: str,
        inputs: object,
        version: str | None,
        key: str | None,
        timeout: float | None,
    ) -> tuple[Deployment, BatchSlice[BatchOutput]]:
        started = self._clock.now()
        if self._closed:
            raise ServerClosedError("the server is closed")
        if key is not None and not isinstance(key, str):
            raise InvalidInputError(f"key must be a string, got {type(key).__name__}")
        deadline = None if timeout is None else started + _check_timeout(timeout)
        deployment = self._registry.get(model_id, version)
        rows = deployment.schema.encode(inputs)
        try:
            piece = await deployment.batcher.submit(rows, deadline=deadline, started=started)
        except OverloadedError:
            deployment.metrics.record_shed()
            raise
        return deployment, piece

    # -- status and health --------------------------------------------------------------

    def get_all_models_status(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Return ``{model_id: {version: {"status", "metrics", "metadata", ...}}}``."""
        active = self._registry.active
        status: dict[str, dict[str, dict[str, Any]]] = {}
        for deployment in self._registry:
            stats = deployment.batcher.statistics()
            status.setdefault(deployment.model_id, {})[deployment.version] = {
                "status": "active"
                if active.get(deployment.model_id) == deployment.version
                else "inactive",
                "metrics": deployment.metrics.snapshot(queue_depth=stats.queued_rows),
                "metadata": dict(deployment.metadata),
                "deployed_at": deployment.deployed_at.isoformat(),
                "source": deployment.loaded.source,
                "features": list(deployment.schema.feature_names or ()),
                "output": deployment.decoder.mode.value,
                "batching": asdict(deployment.batcher.config),
            }
        return status

    async def health_check(self, model_id: str, version: str | None = None) -> HealthReport:
        """Return the health of ``version`` (the active version when None)."""
        deployment = self._registry.get(model_id, version)
        snapshot = deployment.metrics.snapshot()
        reasons: list[str] = []
        status = HealthStatus.HEALTHY
        if snapshot.request_count and snapshot.error_rate > deployment.error_threshold:
            status = HealthStatus.UNHEALTHY
            reasons.append(
                f"error rate {snapshot.error_rate:.1%} is above {deployment.error_threshold:.1%}"
            )
        if deployment.health_check_fn is not None and not await self._run_health_check(deployment):
            status = HealthStatus.UNHEALTHY
            reasons.append("the deployment's health_check_fn reported failure")
        if status is HealthStatus.HEALTHY and snapshot.request_count == 0:
            status = HealthStatus.UNKNOWN
            reasons.append("no requests served yet")
        return HealthReport(
            model_id=model_id,
            version=deployment.version,
            status=status,
            circuit_breaker_open=False,
            last_request_time=snapshot.last_request_time,
            request_count=snapshot.request_count,
            error_rate=snapshot.error_rate,
            reasons=tuple(reasons),
        )

    async def _run_health_check(self, deployment: Deployment) -> bool:
        check = deployment.health_check_fn
        assert check is not None
        try:
            with anyio.fail_after(HEALTH_CHECK_TIMEOUT):
                ok = await anyio.to_thread.run_sync(
                    check, deployment.model, deployment.version, abandon_on_cancel=True
                )
        except TimeoutError:
            logger.warning(
                "health check of %s:%s timed out", deployment.model_id, deployment.version
            )
            return False
        except Exception:
            logger.exception(
                "health check of %s:%s raised", deployment.model_id, deployment.version
            )
            return False
        return bool(ok)

    # -- lifecycle ---------------------------------------------------------------------

    async def close(self) -> None:
        """Stop admitting requests, answer every admitted one, release every model."""
        if self._closed:
            return
        self._closed = True
        await asyncio.gather(*(_release(d) for d in self._registry))

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise ServerClosedError("the server is closed")


async def _release(deployment: Deployment) -> None:
    await deployment.batcher.close()
    deployment.runtime.close()


def _record_batch(metrics: VersionMetrics, report: BatchReport) -> None:
    metrics.record_batch(
        rows=report.rows,
        latencies=report.latencies,
        requests=report.requests,
        errors=report.requests if report.error is not None else 0,
    )


def _check_timeout(timeout: object) -> float:
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise InvalidInputError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return float(timeout)


def _check_threshold(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise InvalidConfigError(f"error_threshold must be between 0 and 1, got {value!r}")
    return float(value)


def _check_batching(config: object) -> BatchingConfig:
    if not isinstance(config, BatchingConfig):
        raise InvalidConfigError(f"batching must be a BatchingConfig, got {type(config).__name__}")
    return config


def _check_metadata(metadata: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if metadata is None:
        return MappingProxyType({})
    if not isinstance(metadata, Mapping) or not all(isinstance(k, str) for k in metadata):
        raise InvalidConfigError("metadata must be a dict with string keys")
    return MappingProxyType(dict(metadata))
