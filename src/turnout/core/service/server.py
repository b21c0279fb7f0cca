"""ModelServer: the async facade that deploys models, routes requests and answers them.

Every change to the server's state (deploy, activate, retire, routing)
happens on the event loop between two awaits, so each is atomic with
respect to requests: a request is routed wholly before or wholly after it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import anyio
import numpy as np

from turnout.core.clock import Clock, MonotonicClock
from turnout.core.deployments.builder import (
    DeploymentOptions,
    build_deployment,
    check_batching,
    check_breaker,
    check_metadata,
    check_threshold,
    load_runtime,
)
from turnout.core.deployments.registry import Deployment, HealthCheckFn, ModelRegistry
from turnout.core.errors import (
    CircuitOpenError,
    InvalidConfigError,
    InvalidInputError,
    InvalidNameError,
    InvalidRoutingError,
    OverloadedError,
    ServerClosedError,
    StoreError,
    TurnoutError,
    VersionExistsError,
)
from turnout.core.execution.batching import BatchingConfig, BatchReport, BatchSlice
from turnout.core.execution.outputs import BatchOutput, OutputMode, parse_output_mode
from turnout.core.names import check_name
from turnout.core.resilience.breaker import BreakerConfig, BreakerSnapshot, BreakerState
from turnout.core.resilience.fallback import Fallback
from turnout.core.resilience.health import HealthReport
from turnout.core.routing.canary_controller import RolloutController, RolloutEvent
from turnout.core.routing.canary_plan import CANARY, DEFAULT_STEPS
from turnout.core.routing.config import RoutingConfig, RoutingContext
from turnout.core.routing.outcomes import ABComparison, compare
from turnout.core.routing.router import ACTIVE, ModelTraffic, Router
from turnout.core.routing.shadow_stats import ShadowStatistics
from turnout.core.service.control_sync import ControlSync
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
from turnout.core.service.restore import Restorer
from turnout.core.service.rollout_operations import RolloutOperations
from turnout.core.state.control import ControlState
from turnout.core.state.memory import MemoryState
from turnout.core.state.repository import (
    ModelRecord,
    ModelStore,
    check_storable,
    fallback_to_dict,
)
from turnout.core.state.write_queue import StoreWriter

__all__ = ["FIXED_VALUE", "InferenceResult", "ModelServer", "SmokeTest"]

logger = logging.getLogger("turnout")

# What outcome feedback records as the server of a fixed fallback value.
FIXED_VALUE = "fallback-value"

# smoke_test(server, model_id, green) for blue_green_switch: true if green may go live.
SmokeTest = Callable[["ModelServer", str, str], Awaitable[bool] | bool]


@dataclass(frozen=True)
class InferenceResult:
    """The full answer to one request: what served it, and every output it produced.

    ``request_id`` identifies the request to :meth:`ModelServer.record_outcome`.
    ``fallback`` is True when the routed version's breaker was open and the
    model's fallback answered: ``version`` then names the fallback version,
    or, for a fixed fallback value, the version that could not serve.
    """

    model_id: str
    version: str
    outputs: np.ndarray[Any, Any]
    labels: np.ndarray[Any, Any] | None
    probabilities: np.ndarray[Any, Any] | None
    latency_ms: float
    request_id: str
    fallback: bool = False


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
    one state share their control state.
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
    ) -> None:
        if repository is not None and mock_mode:
            raise InvalidConfigError(
                "a repository stores ONNX models; mock_mode serves Python ones"
            )
        self._batching = check_batching(batching or BatchingConfig())
        self._breaker = check_breaker(breaker or BreakerConfig())
        self._error_threshold = check_threshold(error_threshold)
        if not isinstance(runtime_threads, int) or not 1 <= runtime_threads <= 64:
            raise InvalidConfigError(
                f"runtime_threads must be an integer from 1 to 64, got {runtime_threads!r}"
            )
        self._runtime_threads = runtime_threads
        self.mock_mode = bool(mock_mode)
        self._clock = clock or MonotonicClock()
        self.plugin_manager = make_plugin_manager(plugins, entry_points=entry_points)
        self._events = EventEmitter(self.plugin_manager)
        self._router = Router(collect_strategies(self.plugin_manager), random.Random(seed).random)
        self._policies = collect_breaker_policies(self.plugin_manager)
        if self._breaker.policy not in self._policies:
            known = ", ".join(sorted(self._policies))
            raise InvalidConfigError(
                f"unknown breaker policy {self._breaker.policy!r}; known: {known}"
            )
        self._rollouts = RolloutController(self._clock)
        self._registry = ModelRegistry()
        self._health = HealthMonitor(
            self._registry,
            collect_health_checks(self.plugin_manager),
            self._events,
            rollback=self._roll_back,
        )
        self._fallbacks: dict[str, Fallback] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._closed = False
        self._store = (
            StoreWriter(
                ModelStore(repository, read_only=bool(repository_read_only)), self._model_record
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
        )
        self._rollout_ops = RolloutOperations(parts, self)
        self._restorer = Restorer(parts, self)
        self._mirror = Mirror(parts)
        self._owns_state = state is None
        self._sync = ControlSync(parts, self, MemoryState() if state is None else state)

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
        locked first: StoreError if another server holds it.
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
    ) -> Deployment:
        """Deploy ``model_instance`` as ``version`` of ``model_id`` and return the Deployment.

        The model is a fitted scikit-learn estimator or Pipeline, an
        ``onnx.ModelProto``, ONNX bytes, a ``.onnx`` path, or an MLflow model
        URI (``models:/name/3``, ``models:/name@alias``, ``runs:/<id>/model``;
        a scikit-learn flavor only with ``allow_pickle=True``, as loading it
        runs code from the registry). ``set_active=None`` activates it only
        if the model has no active version yet.
        """
        check_name("model_id", model_id)
        check_name("version", version)
        self._check_open()
        self._check_absent(model_id, version, replace)
        if health_check_fn is not None and not callable(health_check_fn):
            raise InvalidConfigError("health_check_fn must be callable as fn(model, version)")
        options = DeploymentOptions(
            output=parse_output_mode(output),
            batching=check_batching(batching or self._batching),
            error_threshold=check_threshold(
                self._error_threshold if error_threshold is None else error_threshold
            ),
            metadata=check_metadata(metadata),
            breaker=check_breaker(breaker or self._breaker),
            features=features,
            allow_nan=bool(allow_nan),
            health_check_fn=health_check_fn,
        )
        if self._store is not None:
            check_storable(options.metadata, options.breaker, version)
        name = f"{model_id}:{version}"
        loaded, runtime = await anyio.to_thread.run_sync(
            lambda: load_runtime(
                model_instance,
                features,
                name=name,
                mock_mode=self.mock_mode,
                threads=self._runtime_threads,
                allow_pickle=bool(allow_pickle),
            )
        )
        deployment = build_deployment(
            model_id,
            version,
            loaded,
            runtime,
            options,
            clock=self._clock,
            policies=self._policies,
            on_batch=self._batch_done,
            on_overrun=self._overrun,
            on_breaker_change=self._breaker_changed,
        )
        try:
            # Checked again: the server may have closed, or another deploy of
            # this version landed, while the model was converting.
            self._check_open()
            self._check_absent(model_id, version, replace)
            old = self._registry.add(deployment, replace=replace)
        except TurnoutError:
            await _release(deployment)
            raise
        if self._store is not None:
            self._store.save_version(deployment)
        self._sync.changed(model_id, choice=False)
        activate = set_active if set_active is not None else model_id not in self._registry.active
        if activate:
            self._set_active(model_id, version)
        else:
            self._refresh_routing(model_id)
        plan = self._rollout_ops.canary_plan(model_id) if old is not None else None
        if plan is not None and version in (plan.baseline, plan.candidate):
            # The new deployment's counters start at zero: judged against the step's
            # marks on the old one, the step would count negative requests.
            reason = f"{version} was replaced; step {plan.step} starts over"
            self._rollout_ops.begin_canary_step(model_id, started=False, reason=reason)
        logger.info("deployed %s (%s)%s", name, loaded.source, " [active]" if activate else "")
        self._events.emit("model_deployed", deployment=deployment)
        if old is not None:
            # A new model under an old name: what the monitor knew of it is stale.
            self._health.forget(model_id, version)
            await _release(old)
        await self._flush_changes()
        return deployment

    def _check_absent(self, model_id: str, version: str, replace: bool) -> None:
        if not replace and self._registry.contains(model_id, version):
            raise VersionExistsError(
                f"Version '{version}' of model '{model_id}' is already deployed;"
                " pass replace=True to replace it"
            )

    async def set_active_version(self, model_id: str, version: str) -> None:
        """Send all of the model's traffic to ``version``, ending any test or rollout."""
        check_name("model_id", model_id)
        check_name("version", version)
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
        check_name("model_id", model_id)
        check_name("version", version)
        self._registry.get(model_id, version)
        config = self._router.config(model_id)
        if config.strategy != ACTIVE.strategy:
            strategy = self._router.traffic(model_id).strategy
            if version in strategy.versions():
                raise InvalidRoutingError(
                    f"version '{version}' of model '{model_id}' receives traffic under"
                    f" {config.strategy!r} routing; change the routing before retiring it"
                )
        fallback = self._fallbacks.get(model_id)
        if fallback is not None and fallback.version == version:
            raise InvalidConfigError(
                f"version '{version}' is the fallback of model '{model_id}';"
                " set another fallback (or none) before retiring it"
            )
        was_active = self._registry.active.get(model_id) == version
        deployment = self._registry.remove(model_id, version)
        self._health.forget(model_id, version)
        if self._registry.contains_model(model_id):
            self._refresh_routing(model_id, keep_unaffected=False)
        else:
            # The model is gone: so are its routing and its fallback.
            self._router.drop(model_id)
            self._fallbacks.pop(model_id, None)
        if self._store is not None:
            self._store.delete_version(model_id, version)
        self._sync.retired(model_id, version, choice=was_active)
        logger.info("retired %s:%s", model_id, version)
        if was_active:
            self._events.emit("active_version_changed", model_id=model_id, old=version, new=None)
        await _release(deployment)
        self._events.emit("model_retired", model_id=model_id, version=version)
        await self._flush_changes()

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
        self._registry.versions(check_name("model_id", model_id))
        self._router.build(config, self._context(model_id))  # validate before ending anything
        old = self._router.config(model_id)
        if old.strategy == CANARY and not _same_rollout(old, config):
            # Also when a canary of other versions replaces it: that one starts afresh.
            self._rollout_ops.end_rollout(model_id, "replaced by new routing")
        self._apply_routing(model_id, config)
        await self._flush_changes()

    def get_routing(self, model_id: str) -> RoutingConfig:
        """Return the model's current routing config."""
        self._registry.versions(check_name("model_id", model_id))
        return self._router.config(model_id)

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
                model_id, started=not _same_rollout(old, config), reason=reason
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
        _, piece, _ = await self._submit(model_id, inputs, version, key, timeout, attributes)
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
        attributes: Mapping[str, Any] | None = None,
    ) -> InferenceResult:
        """Like :meth:`predict`, but return the version that served, labels, probabilities
        and a ``request_id`` for :meth:`record_outcome`."""
        started = self._clock.now()
        # Taken before the request runs: the model may be retired meanwhile,
        # and an answered request must still get its result.
        traffic = self._router.traffic(model_id) if isinstance(model_id, str) else None
        deployment, piece, fallback = await self._submit(
            model_id, inputs, version, key, timeout, attributes
        )
        assert traffic is not None
        out, rows = piece.result, slice(piece.start, piece.stop)
        return InferenceResult(
            model_id=model_id,
            version=deployment.version,
            outputs=out.primary[rows],
            labels=None if out.labels is None else out.labels[rows],
            probabilities=None if out.scores is None or out.labels is None else out.scores[rows],
            latency_ms=(self._clock.now() - started) * 1e3,
            # A fixed fallback value is no version's answer: its outcome counts for none.
            request_id=traffic.outcomes.new_request(
                deployment.version if fallback is not Fallback.VALUE else FIXED_VALUE
            ),
            fallback=fallback is not None,
        )

    async def _submit(
        self,
        model_id: str,
        inputs: object,
        version: str | None,
        key: str | None,
        timeout: float | None,
        attributes: Mapping[str, Any] | None,
    ) -> tuple[Deployment, BatchSlice[BatchOutput], str | None]:
        """Route, validate, admit and queue one request; return who served, the slice,
        and which kind of fallback served (None, Fallback.VERSION or Fallback.VALUE)."""
        started = self._clock.now()
        if self._closed:
            raise ServerClosedError("the server is closed")
        if not isinstance(model_id, str) or not (version is None or isinstance(version, str)):
            # Cheaper than check_name per request; a str that is no valid name
            # simply finds no model below.
            raise InvalidNameError("model_id and version must be strings")
        if key is not None and not isinstance(key, str):
            raise InvalidInputError(f"key must be a string, got {type(key).__name__}")
        if attributes is not None and not isinstance(attributes, Mapping):
            raise InvalidInputError("attributes must be a dict")
        if timeout is not None:
            timeout = _check_timeout(timeout)
        if version is None:
            route = self._router.route(model_id, key, attributes or {})
            deployment = self._registry.get(model_id, route.primary)
        else:
            route = None
            deployment = self._registry.get(model_id, version)
        rows = deployment.schema.encode(inputs)
        used_fallback: str | None = None
        try:
            permit = deployment.breaker.admit()
        except CircuitOpenError:
            fallback = self._fallbacks.get(model_id)
            # A request pinned to a version asked for that version's answer only.
            if fallback is None or version is not None or fallback.version == deployment.version:
                raise
            if fallback.version is None:
                return deployment, fallback.constant(len(rows)), Fallback.VALUE
            used_fallback = Fallback.VERSION
            # The fallback version's own breaker decides whether it may serve.
            deployment = self._registry.get(model_id, fallback.version)
            rows = deployment.schema.encode(inputs)
            permit = deployment.breaker.admit()
            route = None
        if timeout is None and deployment.batcher.config.timeout_ms is not None:
            timeout = deployment.batcher.config.timeout_ms / 1e3
        deadline = None if timeout is None else started + timeout
        try:
            if route is not None and route.mirrors:
                primary = deployment.batcher.enqueue(rows, deadline=deadline, started=started)
                loop = asyncio.get_running_loop()
                for mirror in route.mirrors:
                    # Queued after the primary, from the next loop turn: never before it.
                    loop.call_soon(self._mirror.send, model_id, deployment, mirror, inputs, primary)
                piece = await primary
            else:
                piece = await deployment.batcher.submit(rows, deadline=deadline, started=started)
        except OverloadedError:
            deployment.metrics.record_shed()
            raise
        finally:
            deployment.breaker.release(permit)
        return deployment, piece, used_fallback

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _batch_done(self, deployment: Deployment, report: BatchReport) -> None:
        deployment.metrics.record_batch(
            rows=report.rows,
            latencies=report.latencies,
            requests=report.requests,
            errors=report.failed_requests,
            duration=report.duration,
            failed_latency=report.failed_latency,
        )
        if not report.overran:  # an overrun was counted when its deadline passed
            deployment.breaker.record(report.error is not None, report.duration)
        if self._events.has_listeners("batch_completed"):
            self._events.emit(
                "batch_completed",
                model_id=deployment.model_id,
                version=deployment.version,
                report=report,
            )
        if self._router.config(deployment.model_id).strategy == CANARY:
            self._rollout_ops.judge_canary(deployment.model_id)

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
        if baseline is None:
            baseline = self._registry.get(model_id).version
        params = {
            "baseline": baseline,
            "candidate": candidate,
            "steps": list(steps),
            "step": 0,
            "min_requests": min_requests,
            "min_seconds": min_seconds,
            "max_error_rate": max_error_rate,
            "max_latency_ratio": max_latency_ratio,
        }
        await self.set_routing(model_id, RoutingConfig(CANARY, params))

    async def abort_canary(self, model_id: str) -> None:
        """Stop a canary rollout and send all traffic back to its baseline."""
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
        await self._rollout_ops.blue_green_rollback(model_id)

    # -- outcomes and shadows ----------------------------------------------------------

    async def record_outcome(self, model_id: str, request_id: str, outcome: float) -> str:
        """Attach ground truth or a reward to a served request; return the version that served.

        A bandit routing learns from it; :meth:`compare_versions` tests it.
        """
        traffic = self._router.traffic(check_name("model_id", model_id))
        if not isinstance(request_id, str):
            raise InvalidInputError("request_id must be a string from an InferenceResult")
        learn = getattr(traffic.strategy, "record_outcome", None)
        if learn is not None:
            # The strategy validates the reward first, so a refused one changes nothing.
            learn(traffic.outcomes.version_of(request_id), outcome)
        version = traffic.outcomes.record(request_id, outcome)
        totals = await self._sync.add_outcome(model_id, version, float(outcome))
        traffic.outcomes.adopt(version, totals)
        return version

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
        if not _positive_number(interval):
            raise InvalidConfigError(f"interval must be a positive number of seconds: {interval!r}")
        self._check_open()
        if self._health.settings is not None:
            raise InvalidConfigError("the health monitor is already running")
        self._spawn(self._health.start(MonitorSettings(float(interval), bool(auto_rollback))))

    def stop_health_monitor(self) -> None:
        """Stop the background health monitor, if it runs."""
        self._health.stop()

    def _roll_back(self, model_id: str, version: str, reason: str) -> None:
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
        self._registry.versions(check_name("model_id", model_id))
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

    def _overrun(self, deployment: Deployment) -> None:
        # Counted when the deadline passes, not when (if ever) the batch ends:
        # a model that hangs must trip its breaker all the same.
        # The second argument is the execution's duration, as policies (slow_calls,
        # plugins) read it: how long the batch has run so far, not the clock's
        # reading (which was passed here before). The oldest batch in flight is
        # the overrunning one whenever a version runs one batch at a time.
        elapsed = deployment.batcher.statistics().oldest_batch_seconds
        deployment.breaker.record(True, elapsed)

    def _breaker_changed(
        self, deployment: Deployment, old: BreakerState, new: BreakerState, reason: str
    ) -> None:
        log = logger.warning if new is BreakerState.OPEN else logger.info
        log(
            "circuit breaker of %s:%s is %s: %s",
            deployment.model_id,
            deployment.version,
            new.value,
            reason,
        )
        self._events.emit(
            "breaker_state_changed",
            model_id=deployment.model_id,
            version=deployment.version,
            old=old,
            new=new,
            reason=reason,
        )
        if new is BreakerState.OPEN and self._router.config(deployment.model_id).strategy == CANARY:
            self._rollout_ops.judge_canary(deployment.model_id)

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
        await asyncio.gather(*(_release(d, timeout) for d in self._registry))
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

    def _model_record(self, model_id: str) -> ModelRecord | None:
        """Return the model's live state as a record (None once it has no versions)."""
        if not self._registry.contains_model(model_id):
            return None
        active = self._registry.active.get(model_id)
        routing = self._router.config(model_id).to_dict()
        fallback = self._fallbacks.get(model_id)
        versions = set(self._registry.versions(model_id))
        # Any deployed version the routing params mention (a plugin's strategy may keep
        # them anywhere) must be stored before this state is, as must active and fallback.
        named = _strings(routing["params"]) & versions
        named |= {v for v in (active, fallback.version if fallback else None) if v is not None}
        return ModelRecord(
            model_id=model_id,
            active=active,
            routing=routing,
            fallback=fallback_to_dict(fallback),
            named=frozenset(named),
        )

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

    @property
    def control_state(self) -> ControlState:
        """The control state this server reads and writes (see the class docstring)."""
        return self._sync.state

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise ServerClosedError("the server is closed")


def _strings(data: object) -> set[str]:
    """Every string in plain data (dicts, lists), keys included."""
    if isinstance(data, str):
        return {data}
    items: list[object] = []
    if isinstance(data, Mapping):
        items = [*data.keys(), *data.values()]
    elif isinstance(data, list | tuple):
        items = list(data)
    found: set[str] = set()
    for item in items:
        found |= _strings(item)
    return found


def _same_rollout(old: RoutingConfig, new: RoutingConfig) -> bool:
    """True if ``new`` is a step of the canary rollout ``old`` (same baseline and candidate)."""
    return (
        old.strategy == new.strategy == CANARY
        and old.params.get("baseline") == new.params.get("baseline")
        and old.params.get("candidate") == new.params.get("candidate")
    )


async def _release(deployment: Deployment, timeout: float | None = None) -> None:
    await deployment.batcher.close(timeout)
    deployment.runtime.close()


def _positive_number(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value) and value > 0
    except OverflowError:  # an int too large for a float
        return False


def _check_timeout(timeout: object) -> float:
    if not _positive_number(timeout):
        raise InvalidInputError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return float(timeout)  # type: ignore[arg-type]
