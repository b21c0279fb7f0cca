"""ModelServer: the async facade that deploys models, routes requests and answers them.

Every change to the server's state (deploy, activate, retire, routing)
happens on the event loop between two awaits, so each is atomic with
respect to requests: a request is routed wholly before or wholly after it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict
from functools import partial
from types import MappingProxyType
from typing import Any

import numpy as np

from turnout.core.clock import Clock, MonotonicClock
from turnout.core.deployments.builder import DeploymentDefaults
from turnout.core.deployments.registry import Deployment, HealthCheckFn, ModelRegistry
from turnout.core.errors import (
    InvalidConfigError,
    InvalidInputError,
    InvalidRoutingError,
    ModelNotFoundError,
    ServerClosedError,
    StoreError,
)
from turnout.core.execution.batching import BatchingConfig
from turnout.core.execution.convert import Runtime
from turnout.core.execution.metrics import MetricsTotals
from turnout.core.execution.outputs import OutputMode
from turnout.core.names import check_name
from turnout.core.resilience.breaker import BreakerConfig, BreakerSnapshot
from turnout.core.resilience.fallback import Fallback
from turnout.core.resilience.health import HealthReport
from turnout.core.routing.canary_controller import RolloutController, RolloutEvent
from turnout.core.routing.canary_plan import CANARY, DEFAULT_STEPS, same_rollout
from turnout.core.routing.config import RoutingConfig, RoutingContext, RoutingSplit, split_of
from turnout.core.routing.outcomes import ABComparison, OutcomeTotals, compare
from turnout.core.routing.router import ACTIVE, ModelTraffic, Router
from turnout.core.routing.shadow_stats import ShadowStatistics
from turnout.core.service.batch_events import BatchEvents
from turnout.core.service.control_sync import ControlSync
from turnout.core.service.live_records import model_record
from turnout.core.service.mirroring import Mirror
from turnout.core.service.monitor import HealthMonitor, MonitorSettings
from turnout.core.service.parts import ServerParts
from turnout.core.service.plugins import (
    EventEmitter,
    collect_breaker_policies,
    collect_health_checks,
    collect_strategies,
    make_plugin_manager,
)
from turnout.core.service.requests import (
    FIXED_VALUE,
    InferenceResult,
    RequestPath,
    positive_number,
)
from turnout.core.service.restore import Restorer
from turnout.core.service.rollout_operations import RolloutOperations
from turnout.core.service.version_lifecycle import VersionLifecycle, release
from turnout.core.state.artifacts import ArtifactStore
from turnout.core.state.control import ControlState
from turnout.core.state.memory import MemoryState
from turnout.core.state.repository import ModelStore
from turnout.core.state.write_queue import StoreWriter

__all__ = ["FIXED_VALUE", "InferenceResult", "ModelServer", "SmokeTest"]

logger = logging.getLogger("turnout")

# smoke_test(server, model_id, green) for blue_green_switch: true if green may go live.
SmokeTest = Callable[["ModelServer", str, str], Awaitable[bool] | bool]


class ModelServer:
    """Deploys versions of models and serves predictions through adaptive batchers.

    Use it as ``async with ModelServer() as server:``; leaving the block
    answers every admitted request and releases every model. ``plugins`` are
    registered beside the built-ins and the installed ``turnout`` entry
    points (``entry_points=False`` skips those); ``seed`` makes routing
    draws repeatable. With ``repository`` (a directory) deployments, active
    versions, routing and fallbacks are stored there as they change, and
    restored on entering the block (see :meth:`restore`); while the block
    runs, the server holds the repository's lock, so no second server opens
    it. ``repository_read_only`` only reads it: no lock, no repairs, and any
    change raises StoreError once it has taken effect in memory.

    Control state (versions, active versions, routing, fallbacks, rollouts,
    outcome totals) goes through ``state``, a
    :class:`~turnout.core.state.control.ControlState`: by default a
    :class:`~turnout.core.state.memory.MemoryState` of its own; servers given
    one state share their control state. With ``artifacts`` (a directory the
    servers share) each deployed ONNX is stored there by digest, and a
    version another server deploys is loaded here from it before this server
    routes to it.

    ``mock_mode`` makes ``runtime="python"`` the default of
    :meth:`deploy_model`. Python versions live in this process only, so a
    server with ``repository``, ``state`` or ``artifacts`` refuses them.
    """

    def __init__(
        self,
        *,
        batching: BatchingConfig | None = None,
        error_threshold: float = 0.5,
        mock_mode: bool = False,
        runtime_threads: int = 1,
        breaker: BreakerConfig | None = None,
        plugins: Iterable[object] = (),
        entry_points: bool = True,
        seed: int | None = None,
        clock: Clock | None = None,
        repository: str | os.PathLike[str] | None = None,
        repository_read_only: bool = False,
        state: ControlState | None = None,
        artifacts: str | os.PathLike[str] | None = None,
    ) -> None:
        if state is not None and not all(
            callable(getattr(state, name, None)) for name in ("read", "write", "subscribe")
        ):
            raise InvalidConfigError(
                f"state must be a ControlState (MemoryState, RedisState, SQLiteState), got"
                f" {type(state).__name__}; turnout.core.state.locations.open_state opens a URL"
            )
        # Where this server keeps or hands on its versions, if anywhere: ONNX only.
        keeper = (
            "repository="
            if repository is not None
            else "state="
            if state is not None
            else "artifacts="
            if artifacts is not None
            else None
        )
        defaults = DeploymentDefaults(
            batching=batching or BatchingConfig(),
            error_threshold=error_threshold,
            breaker=breaker or BreakerConfig(),
            runtime_threads=runtime_threads,
            runtime=Runtime.PYTHON if mock_mode else Runtime.ONNX,
            onnx_only=keeper,
        )
        self.mock_mode = bool(mock_mode)
        self._clock = clock or MonotonicClock()
        self.plugin_manager = make_plugin_manager(plugins, entry_points=entry_points)
        self._events = EventEmitter(self.plugin_manager)
        self._router = Router(collect_strategies(self.plugin_manager), random.Random(seed).random)
        policies = collect_breaker_policies(self.plugin_manager)
        if defaults.breaker.policy not in policies:
            known = ", ".join(sorted(policies))
            raise InvalidConfigError(
                f"unknown breaker policy {defaults.breaker.policy!r}; known: {known}"
            )
        self._rollouts = RolloutController(self._clock)
        self._registry = ModelRegistry()
        self._health = HealthMonitor(
            self._registry,
            collect_health_checks(self.plugin_manager),
            self._events,
            rollback=self._roll_back,
            # What the rest of the fleet served (ControlSync is made below, with the parts).
            elsewhere=lambda model_id, version: self._sync.fleet.totals(model_id, version),
        )
        self._fallbacks: dict[str, Fallback] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._closed = False
        self._store = (
            StoreWriter(
                ModelStore(repository, read_only=bool(repository_read_only)),
                partial(model_record, self._registry, self._router, self._fallbacks),
                shared=state is not None,
            )
            if repository is not None
            else None
        )
        parts = ServerParts(
            clock=self._clock,
            events=self._events,
            registry=self._registry,
            router=self._router,
            rollouts=self._rollouts,
            fallbacks=self._fallbacks,
            store=self._store,
            artifacts=None if artifacts is None else ArtifactStore(artifacts),
        )
        self._rollout_ops = RolloutOperations(parts, self)
        self._restorer = Restorer(parts, self)
        self._requests = RequestPath(parts, Mirror(parts))
        self._owns_state = state is None
        self._sync = ControlSync(parts, self, MemoryState() if state is None else state)
        self._versions = VersionLifecycle(
            parts,
            self,
            defaults=defaults,
            policies=policies,
            callbacks=BatchEvents(parts, self._rollout_ops),
            rollouts=self._rollout_ops,
            health=self._health,
            sync=self._sync,
        )

    async def restore(self) -> None:
        """Redeploy every stored version, then its model's active version, routing, fallback.

        Called on entering ``async with``; calling it again does nothing.
        Broken entries in the repository are logged and skipped. A version
        found as a bare ``model.onnx`` is deployed with the server's defaults
        and gets its ``deployment.json``; a model without ``model.json``, or
        whose stored active version is gone, activates its highest version in
        natural order (``v10`` after ``v9``). A canary in progress resumes at
        its stored step, judged on a fresh step window: counters, breakers and
        rollout history start anew. Unless the repository is read-only, it is
        locked first: RepositoryInUseError if another server holds it, unless
        this one shares a control state (``state=``): then it reads the
        repository, writes nothing, and takes the lock over once the server
        holding it is gone (checked every second), so one server of a fleet
        writes it.
        """
        await self._restorer.restore()

    async def __aenter__(self) -> ModelServer:
        # The repository is restored first, then matched with the control state.
        self._sync.paused = True
        await self.restore()
        await self._sync.start()
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
        breaker: BreakerConfig | None = None,
        health_check_fn: HealthCheckFn | None = None,
        allow_pickle: bool = False,
        runtime: Runtime | str | None = None,
    ) -> Deployment:
        """Deploy ``model_instance`` as ``version`` of ``model_id`` and return the Deployment.

        The model is a fitted scikit-learn estimator or Pipeline, an
        ``onnx.ModelProto``, ONNX bytes, a ``.onnx`` path, or an MLflow model
        URI (``models:/name/3``, ``models:/name@alias``, ``runs:/<id>/model``;
        a scikit-learn flavor only with ``allow_pickle=True``, as loading it
        runs code from the registry). ``set_active=None`` activates it only
        if the model has no active version yet. ``runtime="python"`` serves
        an estimator, or any object with ``predict``, through its own methods
        instead of converting it (None: the server's default, ``"python"``
        in mock mode, else ``"onnx"``); a server with a repository or a
        shared state refuses it.
        """
        return await self._versions.deploy(
            model_id,
            version,
            model_instance,
            set_active=set_active,
            metadata=metadata,
            features=features,
            output=output,
            batching=batching,
            allow_nan=allow_nan,
            replace=replace,
            error_threshold=error_threshold,
            breaker=breaker,
            health_check_fn=health_check_fn,
            allow_pickle=allow_pickle,
            runtime=runtime,
        )

    async def set_active_version(self, model_id: str, version: str) -> None:
        """Send all of the model's traffic to ``version``, ending any test or rollout."""
        check_name("model_id", model_id)
        check_name("version", version)
        await self._sync.catch_up(model_id)
        self._registry.get(model_id, version)
        self._rollout_ops.end_rollout(model_id, "ended by set_active_version")
        self._set_active(model_id, version)
        self._apply_routing(model_id, ACTIVE)
        await self._flush_changes()

    def _set_active(self, model_id: str, version: str) -> None:
        old = self._registry.active.get(model_id)
        self._registry.activate(model_id, version)
        self._refresh_routing(model_id)
        self._persist(model_id)
        if old != version:
            logger.info("active version of %s is now %s", model_id, version)
            self._events.emit("active_version_changed", model_id=model_id, old=old, new=version)

    async def retire_model(self, model_id: str, version: str) -> None:
        """Remove a version; requests it already admitted are still answered.

        Retiring the active version leaves the model without one until
        another is activated. A version that the model's routing sends
        traffic to (other than plain active routing) cannot be retired: change
        the routing first.
        """
        await self._sync.catch_up(check_name("model_id", model_id))
        await self._versions.retire(model_id, version)

    @property
    def active_models(self) -> Mapping[str, str]:
        """A read-only live mapping of model_id to its active version."""
        return self._registry.active

    def get_deployment(self, model_id: str, version: str | None = None) -> Deployment:
        """Return a deployed version (the active one when ``version`` is None)."""
        return self._registry.get(model_id, version)

    # -- routing -----------------------------------------------------------------------

    async def set_routing(self, model_id: str, config: RoutingConfig) -> None:
        """Route the model's traffic by ``config``; if it is refused, the old routing stays."""
        if not isinstance(config, RoutingConfig):
            raise InvalidRoutingError(f"expected a RoutingConfig, got {type(config).__name__}")
        await self._sync.catch_up(check_name("model_id", model_id))
        self._registry.versions(model_id)
        self._router.build(config, self._context(model_id))  # validate before ending anything
        old = self._router.config(model_id)
        if old.strategy == CANARY and not same_rollout(old, config):
            # Also when a canary of other versions replaces it: that one starts afresh.
            self._rollout_ops.end_rollout(model_id, "replaced by new routing")
        self._apply_routing(model_id, config)
        await self._flush_changes()

    def get_routing(self, model_id: str) -> RoutingConfig:
        """Return the model's current routing config."""
        self._registry.versions(check_name("model_id", model_id))
        return self._router.config(model_id)

    def routing_split(self, model_id: str) -> RoutingSplit:
        """Return each version's share of the model's requests as its strategy declares it."""
        self._registry.versions(check_name("model_id", model_id))
        try:
            strategy = self._router.traffic(model_id).strategy
        except ModelNotFoundError:  # deployed, but with no active version to route to yet
            return RoutingSplit({}, {})
        return split_of(strategy)

    async def setup_ab_test(
        self, model_id: str, versions: Sequence[str], weights: Sequence[float]
    ) -> None:
        """Split the model's traffic between ``versions`` by ``weights`` (as in the guide)."""
        params = {"versions": list(versions), "weights": list(weights)}
        await self.set_routing(model_id, RoutingConfig("weighted", params))

    def _context(self, model_id: str) -> RoutingContext:
        return RoutingContext(
            model_id=model_id,
            active=self._registry.active.get(model_id),
            versions=frozenset(self._registry.versions(model_id)),
        )

    def _apply_routing(self, model_id: str, config: RoutingConfig, reason: str = "") -> None:
        old = self._router.set(model_id, config, self._context(model_id))
        self._persist(model_id)
        if config.strategy == CANARY:
            self._rollout_ops.begin_canary_step(
                model_id, started=not same_rollout(old, config), reason=reason
            )
        if old != config:
            logger.info("routing of %s is now %s", model_id, config.to_dict())
            self._events.emit("routing_changed", model_id=model_id, old=old, new=config)

    def _refresh_routing(self, model_id: str, *, keep_unaffected: bool = True) -> None:
        dropped = self._router.refresh(
            model_id, self._context(model_id), keep_unaffected=keep_unaffected
        )
        if dropped is not None:
            self._persist(model_id)
            logger.warning(
                "routing %s of %s no longer fits its versions; back to active routing",
                dropped.to_dict(),
                model_id,
            )
            self._events.emit("routing_changed", model_id=model_id, old=dropped, new=ACTIVE)

    # -- predictions -----------------------------------------------------------------

    async def predict(
        self,
        model_id: str,
        inputs: object,
        *,
        version: str | None = None,
        key: str | None = None,
        timeout: float | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> np.ndarray[Any, Any]:
        """Return the model's predictions for ``inputs``, one per row.

        A binary classifier gives the positive-class probability per row, a
        multiclass one a (rows, classes) matrix, a regressor its values,
        unless the deployment chose ``output="label"``. ``version`` pins a
        version past the routing; ``key`` keeps a caller on one version under
        sticky routing; ``timeout`` is in seconds; ``attributes`` are for
        strategies that route by them.
        """
        if self._closed:
            raise ServerClosedError("the server is closed")
        return await self._requests.predict(model_id, inputs, version, key, timeout, attributes)

    async def infer(
        self,
        model_id: str,
        inputs: object,
        *,
        version: str | None = None,
        key: str | None = None,
        timeout: float | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> InferenceResult:
        """Like :meth:`predict`, but return the version that served, labels, probabilities
        and a ``request_id`` for :meth:`record_outcome`."""
        if self._closed:
            raise ServerClosedError("the server is closed")
        return await self._requests.infer(model_id, inputs, version, key, timeout, attributes)

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- rollouts -----------------------------------------------------------------------

    async def start_canary(
        self,
        model_id: str,
        candidate: str,
        *,
        baseline: str | None = None,
        steps: Sequence[float] = DEFAULT_STEPS,
        min_requests: int = 100,
        min_seconds: float = 0.0,
        max_error_rate: float = 0.05,
        max_latency_ratio: float = 1.5,
    ) -> None:
        """Roll ``candidate`` out step by step, promoting it or rolling back by itself.

        At each step the candidate gets that share of traffic until it has
        served ``min_requests`` for at least ``min_seconds``; it is then judged
        on its error rate and p99 latency against the baseline (the active
        version unless named). Failing a judgement rolls back at once.
        """
        await self._rollout_ops.start_canary(
            model_id,
            candidate,
            baseline=baseline,
            steps=steps,
            min_requests=min_requests,
            min_seconds=min_seconds,
            max_error_rate=max_error_rate,
            max_latency_ratio=max_latency_ratio,
        )

    async def abort_canary(self, model_id: str) -> None:
        """Stop a canary rollout and send all traffic back to its baseline."""
        await self._sync.catch_up(check_name("model_id", model_id))
        await self._rollout_ops.abort_canary(model_id)

    def rollout_history(self, model_id: str) -> tuple[RolloutEvent, ...]:
        """Return the model's rollout events (steps, promotions, rollbacks), oldest first."""
        self._registry.versions(check_name("model_id", model_id))
        return self._rollouts.history(model_id)

    async def blue_green_switch(
        self,
        model_id: str,
        green: str,
        *,
        smoke_test: SmokeTest | None = None,
        samples: object = None,
        expected: object = None,
        tolerance: float = 1e-6,
    ) -> None:
        """Test ``green``, then switch all traffic to it at once, keeping blue for rollback.

        Smoke tests: ``smoke_test(server, model_id, green)`` returning true,
        and/or ``samples`` whose predictions on green must equal ``expected``
        within ``tolerance``. On failure SmokeTestError is raised and blue
        keeps serving.
        """
        await self._sync.catch_up(check_name("model_id", model_id))
        await self._rollout_ops.blue_green_switch(
            model_id,
            green,
            smoke_test=smoke_test,
            samples=samples,
            expected=expected,
            tolerance=tolerance,
        )

    async def blue_green_rollback(self, model_id: str) -> None:
        """Send all traffic back to the blue version of the last blue-green switch."""
        await self._sync.catch_up(check_name("model_id", model_id))
        await self._rollout_ops.blue_green_rollback(model_id)

    # -- outcomes and shadows ----------------------------------------------------------

    async def record_outcome(self, model_id: str, request_id: str, outcome: float) -> str:
        """Attach ground truth or a reward to a served request; return the version that served.

        A bandit routing learns from it; :meth:`compare_versions` tests it.
        The request may have been served by another server sharing the
        control state: its id names the version. Each id takes one outcome
        in the whole fleet: a second, through any server, is refused with
        InvalidInputError.
        """
        traffic = self._router.traffic(check_name("model_id", model_id))
        if not isinstance(request_id, str):
            raise InvalidInputError("request_id must be a string from an InferenceResult")
        served, value = traffic.outcomes.check(request_id, outcome)
        if served != FIXED_VALUE and served not in self._sync.catalogue(model_id):
            await self._sync.catch_up(model_id)  # deployed elsewhere a moment ago, maybe
        if served != FIXED_VALUE and served not in self._sync.catalogue(model_id):
            raise InvalidInputError(
                f"request id {request_id!r} names version {served!r}, which model"
                f" {model_id!r} does not have"
            )
        learn = getattr(traffic.strategy, "record_outcome", None)
        if learn is not None:
            # The strategy validates the reward first, so a refused one changes nothing.
            learn(served, outcome)
        # The store claims the id and adds the outcome in one step; until it has, the id
        # stays known here, so a caller may retry one the store could not take.
        totals = await self._sync.add_outcome(model_id, served, value, once=request_id)
        if totals is None:
            await self.refresh_outcomes(model_id)  # undoes what a strategy learned above
            raise InvalidInputError(f"request id {request_id!r} already has an outcome")
        traffic.outcomes.forget(request_id)
        self._adopt_outcomes(traffic, served, totals)
        return served

    def _adopt_outcomes(self, traffic: ModelTraffic, version: str, totals: OutcomeTotals) -> None:
        traffic.outcomes.adopt(version, totals)
        adopt = getattr(traffic.strategy, "adopt_outcomes", None)
        if adopt is not None:
            adopt(version, totals)

    async def refresh_outcomes(self, model_id: str) -> None:
        """Take the outcome totals every server sharing the control state recorded.

        :meth:`compare_versions` then compares them; without it, it compares
        what this server last recorded or took.
        """
        traffic = self._router.traffic(check_name("model_id", model_id))
        for version, totals in (await self._sync.state.outcomes(model_id)).items():
            self._adopt_outcomes(traffic, version, totals)

    def compare_versions(self, model_id: str, a: str, b: str) -> ABComparison:
        """Compare two versions' recorded outcomes: difference, p-value and a verdict."""
        for version in (a, b):
            self._registry.get(model_id, version)
        outcomes = self._router.traffic(model_id).outcomes
        comparison = compare(outcomes.statistics(a), outcomes.statistics(b))
        self._events.emit("versions_compared", model_id=model_id, comparison=comparison)
        return comparison

    def shadow_statistics(self, model_id: str) -> list[ShadowStatistics]:
        """Return each shadow version's record against its primary."""
        self._registry.versions(model_id)
        traffic: ModelTraffic = self._router.traffic(model_id)
        return [recorder.statistics() for recorder in traffic.shadows.values()]

    # -- status and health --------------------------------------------------------------

    def get_all_models_status(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Return ``{model_id: {version: {"status", "metrics", "metadata", ...}}}``."""
        active = self._registry.active
        status: dict[str, dict[str, dict[str, Any]]] = {}
        for deployment in self._registry:
            stats = deployment.batcher.statistics()
            routing = self._router.config(deployment.model_id)
            status.setdefault(deployment.model_id, {})[deployment.version] = {
                "status": "active"
                if active.get(deployment.model_id) == deployment.version
                else "inactive",
                "metrics": deployment.metrics.snapshot(queue_depth=stats.queued_rows),
                "metadata": dict(deployment.metadata),
                "deployed_at": deployment.deployed_at.isoformat(),
                "source": deployment.loaded.source,
                "runtime": deployment.loaded.runtime.value,
                "features": list(deployment.schema.feature_names or ()),
                "output": deployment.decoder.mode.value,
                "batching": asdict(deployment.batcher.config),
                "routing": routing.to_dict(),
                "circuit_breaker": asdict(deployment.breaker.snapshot()),
            }
        return status

    async def health_check(self, model_id: str, version: str | None = None) -> HealthReport:
        """Return the health of ``version`` (the active version when None), with its reasons."""
        return await self._health.report(self._registry.get(model_id, version))

    async def evaluate_health(self, *, auto_rollback: bool = False) -> list[HealthReport]:
        """Assess every version once, as the monitor does each interval; return the reports."""
        return await self._health.evaluate(auto_rollback=auto_rollback)

    def start_health_monitor(self, interval: float = 30.0, *, auto_rollback: bool = False) -> None:
        """Watch every version's health every ``interval`` seconds, in the background.

        Status changes are ``health_changed`` events. With ``auto_rollback``,
        a model whose active version turns UNHEALTHY is moved back to the
        last version that was healthy while active; with none to go back to,
        it says so in the log and keeps serving.
        """
        if not positive_number(interval):
            raise InvalidConfigError(f"interval must be a positive number of seconds: {interval!r}")
        self._check_open()
        if self._health.settings is not None:
            raise InvalidConfigError("the health monitor is already running")
        self._spawn(self._health.start(MonitorSettings(float(interval), bool(auto_rollback))))

    def stop_health_monitor(self) -> None:
        """Stop the background health monitor, if it runs."""
        self._health.stop()

    def _roll_back(self, model_id: str, version: str, reason: str) -> None:
        if not self._sync.leads:
            logger.info("%s: rollback to %s left to the fleet's controller", model_id, version)
            return
        with self._sync.as_controller():
            self._rollout_ops.end_rollout(model_id, f"health monitor rolled back: {reason}")
            self._set_active(model_id, version)
            self._apply_routing(model_id, ACTIVE)

    # -- circuit breakers and fallbacks ---------------------------------------------------

    async def reset_circuit_breaker(self, model_id: str, version: str) -> None:
        """Close a version's circuit breaker by hand and forget its failures."""
        self._registry.get(check_name("model_id", model_id), check_name("version", version))
        self._registry.get(model_id, version).breaker.reset()

    def circuit_breaker(self, model_id: str, version: str | None = None) -> BreakerSnapshot:
        """Return a version's breaker state (the active version when None)."""
        return self._registry.get(model_id, version).breaker.snapshot()

    def get_fallback(self, model_id: str) -> Fallback | None:
        """Return the model's fallback, or None if it has none."""
        self._registry.versions(check_name("model_id", model_id))
        return self._fallbacks.get(model_id)

    async def set_fallback(self, model_id: str, fallback: Fallback | None) -> None:
        """Answer the model's requests with ``fallback`` while the routed version's breaker is open.

        ``Fallback(version="v1")`` serves another version (its own breaker
        permitting); ``Fallback(value=0.5)`` a fixed value per row; None
        removes the fallback.
        """
        await self._sync.catch_up(check_name("model_id", model_id))
        self._registry.versions(model_id)
        if fallback is not None:
            if not isinstance(fallback, Fallback):
                raise InvalidConfigError(f"expected a Fallback, got {type(fallback).__name__}")
            if fallback.version is not None:
                self._registry.get(model_id, fallback.version)
            self._fallbacks[model_id] = fallback
        else:
            self._fallbacks.pop(model_id, None)
        self._persist(model_id)
        await self._flush_changes()

    # -- lifecycle ---------------------------------------------------------------------

    async def close(self, timeout: float | None = None) -> None:
        """Stop admitting requests, answer every admitted one, release every model.

        With ``timeout`` (seconds), requests still unanswered by then get
        ServerClosedError; without, close waits for every answer.
        """
        if self._closed:
            return
        self._closed = True
        self._health.stop()
        await asyncio.gather(*(release(d, timeout) for d in self._registry))
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self._sync.close()
        if self._owns_state:
            await self._sync.state.close()
        if self._store is not None:
            await self._store.close()

    # -- the model repository ----------------------------------------------------------

    def _persist(self, model_id: str) -> None:
        """Write the model's control state, and store it in the repository, soon, in order."""
        self._sync.changed(model_id)
        if self._store is not None:
            self._store.model_changed(model_id)

    async def _flush_changes(self) -> None:
        """Wait for the queued writes; raise StateConflictError or StoreError if one failed."""
        # One after the other, each awaiting the writes queued when it is called (as a
        # gather would not: it starts them a loop turn later, after more were queued),
        # and both whatever the first raises.
        stored: StoreError | None = None
        if self._store is not None:
            try:
                await self._store.flush()
            except StoreError as exc:
                stored = exc
        await self._sync.flush()
        if stored is not None:
            raise stored

    async def _tend_repository(self) -> None:
        """Write the repository from now on if the server that wrote it is gone."""
        if self._store is None:
            return
        records = await self._store.take_over()
        if records is None:
            return
        # Nothing is deleted on taking over: a version on disk that the catalogue lacks
        # may be one no server could load (a custom op), not one the fleet retired.
        for deployment in self._registry:
            shared = self._sync.shared_versions(deployment.model_id)
            if shared is not None and deployment.version not in shared:
                continue  # retired elsewhere while this server kept it: not written back
            if deployment.version not in self._store.stored_versions(deployment.model_id):
                self._store.save_version(deployment)
        for model_id in self._registry.model_ids():
            self._store.model_changed(model_id)
        for record in records:
            lacking = {v.version for v in record.versions} - self._sync.catalogue(record.model_id)
            if lacking:
                logger.warning(
                    "%s: %s on disk but in no server's catalogue; left as it is",
                    record.model_id,
                    ", ".join(sorted(lacking)),
                )
        try:
            await self._store.flush()
        except StoreError as exc:
            logger.error("took over the model repository, but cannot write it: %s", exc)

    async def fleet(self) -> dict[str, dict[str, Any]]:
        """Return every live server sharing this one's control state, by its lease holder name.

        Each says its pid, host, whether it leads, per model the versions it
        has loaded and the revision it applied, what it still has to load,
        and ``at``, when it last said so (a heartbeat every second).
        """
        return await self._sync.state.heartbeats()

    def announce(self, **facts: Any) -> None:
        """Add ``facts`` (plain data) to what this server's heartbeat tells its fleet.

        ``turnout serve`` announces ``listen``, the address it serves on:
        workers on one host announcing the same one share a port.
        InvalidConfigError for a fact the server says itself, or one that
        is not JSON data.
        """
        taken = set(facts) & (set(self._sync.facts()) - set(self._sync.announced))
        if taken:
            raise InvalidConfigError(f"the server says {sorted(taken)} itself: pick other names")
        try:
            json.dumps(facts, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidConfigError(f"announced facts must be JSON data: {exc}") from exc
        self._sync.announced.update(facts)

    @property
    def announced(self) -> Mapping[str, Any]:
        """The facts :meth:`announce` added."""
        return MappingProxyType(self._sync.announced)

    @property
    def unloaded_versions(self) -> list[str]:
        """``model:version`` of each shared version this server is still to load (none without
        ``artifacts``): until there are none, it is not ready."""
        return self._sync.unloaded()

    @property
    def control_state(self) -> ControlState:
        """The control state this server reads and writes (see the class docstring)."""
        return self._sync.state

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._closed

    def traffic_totals(self, model_id: str, version: str) -> MetricsTotals:
        """Return the version's totals over the fleet: this server's, live, and the others' last
        published (each server publishes its own once a second)."""
        local = MetricsTotals.of(self._registry.get(model_id, version).metrics)
        elsewhere = self._sync.fleet.totals(model_id, version)
        return local + elsewhere if elsewhere.requests else local

    def _judge_rollouts(self) -> None:
        """Judge every canary in progress (on a timer: the fleet's traffic may be elsewhere)."""
        for model_id in self._registry.model_ids():
            self._rollout_ops.judge_canary(model_id)

    def _leads(self) -> bool:
        """True if this server is its fleet's controller (see ControlSync.leads)."""
        return self._sync.leads

    def _as_controller(self) -> AbstractContextManager[None]:
        """Mark the changes made inside as the controller's (fenced by its lease)."""
        return self._sync.as_controller()

    def _control_available(self) -> bool:
        """False while the control state is unreachable and holds back a change made here."""
        return self._sync.available

    def _check_open(self) -> None:
        if self._closed:
            raise ServerClosedError("the server is closed")
