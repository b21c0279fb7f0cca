"""Building a Deployment: load and convert the model, prove it runs, give it a batcher.

Kept apart from the server so that everything slow or fallible about a
deployment happens here, before the server's state changes at all: a model
that fails anywhere on this path leaves nothing half-deployed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from turnout.core.clock import Clock
from turnout.core.deployments.registry import Deployment, HealthCheckFn
from turnout.core.errors import ConversionError, InvalidConfigError, TurnoutError
from turnout.core.execution.batching import AdaptiveBatcher, BatchingConfig, BatchReport
from turnout.core.execution.convert import LoadedModel, Runtime, load_model
from turnout.core.execution.metrics import VersionMetrics
from turnout.core.execution.model_uris import as_source, resolve
from turnout.core.execution.onnx_model import wrap_onnx_model
from turnout.core.execution.outputs import OutputDecoder, OutputMode, parse_output_mode
from turnout.core.execution.runtime import ModelRuntime, OnnxRuntime, PythonRuntime
from turnout.core.execution.schema import InputSchema
from turnout.core.names import check_choice
from turnout.core.resilience.breaker import (
    BreakerConfig,
    BreakerPolicy,
    BreakerPolicyFactory,
    BreakerState,
    CircuitBreaker,
)

__all__ = [
    "DeploymentDefaults",
    "DeploymentOptions",
    "build_deployment",
    "check_batching",
    "check_breaker",
    "check_metadata",
    "check_threshold",
    "load_runtime",
]


@dataclass(frozen=True)
class DeploymentOptions:
    """Validated options of one ``deploy_model`` call."""

    output: OutputMode
    batching: BatchingConfig
    error_threshold: float
    metadata: Mapping[str, Any]
    breaker: BreakerConfig
    features: Sequence[str] | None = None
    allow_nan: bool = False
    health_check_fn: HealthCheckFn | None = None
    runtime: Runtime = Runtime.ONNX


@dataclass(frozen=True)
class DeploymentDefaults:
    """A server's defaults for the options a ``deploy_model`` call leaves out, validated.

    ``onnx_only`` names what the server stores or shares its versions
    through (``"repository="``, ``"state="``): that holds ONNX only, so the
    python runtime is refused, as the default and for any one version.
    """

    batching: BatchingConfig = field(default_factory=BatchingConfig)
    error_threshold: float = 0.5
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    runtime_threads: int = 1
    runtime: Runtime = Runtime.ONNX
    onnx_only: str | None = None

    def __post_init__(self) -> None:
        check_batching(self.batching)
        check_breaker(self.breaker)
        object.__setattr__(self, "error_threshold", check_threshold(self.error_threshold))
        threads = self.runtime_threads
        if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 64:
            raise InvalidConfigError(
                f"runtime_threads must be an integer from 1 to 64, got {threads!r}"
            )
        runtime = check_choice("runtime", self.runtime, Runtime)
        self._check_runtime(runtime, "mock_mode (the python runtime by default)")
        object.__setattr__(self, "runtime", runtime)

    def _check_runtime(self, runtime: Runtime, what: str) -> None:
        if runtime is Runtime.PYTHON and self.onnx_only is not None:
            # A version no other process could load, and which a restart would lose.
            raise InvalidConfigError(
                f"{what} is refused on a server with {self.onnx_only}: a Python version lives"
                f" in this process only, and {self.onnx_only} keeps ONNX ones; serve Python"
                f" versions from a server without {self.onnx_only}"
            )

    def options(
        self,
        *,
        output: OutputMode | str | None,
        batching: BatchingConfig | None,
        error_threshold: float | None,
        metadata: Mapping[str, Any] | None,
        breaker: BreakerConfig | None,
        features: Sequence[str] | None,
        allow_nan: bool,
        health_check_fn: HealthCheckFn | None,
        runtime: Runtime | str | None = None,
    ) -> DeploymentOptions:
        """Return one call's options, each validated, these defaults filling the gaps."""
        if health_check_fn is not None and not callable(health_check_fn):
            raise InvalidConfigError("health_check_fn must be callable as fn(model, version)")
        chosen = self.runtime if runtime is None else check_choice("runtime", runtime, Runtime)
        self._check_runtime(chosen, "runtime='python'")
        return DeploymentOptions(
            output=parse_output_mode(output),
            batching=check_batching(batching or self.batching),
            error_threshold=check_threshold(
                self.error_threshold if error_threshold is None else error_threshold
            ),
            metadata=check_metadata(metadata),
            breaker=check_breaker(breaker or self.breaker),
            features=features,
            allow_nan=bool(allow_nan),
            health_check_fn=health_check_fn,
            runtime=chosen,
        )


def load_runtime(
    model_instance: object,
    features: Sequence[str] | None,
    *,
    name: str,
    runtime: Runtime,
    threads: int,
    allow_pickle: bool = False,
) -> tuple[LoadedModel, ModelRuntime]:
    """Convert and load a model for ``runtime``, then prove it runs on one row. Slow: in a thread.

    An MLflow model URI or MlflowSource is fetched first (see
    :mod:`turnout.core.execution.model_uris`); ``allow_pickle`` lets it be a
    scikit-learn flavor.
    """
    source = as_source(model_instance)
    if source is not None:
        fetched = resolve(
            source.uri,
            allow_pickle=allow_pickle,
            registry_only=source.registry_only,
            tracking_uri=source.tracking_uri,
        )
        model_instance = fetched.model
        # Names given at deploy win over the signature's.
        features = features if features is not None else fetched.features
    loaded = load_model(model_instance, features=features, runtime=runtime)
    if source is not None:
        loaded = replace(loaded, source=f"{source.uri} ({loaded.source})")
    running: ModelRuntime
    if loaded.onnx_bytes is None:
        running = PythonRuntime(loaded.estimator, loaded.signature)
    else:
        running = OnnxRuntime(loaded.onnx_bytes, loaded.signature, threads=threads)
    probe = loaded.signature.probe()
    try:
        running.run(probe)
    except TurnoutError as exc:
        running.close()
        raise ConversionError(f"{name} fails on a row of zeros: {exc}") from exc
    return loaded, running


def build_deployment(
    model_id: str,
    version: str,
    loaded: LoadedModel,
    runtime: ModelRuntime,
    options: DeploymentOptions,
    *,
    clock: Clock,
    policies: Mapping[str, BreakerPolicyFactory],
    on_batch: Callable[[Deployment, BatchReport], None],
    on_overrun: Callable[[Deployment], None],
    on_breaker_change: Callable[[Deployment, BreakerState, BreakerState, str], None],
) -> Deployment:
    """Assemble the Deployment for a loaded model; closes the runtime if that fails."""
    try:
        policy = _breaker_policy(options, policies)
        decoder = OutputDecoder(loaded.signature, options.output)
        schema = InputSchema(
            n_features=loaded.signature.n_features,
            dtype=loaded.signature.input_dtype,
            feature_names=loaded.signature.feature_names,
            allow_nan=options.allow_nan,
            max_rows=options.batching.max_request_rows,
            columns=loaded.signature.columns,
        )
    except TurnoutError:
        runtime.close()
        raise
    metrics = VersionMetrics()
    model = loaded.estimator if loaded.estimator is not None else None
    deployment = Deployment(
        model_id=model_id,
        version=version,
        loaded=loaded,
        model=model if model is not None else wrap_onnx_model(runtime, loaded.signature),
        schema=schema,
        decoder=decoder,
        runtime=runtime,
        batcher=None,  # type: ignore[arg-type]  # set just below: it needs execute
        metrics=metrics,
        metadata=options.metadata,
        error_threshold=options.error_threshold,
        breaker=None,  # type: ignore[arg-type]  # set just below: its listener needs the deployment
        health_check_fn=options.health_check_fn,
    )
    name = f"{model_id}:{version}"
    deployment.breaker = CircuitBreaker(
        name,
        policy,
        options.breaker,
        clock,
        on_change=lambda old, new, reason: on_breaker_change(deployment, old, new, reason),
    )
    deployment.batcher = AdaptiveBatcher(
        deployment.execute,
        options.batching,
        name=name,
        clock=clock,
        on_batch=lambda report: on_batch(deployment, report),
        on_timeout=metrics.record_timeout,
        on_overrun=lambda: on_overrun(deployment),
        inline=deployment.inline_execution,
    )
    return deployment


def _breaker_policy(
    options: DeploymentOptions, policies: Mapping[str, BreakerPolicyFactory]
) -> BreakerPolicy:
    factory = policies.get(options.breaker.policy)
    if factory is None:
        known = ", ".join(sorted(policies))
        raise InvalidConfigError(
            f"unknown breaker policy {options.breaker.policy!r}; known: {known}"
        )
    return factory(options.breaker.params, options.error_threshold)


def check_threshold(value: object) -> float:
    """Return ``value`` as an error threshold in [0, 1], else raise InvalidConfigError."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise InvalidConfigError(f"error_threshold must be between 0 and 1, got {value!r}")
    return float(value)


def check_breaker(config: object) -> BreakerConfig:
    """Return ``config`` if it is a BreakerConfig, else raise InvalidConfigError."""
    if not isinstance(config, BreakerConfig):
        raise InvalidConfigError(f"breaker must be a BreakerConfig, got {type(config).__name__}")
    return config


def check_batching(config: object) -> BatchingConfig:
    """Return ``config`` if it is a BatchingConfig, else raise InvalidConfigError."""
    if not isinstance(config, BatchingConfig):
        raise InvalidConfigError(f"batching must be a BatchingConfig, got {type(config).__name__}")
    return config


def check_metadata(metadata: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """Return a read-only copy of ``metadata`` (a dict with string keys)."""
    if metadata is None:
        return MappingProxyType({})
    if not isinstance(metadata, Mapping) or not all(isinstance(k, str) for k in metadata):
        raise InvalidConfigError("metadata must be a dict with string keys")
    return MappingProxyType(dict(metadata))
