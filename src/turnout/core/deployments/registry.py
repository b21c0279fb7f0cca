"""Which versions of which models are deployed, and which version of each is active."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from turnout.core.errors import ModelNotFoundError, VersionExistsError, VersionNotFoundError
from turnout.core.execution.batching import AdaptiveBatcher
from turnout.core.execution.convert import LoadedModel
from turnout.core.execution.inline import InlineExecution
from turnout.core.execution.metrics import VersionMetrics
from turnout.core.execution.outputs import BatchOutput, OutputDecoder
from turnout.core.execution.runtime import ModelRuntime, OnnxRuntime
from turnout.core.execution.schema import InputSchema
from turnout.core.resilience.breaker import CircuitBreaker

__all__ = ["Deployment", "HealthCheckFn", "ModelRegistry"]

HealthCheckFn = Callable[[Any, str], bool]


@dataclass(eq=False)
class Deployment:
    """One deployed version of a model: its runtime, batcher, schema and metrics."""

    model_id: str
    version: str
    loaded: LoadedModel
    model: Any
    schema: InputSchema
    decoder: OutputDecoder
    runtime: ModelRuntime
    batcher: AdaptiveBatcher[BatchOutput]
    metrics: VersionMetrics
    metadata: Mapping[str, Any]
    error_threshold: float
    breaker: CircuitBreaker
    health_check_fn: HealthCheckFn | None = None
    deployed_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    # The inline execution of the runtime it was made for: a runtime swapped
    # in later (turnout.core.deployments.faults) gets its own, or none.
    _inline: tuple[object, InlineExecution[BatchOutput] | None] = field(
        default=(None, None), init=False, repr=False
    )

    def execute(self, batch: Any) -> BatchOutput:
        """Run one stacked batch and decode it; called in the batcher's worker thread."""
        return self.decoder.decode(self.runtime.run(batch))

    def inline_execution(self) -> InlineExecution[BatchOutput] | None:
        """How to run a batch on the event loop's thread; None if the runtime cannot be stopped.

        Only ONNX Runtime sessions can be stopped mid-run (``RunOptions.terminate``),
        and only one running on the calling thread alone has its run timed
        truly by that thread's CPU time.
        """
        runtime = self.runtime
        made_for, execution = self._inline
        if made_for is not runtime:
            execution = None
            if isinstance(runtime, OnnxRuntime) and runtime.threads == 1:
                onnx = runtime
                execution = InlineExecution(
                    run=lambda batch: self.decoder.decode(onnx.run_stoppable(batch)),
                    stop=onnx.stop,
                )
            self._inline = (runtime, execution)
        return execution


class ModelRegistry:
    """model_id -> version -> Deployment, and model_id -> active version.

    Mutated only from the event loop, so it needs no lock.
    """

    def __init__(self) -> None:
        self._versions: dict[str, dict[str, Deployment]] = {}
        self._active: dict[str, str] = {}
        self.active = MappingProxyType(self._active)

    def get(self, model_id: str, version: str | None = None) -> Deployment:
        """Return the given version, or the active one; raise if there is none."""
        versions = self._versions.get(model_id)
        if version is None:
            active = self._active.get(model_id)
            if versions is None or active is None:
                raise ModelNotFoundError(
                    f"Model '{model_id}' not found or no active version set", model_id=model_id
                )
            return versions[active]
        if versions is None:
            raise ModelNotFoundError(f"Model '{model_id}' not found", model_id=model_id)
        deployment = versions.get(version)
        if deployment is None:
            known = ", ".join(sorted(versions)) or "none"
            raise VersionNotFoundError(
                f"Version '{version}' of model '{model_id}' not found; deployed versions: {known}",
                model_id=model_id,
                version=version,
            )
        return deployment

    def contains(self, model_id: str, version: str) -> bool:
        """True if that version of that model is deployed."""
        return version in self._versions.get(model_id, {})

    def contains_model(self, model_id: str) -> bool:
        """True if the model has at least one deployed version."""
        return model_id in self._versions

    def add(self, deployment: Deployment, *, replace: bool = False) -> Deployment | None:
        """Register ``deployment``; return the one it replaced, if any."""
        versions = self._versions.setdefault(deployment.model_id, {})
        old = versions.get(deployment.version)
        if old is not None and not replace:
            raise VersionExistsError(
                f"Version '{deployment.version}' of model '{deployment.model_id}' is already"
                " deployed; pass replace=True to replace it"
            )
        versions[deployment.version] = deployment
        return old

    def remove(self, model_id: str, version: str) -> Deployment:
        """Unregister a version; the model loses its active version if it was this one."""
        deployment = self.get(model_id, version)
        versions = self._versions[model_id]
        del versions[version]
        if self._active.get(model_id) == version:
            del self._active[model_id]
        if not versions:
            del self._versions[model_id]
        return deployment

    def activate(self, model_id: str, version: str) -> None:
        """Make ``version`` the model's active version."""
        self.get(model_id, version)
        self._active[model_id] = version

    def versions(self, model_id: str) -> Mapping[str, Deployment]:
        """Return a read-only view of a model's deployed versions."""
        if model_id not in self._versions:
            raise ModelNotFoundError(f"Model '{model_id}' not found", model_id=model_id)
        return MappingProxyType(self._versions[model_id])

    def model_ids(self) -> list[str]:
        """Return the ids of every model with at least one deployed version."""
        return list(self._versions)

    def __iter__(self) -> Iterator[Deployment]:
        for versions in list(self._versions.values()):
            yield from list(versions.values())
