"""MLflow tracking: each deployment a run, its lifecycle as tags and events, serving metrics.

``MlflowTracker`` is a plugin on turnout's event hooks. Every ``deploy_model``
starts a run in the experiment (created if missing) with the deployment's
params, the user's metadata as tags, and the ONNX model as an MLflow ``onnx``
model under ``model/`` (so ``runs:/<run_id>/model`` deploys it again). Later
events on that version (activated, routing changed, breaker opened or
closed, health, rollout steps, replaced, retired) become tags for the current
state plus one ``turnout.event.NNNN`` tag per event, its value starting with
the UTC time. Serving metrics are sampled on the event loop every
``metrics_interval`` seconds and logged with the sample number as step, and
every ``compare_versions`` result on both versions' runs.

Nothing here runs on the request path: hooks copy a few values and queue a
job; a worker thread talks to MLflow (see :mod:`turnout.plugins.mlflow_worker`).
The tracking server comes from MLflow's own configuration
(``MLFLOW_TRACKING_URI``) unless ``MlflowConfig.tracking_uri`` names one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from turnout.core.deployments.registry import Deployment
from turnout.core.errors import InvalidConfigError
from turnout.core.execution.model_uris import require_mlflow
from turnout.core.hookspecs import hookimpl
from turnout.core.resilience.breaker import BreakerState
from turnout.core.resilience.health import HealthReport
from turnout.core.routing.config import RoutingConfig
from turnout.core.routing.outcomes import ABComparison
from turnout.plugins.mlflow_records import (
    RunRecord,
    comparison_metrics,
    metric_values,
    run_record,
)
from turnout.plugins.mlflow_worker import Job, RetryPolicy, Worker, WorkerStatistics

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = ["MlflowConfig", "MlflowTracker", "WorkerStatistics"]

logger = logging.getLogger("turnout.plugins.mlflow")

_BREAKER_LEVEL = {BreakerState.CLOSED: 0.0, BreakerState.HALF_OPEN: 0.5, BreakerState.OPEN: 1.0}


@dataclass(frozen=True)
class MlflowConfig:
    """Where and how often the MLflow plugin logs, and how it copes with a tracking server down.

    ``experiment`` None means MLflow's own choice: ``MLFLOW_EXPERIMENT_NAME``,
    else its "Default" experiment. ``tracking_uri`` None means MLflow's own
    configuration. Retries of a failed record wait ``retry_delay`` seconds,
    doubling up to ``max_retry_delay``, ``max_attempts`` tries in all;
    ``close()`` waits at most ``shutdown_timeout`` seconds for the queue.
    """

    experiment: str | None = None
    tracking_uri: str | None = None
    metrics_interval: float = 30.0
    queue_size: int = 10_000
    max_attempts: int = 5
    retry_delay: float = 1.0
    max_retry_delay: float = 60.0
    shutdown_timeout: float = 30.0
    log_model: bool = True

    def __post_init__(self) -> None:
        for name in ("experiment", "tracking_uri"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise InvalidConfigError(f"{name} must be a non-empty string or None: {value!r}")
        for name in ("metrics_interval", "shutdown_timeout"):
            value = getattr(self, name)
            if not _positive(value):
                raise InvalidConfigError(f"{name} must be a positive number of seconds: {value!r}")
        if isinstance(self.queue_size, bool) or not isinstance(self.queue_size, int):
            raise InvalidConfigError(f"queue_size must be an integer, got {self.queue_size!r}")
        if self.queue_size < 1:
            raise InvalidConfigError(f"queue_size must be at least 1, got {self.queue_size}")
        self.retry_policy()  # validates the retry settings

    def retry_policy(self) -> RetryPolicy:
        """Return the retry settings as the worker's RetryPolicy."""
        return RetryPolicy(self.max_attempts, self.retry_delay, self.max_retry_delay)


@dataclass(frozen=True)
class _Session:
    """What the worker thread talks to MLflow with."""

    client: MlflowClient
    experiment_id: str


class _Run:
    """The MLflow run of one deployment. ``run_id`` is set by the worker thread only."""

    def __init__(self, record: RunRecord) -> None:
        self.record = record
        self.run_id: str | None = None
        self.params_logged = False
        self._events = itertools.count(1)  # numbered on the loop, in the events' order

    def next_event(self) -> int:
        return next(self._events)

    def ensure(self, session: _Session) -> str:
        """Create the run with its params and first tags if it does not exist yet."""
        if self.run_id is None:
            run = session.client.create_run(
                session.experiment_id,
                run_name=self.record.name,
                tags=dict(self.record.tags),
            )
            self.run_id = str(run.info.run_id)
        if not self.params_logged:
            from mlflow.entities import Param

            params = [Param(key, value) for key, value in self.record.params.items()]
            # log_batch takes at most 100 params per call.
            for start in range(0, len(params), 100):
                session.client.log_batch(self.run_id, params=params[start : start + 100])
            self.params_logged = True
        return self.run_id


class MlflowTracker:
    """A plugin that records deployments, their lifecycle and serving metrics in MLflow.

    Register it with ``ModelServer(plugins=[tracker])``, one tracker per
    server, and close it after the server: ``await tracker.aclose()`` in
    async code (it logs a last metrics sample first), ``tracker.close()``
    elsewhere.
    """

    def __init__(self, config: MlflowConfig | None = None) -> None:
        require_mlflow("MLflow tracking")
        self.config = config if config is not None else MlflowConfig()
        if not isinstance(self.config, MlflowConfig):
            raise InvalidConfigError(f"expected an MlflowConfig, got {type(config).__name__}")
        self._runs: dict[tuple[str, str], _Run] = {}
        self._deployments: dict[tuple[str, str], Deployment] = {}
        self._last_values: dict[tuple[str, str], dict[str, float]] = {}
        self._active: dict[str, str | None] = {}
        self._comparisons: dict[str, itertools.count[int]] = {}
        self._samples = itertools.count(0)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._worker: Worker[_Session] = Worker(
            self._connect,
            capacity=self.config.queue_size,
            retry=self.config.retry_policy(),
            tick=self._request_sample,
            tick_interval=self.config.metrics_interval,
        )

    # -- lifecycle events (on the event loop) ------------------------------------------

    @hookimpl
    def model_deployed(self, deployment: Deployment) -> None:
        """Start a run for the new deployment; end the run of the one it replaced."""
        self._remember_loop()
        key = (deployment.model_id, deployment.version)
        if key in self._runs:
            self._end(key, "replaced", "replaced by a new deployment of this version")
        active = self._active.get(deployment.model_id) == deployment.version
        run = _Run(run_record(deployment, active=active))
        self._runs[key] = run
        self._deployments[key] = deployment
        self._submit("deployment", lambda session: self._start(session, run))
        self._event(key, "deployed", deployment.loaded.source, tags={})
        if active:
            self._event(key, "activated", "active version", tags={}, metrics={"active": 1.0})

    @hookimpl
    def model_retired(self, model_id: str, version: str) -> None:
        """Log the version's last metrics and end its run."""
        self._end((model_id, version), "retired", "retired")

    @hookimpl
    def active_version_changed(self, model_id: str, old: str | None, new: str | None) -> None:
        """Mark the old active version's run inactive and the new one's active."""
        self._remember_loop()
        self._active[model_id] = new
        if old is not None and (model_id, old) in self._runs:
            detail = f"no longer active (now {new})" if new else "no longer active"
            self._event(
                (model_id, old),
                "deactivated",
                detail,
                tags={"turnout.active": "false"},
                metrics={"active": 0.0},
            )
        # A version activated by its own deploy has no run yet: model_deployed,
        # which follows, sees it in self._active.
        if new is not None and (model_id, new) in self._runs:
            self._event(
                (model_id, new),
                "activated",
                f"active version (was {old})",
                tags={"turnout.active": "true"},
                metrics={"active": 1.0},
            )

    @hookimpl
    def routing_changed(self, model_id: str, old: RoutingConfig, new: RoutingConfig) -> None:
        """Record the model's new routing on the run of each of its versions."""
        routing = _compact(new.to_dict())
        for key in [key for key in self._runs if key[0] == model_id]:
            self._event(
                key,
                "routing",
                f"{old.strategy} -> {new.strategy}: {routing}",
                tags={"turnout.routing": routing},
            )

    @hookimpl
    def breaker_state_changed(
        self, model_id: str, version: str, old: BreakerState, new: BreakerState, reason: str
    ) -> None:
        """Record the breaker's state as a tag and a metric (0 closed, 0.5 half-open, 1 open)."""
        self._event(
            (model_id, version),
            f"breaker_{new.value}",
            reason,
            tags={"turnout.breaker": new.value},
            metrics={"breaker_open": _BREAKER_LEVEL[new]},
        )

    @hookimpl
    def health_changed(
        self, model_id: str, version: str, old: HealthReport | None, new: HealthReport
    ) -> None:
        """Record the version's health status and its reasons."""
        self._event(
            (model_id, version),
            f"health_{new.status.value}",
            "; ".join(new.reasons) or new.status.value,
            tags={"turnout.health": new.status.value},
        )

    @hookimpl
    def rollout_step(
        self, model_id: str, candidate: str, step: int, weight: float, event: str
    ) -> None:
        """Record a canary step, promotion or rollback on the candidate's run."""
        self._event(
            (model_id, candidate),
            f"rollout_{event}",
            f"step {step}, weight {weight:g}",
            tags={"turnout.rollout": event},
            metrics={"rollout_weight": weight},
        )

    # -- metrics and comparisons --------------------------------------------------------

    def sample_metrics(self) -> None:
        """Queue one sample of every deployed version's serving metrics. Call it on the loop.

        A version whose numbers did not change since its last sample is skipped;
        the step is the sample's number, so gaps in a plot are idle time.
        """
        step = next(self._samples)
        now = _now_ms()
        for key, deployment in list(self._deployments.items()):
            self._sample_one(key, deployment, step, now)

    @hookimpl
    def versions_compared(self, model_id: str, comparison: ABComparison) -> None:
        """Log the comparison ``compare_versions`` made on both versions' runs."""
        self.log_comparison(model_id, comparison)

    def log_comparison(self, model_id: str, comparison: ABComparison) -> None:
        """Log an A/B comparison on both versions' runs (``compare_versions`` does it itself)."""
        prefix, values, tags = comparison_metrics(comparison)
        step = next(self._comparisons.setdefault(f"{model_id}/{prefix}", itertools.count(0)))
        for version in (comparison.a.version, comparison.b.version):
            key = (model_id, version)
            if key in self._runs:
                self._log(key, "comparison", values, tags, step=step)

    def statistics(self) -> WorkerStatistics:
        """Return the logging worker's counters: logged, failed, dropped, pending, retries."""
        return self._worker.statistics()

    # -- shutdown -------------------------------------------------------------------------

    def close(self, timeout: float | None = None) -> WorkerStatistics:
        """End every run, then wait (``shutdown_timeout`` at most) for the queue to be logged.

        Returns the worker's final counters; records that could not be logged
        are also said in a warning on the ``turnout.plugins.mlflow`` logger.
        """
        self._end_all()
        return self._worker.close(self._wait(timeout))

    async def aclose(self, timeout: float | None = None) -> WorkerStatistics:
        """Log a last metrics sample, end every run, and flush without blocking the event loop."""
        self.sample_metrics()
        # Ended here, on the loop, like every other change to the tracker's runs.
        self._end_all()
        return await asyncio.to_thread(self._worker.close, self._wait(timeout))

    def _end_all(self) -> None:
        for key in list(self._runs):
            self._end(key, "stopped", "the server closed", sample=False)

    def _wait(self, timeout: float | None) -> float:
        return self.config.shutdown_timeout if timeout is None else timeout

    # -- internals --------------------------------------------------------------------------

    def _remember_loop(self) -> None:
        # Called outside a loop (a test calling a hook), there are no periodic samples.
        with contextlib.suppress(RuntimeError):
            self._loop = asyncio.get_running_loop()

    def _request_sample(self) -> None:
        """In the worker thread: ask the loop for a sample, as metrics are only read there."""
        loop = self._loop
        if loop is None or loop.is_closed() or not self._deployments:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._sample_safely)

    def _sample_safely(self) -> None:
        try:
            self.sample_metrics()
        except Exception:
            logger.exception("MLflow plugin: sampling serving metrics failed")

    def _sample_one(
        self, key: tuple[str, str], deployment: Deployment, step: int, now: int
    ) -> None:
        queued = deployment.batcher.statistics().queued_rows
        values = metric_values(deployment.metrics.snapshot(queue_depth=queued))
        if values == self._last_values.get(key):
            return
        self._last_values[key] = values
        self._log(key, "metrics", values, {}, step=step, timestamp=now)

    def _event(
        self,
        key: tuple[str, str],
        name: str,
        detail: str,
        *,
        tags: Mapping[str, str],
        metrics: Mapping[str, float] | None = None,
    ) -> None:
        run = self._runs.get(key)
        if run is None:
            return
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        number = run.next_event()
        all_tags = {**tags, f"turnout.event.{number:04d}": f"{stamp} {name}: {detail}"}
        # The event's number is the step: two events in one millisecond would
        # otherwise tie, and MLflow shows the larger value of a tie as the latest.
        self._log(key, name, dict(metrics or {}), all_tags, step=number)

    def _log(
        self,
        key: tuple[str, str],
        kind: str,
        metrics: Mapping[str, float],
        tags: Mapping[str, str],
        *,
        step: int = 0,
        timestamp: int | None = None,
    ) -> None:
        run = self._runs.get(key)
        if run is None:
            return
        when = _now_ms() if timestamp is None else timestamp
        metric_items = tuple(metrics.items())
        tag_items = tuple(tags.items())

        def log(session: _Session) -> None:
            from mlflow.entities import Metric, RunTag

            run_id = run.ensure(session)
            session.client.log_batch(
                run_id,
                metrics=[Metric(name, value, when, step) for name, value in metric_items],
                tags=[RunTag(name, value) for name, value in tag_items],
            )

        self._submit(kind, log)

    def _end(self, key: tuple[str, str], status: str, detail: str, *, sample: bool = True) -> None:
        deployment = self._deployments.get(key)
        if sample and deployment is not None:
            self._sample_one(key, deployment, next(self._samples), _now_ms())
        self._event(key, status, detail, tags={"turnout.status": status, "turnout.active": "false"})
        run = self._runs.pop(key, None)
        self._deployments.pop(key, None)
        self._last_values.pop(key, None)
        if run is not None:
            self._submit("end", lambda session: _terminate(session, run))

    def _submit(self, kind: str, action: Any) -> None:
        self._worker.submit(Job(kind, action))

    def _connect(self) -> _Session:
        """In the worker thread: a client, and the experiment's id (created if missing)."""
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        client = MlflowClient(tracking_uri=self.config.tracking_uri)
        name = self.config.experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or "Default"
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return _Session(client, str(client.create_experiment(name)))
            except MlflowException:
                # Another server (a replica) may have created it meanwhile.
                experiment = client.get_experiment_by_name(name)
                if experiment is None:
                    raise
        if experiment.lifecycle_stage != "active":
            raise InvalidConfigError(f"MLflow experiment {name!r} is deleted; restore or rename it")
        return _Session(client, str(experiment.experiment_id))

    def _start(self, session: _Session, run: _Run) -> None:
        """Create the deployment's run and log its ONNX model as an MLflow onnx model."""
        run_id = run.ensure(session)
        record = run.record
        if record.onnx_bytes is None or not self.config.log_model:
            return
        import mlflow.onnx
        import onnx

        with tempfile.TemporaryDirectory(prefix="turnout-mlflow-") as tmp:
            path = os.path.join(tmp, "model")
            mlflow.onnx.save_model(
                onnx.load_model_from_string(record.onnx_bytes),
                path,
                signature=_signature(record.features),
                # Pinned here: inferring them would import and inspect the whole
                # environment, in the worker thread, for every deployment.
                pip_requirements=["onnxruntime"],
            )
            session.client.log_artifacts(run_id, path, "model")


def _terminate(session: _Session, run: _Run) -> None:
    run_id = run.ensure(session)
    session.client.set_terminated(run_id, "FINISHED")


def _signature(features: tuple[str, ...] | None) -> Any:
    """A column signature naming the features, so a redeploy from this run keeps them."""
    if features is None:
        return None
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(inputs=Schema([ColSpec("float", name) for name in features]))


def _compact(value: Mapping[str, Any]) -> str:
    import json

    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _positive(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) and value > 0
