"""A version's way into a server and out of it: deploy (convert, prove, register) and retire.

A collaborator of :class:`~turnout.core.service.server.ModelServer`, whose
``deploy_model`` and ``retire_model`` call it. Everything slow or fallible
about a deployment happens before the server's state changes
(:mod:`turnout.core.deployments.builder`); then the version is registered,
stored, catalogued in the control state and, if asked, activated.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import anyio

from turnout.core.deployments.builder import DeploymentDefaults, build_deployment, load_runtime
from turnout.core.deployments.registry import Deployment, HealthCheckFn
from turnout.core.errors import (
    InvalidConfigError,
    InvalidRoutingError,
    StoreError,
    TurnoutError,
    VersionExistsError,
)
from turnout.core.execution.batching import BatchingConfig
from turnout.core.execution.convert import Runtime
from turnout.core.execution.outputs import OutputMode
from turnout.core.names import check_name
from turnout.core.resilience.breaker import BreakerConfig, BreakerPolicyFactory
from turnout.core.routing.router import ACTIVE
from turnout.core.service.batch_events import BatchEvents
from turnout.core.service.control_sync import ControlSync
from turnout.core.service.monitor import HealthMonitor
from turnout.core.service.parts import ServerCalls, ServerParts
from turnout.core.service.rollout_operations import RolloutOperations
from turnout.core.state.repository import check_storable

__all__ = ["VersionLifecycle", "release"]

logger = logging.getLogger("turnout")


class VersionLifecycle:
    """Deploys versions into a server and retires them."""

    def __init__(
        self,
        parts: ServerParts,
        server: ServerCalls,
        *,
        defaults: DeploymentDefaults,
        policies: Mapping[str, BreakerPolicyFactory],
        callbacks: BatchEvents,
        rollouts: RolloutOperations,
        health: HealthMonitor,
        sync: ControlSync,
    ) -> None:
        self._parts = parts
        self._registry = parts.registry
        self._server = server
        self._defaults = defaults
        self._policies = policies
        self._callbacks = callbacks
        self._rollouts = rollouts
        self._health = health
        self._sync = sync

    async def deploy(
        self,
        model_id: str,
        version: str,
        model_instance: object,
        *,
        set_active: bool | None,
        metadata: Mapping[str, Any] | None,
        features: Sequence[str] | None,
        output: OutputMode | str | None,
        batching: BatchingConfig | None,
        allow_nan: bool,
        replace: bool,
        error_threshold: float | None,
        breaker: BreakerConfig | None,
        health_check_fn: HealthCheckFn | None,
        allow_pickle: bool,
        runtime: Runtime | str | None = None,
    ) -> Deployment:
        """Deploy a version (see ModelServer.deploy_model); return it once it is stored."""
        check_name("model_id", model_id)
        check_name("version", version)
        self._server._check_open()
        _check_absent(self._parts, model_id, version, replace)
        options = self._defaults.options(
            output=output,
            batching=batching,
            error_threshold=error_threshold,
            metadata=metadata,
            breaker=breaker,
            features=features,
            allow_nan=allow_nan,
            health_check_fn=health_check_fn,
            runtime=runtime,
        )
        store = self._parts.store
        if store is not None:
            check_storable(options.metadata, options.breaker, version)
        name = f"{model_id}:{version}"
        loaded, running = await anyio.to_thread.run_sync(
            lambda: load_runtime(
                model_instance,
                features,
                name=name,
                runtime=options.runtime,
                threads=self._defaults.runtime_threads,
                allow_pickle=bool(allow_pickle),
            )
        )
        deployment = build_deployment(
            model_id,
            version,
            loaded,
            running,
            options,
            clock=self._parts.clock,
            policies=self._policies,
            on_batch=self._callbacks.batch_done,
            on_overrun=self._callbacks.overrun,
            on_breaker_change=self._callbacks.breaker_changed,
        )
        try:
            artifacts = self._parts.artifacts
            if artifacts is not None and loaded.onnx_bytes is not None:
                # Before the catalogue names it: another process may load it at once.
                await anyio.to_thread.run_sync(artifacts.put, loaded.onnx_bytes)
            await self._sync.catch_up(model_id)
        except (TurnoutError, OSError) as exc:
            await release(deployment)
            if isinstance(exc, OSError):
                raise StoreError(f"cannot store the artifact of {name}: {exc}") from exc
            raise
        try:
            # Checked again: the server may have closed, or another deploy of
            # this version landed, while the model was converting.
            self._server._check_open()
            _check_absent(self._parts, model_id, version, replace)
            old = self._registry.add(deployment, replace=replace)
        except TurnoutError:
            await release(deployment)
            raise
        if store is not None:
            store.save_version(deployment)
        self._sync.changed(model_id, choice=False)
        activate = set_active if set_active is not None else model_id not in self._registry.active
        if activate:
            self._server._set_active(model_id, version)
        else:
            self._server._refresh_routing(model_id)
        plan = self._rollouts.canary_plan(model_id) if old is not None else None
        if plan is not None and version in (plan.baseline, plan.candidate):
            # The new deployment's counters start at zero: judged against the step's
            # marks on the old one, the step would count negative requests.
            reason = f"{version} was replaced; step {plan.step} starts over"
            self._rollouts.begin_canary_step(model_id, started=False, reason=reason)
        logger.info("deployed %s (%s)%s", name, loaded.source, " [active]" if activate else "")
        self._parts.events.emit("model_deployed", deployment=deployment)
        if old is not None:
            # A new model under an old name: what the monitor knew of it is stale.
            self._health.forget(model_id, version)
            await release(old)
        await self._server._flush_changes()
        return deployment

    async def retire(self, model_id: str, version: str) -> None:
        """Remove a version (see ModelServer.retire_model); return once it is stored."""
        check_name("model_id", model_id)
        check_name("version", version)
        self._registry.get(model_id, version)
        router, fallbacks, events = self._parts.router, self._parts.fallbacks, self._parts.events
        config = router.config(model_id)
        if config.strategy != ACTIVE.strategy:
            strategy = router.traffic(model_id).strategy
            if version in strategy.versions():
                raise InvalidRoutingError(
                    f"version '{version}' of model '{model_id}' receives traffic under"
                    f" {config.strategy!r} routing; change the routing before retiring it"
                )
        fallback = fallbacks.get(model_id)
        if fallback is not None and fallback.version == version:
            raise InvalidConfigError(
                f"version '{version}' is the fallback of model '{model_id}';"
                " set another fallback (or none) before retiring it"
            )
        was_active = self._registry.active.get(model_id) == version
        deployment = self._registry.remove(model_id, version)
        self._health.forget(model_id, version)
        if self._registry.contains_model(model_id):
            self._server._refresh_routing(model_id, keep_unaffected=False)
        else:
            # The model is gone: so are its routing and its fallback.
            router.drop(model_id)
            fallbacks.pop(model_id, None)
        if self._parts.store is not None:
            self._parts.store.delete_version(model_id, version)
        self._sync.retired(model_id, version, choice=was_active)
        logger.info("retired %s:%s", model_id, version)
        if was_active:
            events.emit("active_version_changed", model_id=model_id, old=version, new=None)
        await release(deployment)
        events.emit("model_retired", model_id=model_id, version=version)
        await self._server._flush_changes()


def _check_absent(parts: ServerParts, model_id: str, version: str, replace: bool) -> None:
    if not replace and parts.registry.contains(model_id, version):
        raise VersionExistsError(
            f"Version '{version}' of model '{model_id}' is already deployed;"
            " pass replace=True to replace it"
        )


async def release(deployment: Deployment, timeout: float | None = None) -> None:
    """Close a version's batcher (answering what it admitted) and its runtime."""
    await deployment.batcher.close(timeout)
    deployment.runtime.close()
