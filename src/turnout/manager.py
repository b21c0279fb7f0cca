"""ModelServingManager: the synchronous facade, for code written against the serving guide.

A :class:`ModelServer` runs on an event loop in a daemon thread; every method
here hands its call to that loop through an anyio blocking portal and waits.
Many threads may call :meth:`ModelServingManager.predict` at once: their
requests meet in the same batchers and run together.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import threading
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import numpy as np
from anyio.from_thread import BlockingPortal

from turnout.core.deployments.registry import HealthCheckFn
from turnout.core.errors import InvalidConfigError, ServerClosedError, TurnoutError
from turnout.core.execution.batching import BatchingConfig
from turnout.core.execution.convert import Runtime
from turnout.core.execution.model_uris import require_mlflow
from turnout.core.execution.outputs import OutputMode
from turnout.core.resilience.breaker import BreakerConfig, BreakerSnapshot
from turnout.core.resilience.fallback import Fallback
from turnout.core.resilience.health import HealthReport
from turnout.core.routing.canary_controller import RolloutEvent
from turnout.core.routing.config import RoutingConfig
from turnout.core.routing.outcomes import ABComparison
from turnout.core.routing.shadow_stats import ShadowStatistics
from turnout.core.service.server import InferenceResult, ModelServer

if TYPE_CHECKING:
    from turnout.plugins.mlflow import MlflowConfig, MlflowTracker

__all__ = ["ModelServingManager"]

logger = logging.getLogger("turnout")


class _LoopThread:
    """An event loop in a daemon thread, reachable through a blocking portal.

    A daemon thread rather than anyio's ``start_blocking_portal``: that one
    lives in a ThreadPoolExecutor, which the interpreter joins at exit, so a
    manager nobody closed would hang the program on its way out.
    """

    def __init__(self) -> None:
        self._ready = threading.Event()
        self._portal: BlockingPortal | None = None
        self._error: BaseException | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="turnout-loop", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            anyio.run(self._serve)
        except BaseException as exc:  # surfaced to the constructing thread
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        async with BlockingPortal() as portal:
            self._portal = portal
            self._ready.set()
            await portal.sleep_until_stopped()

    def call(self, func: Callable[[], Any]) -> Any:
        """Run ``func()`` on the loop (awaiting it if it is a coroutine) and return the result."""
        if self._stopping:
            # Otherwise the caller would get anyio's "This portal is not running".
            raise ServerClosedError("the manager is closed")
        assert self._portal is not None
        return self._portal.call(func)

    def stop(self) -> None:
        """Stop the loop and wait for its thread to end."""
        self._stopping = True
        if self._portal is not None and self._thread.is_alive():
            self._portal.call(self._portal.stop)
        self._thread.join()


def _off_the_loop(test: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """Wrap a sync smoke test so that it runs in a worker thread, not on the event loop."""

    async def run(server: ModelServer, model_id: str, version: str) -> Any:
        verdict = await anyio.to_thread.run_sync(test, server, model_id, version)
        if inspect.isawaitable(verdict):
            verdict = await verdict
        return verdict

    return run


# How long a closing manager waits for admitted requests before answering the
# rest with ServerClosedError; also bounds interpreter exit with an unclosed one.
CLOSE_TIMEOUT = 30.0


def _shutdown(loop: _LoopThread, server: ModelServer, tracker: MlflowTracker | None) -> None:
    try:
        loop.call(functools.partial(server.close, CLOSE_TIMEOUT))
        if tracker is not None:
            # After close: the last sample counts every request the server answered.
            loop.call(tracker.sample_metrics)
    finally:
        loop.stop()
        if tracker is not None:
            tracker.close()


class ModelServingManager:
    """Deploy, route and serve models from synchronous code; the guide's API.

    With ``enable_mlflow=True`` deployments, their lifecycle and serving
    metrics are tracked in MLflow, in ``mlflow_experiment`` (see
    docs/mlflow.md); ``mlflow_config`` (an ``MlflowConfig``) sets the rest,
    and :attr:`mlflow` is the tracker. Keyword arguments after those
    (``batching``, ``plugins``, ``seed``, ...) are passed to the
    :class:`ModelServer` it runs.
    """

    def __init__(
        self,
        enable_mlflow: bool = False,
        mlflow_experiment: str | None = None,
        error_threshold: float = 0.5,
        mock_mode: bool = False,
        *,
        mlflow_config: MlflowConfig | None = None,
        **server_options: Any,
    ) -> None:
        self.mlflow: MlflowTracker | None = None
        if enable_mlflow:
            require_mlflow("enable_mlflow=True")
            # Imported here, not at the top: the tracker is an optional plugin, and
            # its MLflow an optional extra, which only this switch of the guide's API needs.
            from turnout.plugins.mlflow import MlflowConfig, MlflowTracker

            config = mlflow_config if mlflow_config is not None else MlflowConfig()
            if not isinstance(config, MlflowConfig):
                raise InvalidConfigError(
                    f"mlflow_config must be an MlflowConfig, got {type(config).__name__}"
                )
            if mlflow_experiment is not None:
                config = dataclasses.replace(config, experiment=mlflow_experiment)
            self.mlflow = MlflowTracker(config)
            plugins = server_options.pop("plugins", ())
            server_options["plugins"] = [*plugins, self.mlflow]
        elif mlflow_config is not None:
            raise InvalidConfigError("mlflow_config is given but enable_mlflow is False")
        self.enable_mlflow = enable_mlflow
        self.mlflow_experiment = mlflow_experiment
        self.error_threshold = error_threshold
        self.mock_mode = mock_mode
        try:
            self.server = ModelServer(
                error_threshold=error_threshold, mock_mode=mock_mode, **server_options
            )
            self._loop = _LoopThread()
        except BaseException:
            if self.mlflow is not None:
                self.mlflow.close(0.0)  # nothing was logged yet: stop its thread
            raise
        self._finalizer = weakref.finalize(self, _shutdown, self._loop, self.server, self.mlflow)

    def _run(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Call ``func`` (a coroutine function or a plain one) on the server's loop."""
        return self._loop.call(functools.partial(func, *args, **kwargs))

    def deploy_model(
        self,
        model_id: str,
        version: str,
        model_instance: object,
        set_active: bool | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        error_threshold: float | None = None,
        health_check_fn: HealthCheckFn | None = None,
        breaker: BreakerConfig | None = None,
        features: Sequence[str] | None = None,
        output: OutputMode | str | None = None,
        batching: BatchingConfig | None = None,
        allow_nan: bool = False,
        replace: bool = False,
        allow_pickle: bool = False,
        runtime: Runtime | str | None = None,
    ) -> bool:
        """Deploy a model version; return True, or False with the reason logged.

        ``model_instance`` may be an MLflow model URI (``models:/name/3``); see
        :meth:`ModelServer.deploy_model` for what ``allow_pickle`` permits and
        what ``runtime="python"`` does.
        """
        try:
            self._run(
                self.server.deploy_model,
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
        except TurnoutError as exc:
            logger.error("deploying %s:%s failed: %s", model_id, version, exc)
            return False
        return True

    def predict(
        self,
        model_id: str,
        inputs: object,
        version: str | None = None,
        key: str | None = None,
        timeout: float | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> np.ndarray[Any, Any]:
        """Return predictions for ``inputs`` (see :meth:`ModelServer.predict`)."""
        result: np.ndarray[Any, Any] = self._run(
            self.server.predict,
            model_id,
            inputs,
            version=version,
            key=key,
            timeout=timeout,
            attributes=attributes,
        )
        return result

    def infer(
        self,
        model_id: str,
        inputs: object,
        version: str | None = None,
        key: str | None = None,
        timeout: float | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> InferenceResult:
        """Return the full result for ``inputs`` (see :meth:`ModelServer.infer`)."""
        result: InferenceResult = self._run(
            self.server.infer,
            model_id,
            inputs,
            version=version,
            key=key,
            timeout=timeout,
            attributes=attributes,
        )
        return result

    def set_active_version(self, model_id: str, version: str) -> None:
        """Send all of the model's traffic to ``version``, ending any test or rollout."""
        self._run(self.server.set_active_version, model_id, version)

    def retire_model(self, model_id: str, version: str) -> None:
        """Remove a version, after answering the requests it already admitted."""
        self._run(self.server.retire_model, model_id, version)

    @property
    def active_models(self) -> Mapping[str, str]:
        """A read-only live mapping of model_id to its active version."""
        return self.server.active_models

    def setup_ab_test(
        self, model_id: str, versions: Sequence[str], weights: Sequence[float]
    ) -> None:
        """Split the model's traffic between ``versions`` by ``weights``."""
        self._run(self.server.setup_ab_test, model_id, versions, weights)

    def set_routing(self, model_id: str, config: RoutingConfig) -> None:
        """Route the model's traffic by ``config`` (see :meth:`ModelServer.set_routing`)."""
        self._run(self.server.set_routing, model_id, config)

    def get_routing(self, model_id: str) -> RoutingConfig:
        """Return the model's current routing config."""
        config: RoutingConfig = self._run(self.server.get_routing, model_id)
        return config

    def start_canary(self, model_id: str, candidate: str, **plan: Any) -> None:
        """Roll ``candidate`` out step by step (see :meth:`ModelServer.start_canary`)."""
        self._run(self.server.start_canary, model_id, candidate, **plan)

    def abort_canary(self, model_id: str) -> None:
        """Stop a canary rollout and send all traffic back to its baseline."""
        self._run(self.server.abort_canary, model_id)

    def rollout_history(self, model_id: str) -> tuple[RolloutEvent, ...]:
        """Return the model's rollout events, oldest first."""
        history: tuple[RolloutEvent, ...] = self._run(self.server.rollout_history, model_id)
        return history

    def blue_green_switch(self, model_id: str, green: str, **smoke_tests: Any) -> None:
        """Smoke-test ``green`` and switch to it (see :meth:`ModelServer.blue_green_switch`).

        A plain-function ``smoke_test`` runs in a worker thread, so it may call this manager.
        """
        smoke_test = smoke_tests.get("smoke_test")
        if smoke_test is not None and not inspect.iscoroutinefunction(smoke_test):
            # On the loop thread, its calls back into the manager would all fail.
            smoke_tests["smoke_test"] = _off_the_loop(smoke_test)
        self._run(self.server.blue_green_switch, model_id, green, **smoke_tests)

    def blue_green_rollback(self, model_id: str) -> None:
        """Send all traffic back to the blue version of the last blue-green switch."""
        self._run(self.server.blue_green_rollback, model_id)

    def record_outcome(self, model_id: str, request_id: str, outcome: float) -> str:
        """Attach an outcome to a served request; return the version that served it."""
        version: str = self._run(self.server.record_outcome, model_id, request_id, outcome)
        return version

    def compare_versions(self, model_id: str, a: str, b: str) -> ABComparison:
        """Compare two versions' recorded outcomes (see :meth:`ModelServer.compare_versions`).

        The outcomes are those of every server sharing the control state. With
        MLflow enabled, the result is logged on both versions' runs.
        """
        self._run(self.server.refresh_outcomes, model_id)
        comparison: ABComparison = self._run(self.server.compare_versions, model_id, a, b)
        return comparison

    def shadow_statistics(self, model_id: str) -> list[ShadowStatistics]:
        """Return each shadow version's record against its primary."""
        stats: list[ShadowStatistics] = self._run(self.server.shadow_statistics, model_id)
        return stats

    def reset_circuit_breaker(self, model_id: str, version: str) -> None:
        """Close a version's circuit breaker by hand and forget its failures."""
        self._run(self.server.reset_circuit_breaker, model_id, version)

    def circuit_breaker(self, model_id: str, version: str | None = None) -> BreakerSnapshot:
        """Return a version's breaker state (the active version when None)."""
        snapshot: BreakerSnapshot = self._run(self.server.circuit_breaker, model_id, version)
        return snapshot

    def set_fallback(self, model_id: str, fallback: Fallback | None) -> None:
        """Answer with ``fallback`` while the routed version's breaker is open."""
        self._run(self.server.set_fallback, model_id, fallback)

    def start_health_monitor(self, interval: float = 30.0, *, auto_rollback: bool = False) -> None:
        """Watch every version's health in the background (see ModelServer)."""
        self._run(self.server.start_health_monitor, interval, auto_rollback=auto_rollback)

    def stop_health_monitor(self) -> None:
        """Stop the background health monitor, if it runs."""
        self._run(self.server.stop_health_monitor)

    def evaluate_health(self, *, auto_rollback: bool = False) -> list[HealthReport]:
        """Assess every version once, as the monitor does each interval."""
        reports: list[HealthReport] = self._run(
            self.server.evaluate_health, auto_rollback=auto_rollback
        )
        return reports

    def get_all_models_status(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Return ``{model_id: {version: {"status", "metrics", "metadata", ...}}}``."""
        status: dict[str, dict[str, dict[str, Any]]] = self._run(self.server.get_all_models_status)
        return status

    def health_check(self, model_id: str, version: str | None = None) -> HealthReport:
        """Return the health of ``version`` (the active version when None)."""
        report: HealthReport = self._run(self.server.health_check, model_id, version)
        return report

    def close(self) -> None:
        """Answer every admitted request, release every model and stop the loop thread."""
        self._finalizer()

    def __enter__(self) -> ModelServingManager:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
