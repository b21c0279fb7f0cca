"""The MLflow plugin against a real tracking store: runs, params, tags, metrics and artifacts.

Everything is read back through MlflowClient. The plugin writes from its own
thread, so reads poll until the record is there (``eventually``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import numpy as np
import pytest

from turnout import (
    BreakerConfig,
    InvalidConfigError,
    ModelServer,
    ModelServingManager,
    RoutingConfig,
)
from turnout.core.deployments.faults import inject_faults
from turnout.plugins.mlflow import MlflowConfig, MlflowTracker
from turnout.plugins.mlflow_records import tag_key
from turnout.plugins.mlflow_worker import Job, RetryPolicy, Worker

FAST = {"metrics_interval": 0.05, "retry_delay": 0.01, "max_retry_delay": 0.05}


def _tracker(tracking: Any, **options: Any) -> MlflowTracker:
    return MlflowTracker(MlflowConfig(experiment=tracking.experiment, **{**FAST, **options}))


def _events(run: Any) -> list[str]:
    """The run's event tags in order, without their timestamps."""
    tags = run.data.tags
    keys = sorted(key for key in tags if key.startswith("turnout.event."))
    return [tags[key].split(" ", 1)[1] for key in keys]


async def test_a_deployment_is_a_run_with_params_tags_and_the_onnx_model(
    tracking: Any, binary_model: Any, binary_data: Any
) -> None:
    tracker = _tracker(tracking)
    async with ModelServer(plugins=[tracker], entry_points=False) as server:
        await server.deploy_model(
            "cancer", "v1", binary_model, metadata={"trained_by": "ds1", "auc": 0.97}
        )
    stats = await tracker.aclose()
    assert (stats.pending, stats.failed, stats.dropped) == (0, 0, 0)

    run = tracking.runs()["cancer:v1"]
    params = run.data.params
    assert params["model_id"] == "cancer"
    assert params["version"] == "v1"
    assert params["estimator_class"] == "sklearn.pipeline.Pipeline"
    assert params["source"] == "sklearn:Pipeline(StandardScaler, LogisticRegression)"
    assert params["output_mode"] == "auto"
    assert params["n_features"] == "30"
    assert params["feature_names"].startswith('["mean radius", "mean texture"')
    assert params["skl2onnx_version"][0].isdigit()
    assert params["onnxruntime_version"][0].isdigit()
    tags = run.data.tags
    assert tags["trained_by"] == "ds1"
    assert tags["auc"] == "0.97"
    assert tags["turnout.model_id"] == "cancer"
    assert _events(run) == [
        "deployed: sklearn:Pipeline(StandardScaler, LogisticRegression)",
        "activated: active version",
        "stopped: the server closed",
    ]
    assert tags["turnout.status"] == "stopped"
    assert run.info.status == "FINISHED"
    artifacts = {a.path for a in tracking.client.list_artifacts(run.info.run_id, "model")}
    assert {"model/MLmodel", "model/model.onnx"} <= artifacts


async def test_the_logged_model_deploys_again_from_its_run(
    tracking: Any, binary_model: Any, binary_data: Any
) -> None:
    tracker = _tracker(tracking)
    async with ModelServer(plugins=[tracker], entry_points=False) as server:
        await server.deploy_model("cancer", "v1", binary_model)
        run_id = eventually_run_id(tracking, "cancer:v1")
        tracker_done = await asyncio.to_thread(_wait_for_artifact, tracking, run_id)
        assert tracker_done
        # What the deployment's run holds is what it served, feature names included.
        again = await server.deploy_model("cancer", "v2", f"runs:/{run_id}/model")
        assert again.schema.feature_names == tuple(binary_data.features)
        rows = binary_data.records()
        first = await server.predict("cancer", rows, version="v1")
        second = await server.predict("cancer", rows, version="v2")
        np.testing.assert_array_equal(first, second)
    await tracker.aclose()


def eventually_run_id(tracking: Any, name: str, timeout: float = 20.0) -> str:
    """The id of the run called ``name``, once the worker has created it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = tracking.runs().get(name)
        if run is not None:
            return str(run.info.run_id)
        time.sleep(0.05)
    raise AssertionError(f"no run {name!r} within {timeout} s")


def _wait_for_artifact(tracking: Any, run_id: str, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        paths = {a.path for a in tracking.client.list_artifacts(run_id, "model")}
        if "model/model.onnx" in paths:
            return True
        time.sleep(0.05)
    return False


async def test_lifecycle_events_become_tags_events_and_metrics(
    tracking: Any, binary_model: Any, binary_model_v2: Any, binary_data: Any
) -> None:
    tracker = _tracker(tracking)
    trip = BreakerConfig(policy="consecutive_failures", params={"failures": 1})
    async with ModelServer(plugins=[tracker], entry_points=False) as server:
        await server.deploy_model("cancer", "v1", binary_model)
        v2 = await server.deploy_model("cancer", "v2", binary_model_v2, breaker=trip)
        await server.set_routing(
            "cancer", RoutingConfig("weighted", {"versions": ["v1", "v2"], "weights": [0.5, 0.5]})
        )
        await server.start_canary("cancer", "v2", min_requests=1)
        with inject_faults(v2) as faults:
            faults.fail_next(1)
            with pytest.raises(Exception, match="injected"):
                await server.predict("cancer", binary_data.records(1), version="v2")
        await server.reset_circuit_breaker("cancer", "v2")
        await server.evaluate_health()
        await server.set_active_version("cancer", "v2")
        await server.retire_model("cancer", "v1")
        await tracker.aclose()

    runs = tracking.runs()
    v1, v2_run = runs["cancer:v1"], runs["cancer:v2"]
    v1_events = _events(v1)
    assert v1_events[0].startswith("deployed:")
    assert v1_events[1] == "activated: active version"
    assert any(e.startswith('routing: active -> weighted: {"params"') for e in v1_events)
    assert "deactivated: no longer active (now v2)" in v1_events
    assert v1_events[-1] == "retired: retired"
    assert v1.data.tags["turnout.status"] == "retired"
    assert v1.info.status == "FINISHED"

    # The open breaker made the canary roll back by itself, before the reset.
    assert [e for e in _events(v2_run) if not e.startswith(("deployed", "routing"))] == [
        "rollout_started: step 0, weight 0.05",
        "breaker_open: 1 executions failed in a row",
        "rollout_rolled_back: step 0, weight 0",
        "breaker_closed: reset by hand",
        "health_unhealthy: error rate 100.0% is above 50.0%",
        "activated: active version (was v1)",
        "stopped: the server closed",
    ]
    assert v2_run.data.tags["turnout.breaker"] == "closed"
    assert v2_run.data.tags["turnout.health"] == "unhealthy"
    assert v2_run.data.tags["turnout.rollout"] == "rolled_back"
    assert v2_run.data.tags["turnout.routing"] == '{"params":{},"strategy":"active"}'
    history = tracking.client.get_metric_history(v2_run.info.run_id, "breaker_open")
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == [1.0, 0.0]
    weights = tracking.client.get_metric_history(v2_run.info.run_id, "rollout_weight")
    assert [m.value for m in sorted(weights, key=lambda m: m.step)] == [0.05, 0.0]
    active = tracking.client.get_metric_history(v2_run.info.run_id, "active")
    assert [m.value for m in active] == [1.0]


async def test_serving_metrics_are_logged_periodically_with_steps(
    tracking: Any, binary_model: Any, binary_data: Any, eventually: Any
) -> None:
    tracker = _tracker(tracking)
    rows = binary_data.records(4)
    async with ModelServer(plugins=[tracker], entry_points=False) as server:
        await server.deploy_model("cancer", "v1", binary_model)
        run_id = await asyncio.to_thread(eventually_run_id, tracking, "cancer:v1")

        def counts() -> list[tuple[int, float]]:
            history = tracking.client.get_metric_history(run_id, "request_count")
            return sorted((m.step, m.value) for m in history)

        for burst in (1, 2):
            for _ in range(5):
                await server.predict("cancer", rows)
            await asyncio.to_thread(eventually, lambda n=5.0 * burst: n in dict(counts()).values())
    await tracker.aclose()

    logged = counts()
    steps = [step for step, _ in logged]
    assert steps == sorted(set(steps)), "one sample per step, in order"
    values = [value for _, value in logged]
    assert values == sorted(values)
    assert values[-1] == 10.0
    metrics = tracking.client.get_run(run_id).data.metrics
    assert metrics["error_rate"] == 0.0
    assert metrics["mean_batch_size"] == 4.0
    assert 0.0 < metrics["p50_latency_ms"] <= metrics["p99_latency_ms"]


def test_guide_manager_logs_runs_and_ab_comparisons(
    tracking: Any, binary_model: Any, binary_model_v2: Any, binary_data: Any
) -> None:
    manager = ModelServingManager(
        enable_mlflow=True,
        mlflow_experiment=tracking.experiment,
        error_threshold=0.1,
        mlflow_config=MlflowConfig(**FAST),
        seed=0,
    )
    with manager:
        assert manager.mlflow is not None
        assert manager.mlflow.config.experiment == tracking.experiment
        assert manager.deploy_model("nba_model", "v1.0", binary_model, set_active=True)
        assert manager.deploy_model("nba_model", "v2.0", binary_model_v2, set_active=False)
        manager.setup_ab_test("nba_model", ["v1.0", "v2.0"], [0.5, 0.5])
        rows = binary_data.records(1)
        for i in range(40):
            result = manager.infer("nba_model", rows)
            manager.record_outcome("nba_model", result.request_id, float(i % 2))
        comparison = manager.compare_versions("nba_model", "v1.0", "v2.0")
    stats = manager.mlflow.statistics()
    assert (stats.pending, stats.failed, stats.dropped) == (0, 0, 0)

    runs = tracking.runs()
    for name in ("nba_model:v1.0", "nba_model:v2.0"):
        run = runs[name]
        metrics = run.data.metrics
        prefix = "ab.v1.0_vs_v2.0"
        assert metrics[f"{prefix}.difference"] == pytest.approx(comparison.difference)
        assert metrics[f"{prefix}.p_value"] == pytest.approx(comparison.p_value)
        assert metrics[f"{prefix}.v1.0.count"] == comparison.a.count
        assert run.data.tags[f"{prefix}.verdict"] == comparison.verdict
        # Logged once, by the versions_compared hook, not again by the manager.
        history = tracking.client.get_metric_history(run.info.run_id, f"{prefix}.difference")
        assert [point.step for point in history] == [0]
        # The last sample, taken as the manager closed, counts every request.
        assert metrics["request_count"] > 0
        assert run.info.status == "FINISHED"
    total = sum(runs[name].data.metrics["request_count"] for name in runs)
    assert total == 40


async def test_the_experiment_is_created_if_missing(
    tracking: Any, binary_model: Any, monkeypatch: pytest.MonkeyPatch, eventually: Any
) -> None:
    name = f"{tracking.experiment}_new"
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", name)
    tracker = MlflowTracker(MlflowConfig(log_model=False, **FAST))  # experiment from MLflow's env
    async with ModelServer(plugins=[tracker], entry_points=False) as server:
        await server.deploy_model("cancer", "v1", binary_model)
    await tracker.aclose()
    experiment = tracking.client.get_experiment_by_name(name)
    assert experiment is not None
    runs = tracking.client.search_runs([experiment.experiment_id])
    assert [run.info.run_name for run in runs] == ["cancer:v1"]


async def test_an_unreachable_tracking_server_never_touches_serving(
    closed_port: int,
    binary_model: Any,
    binary_data: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # MLflow's own HTTP retries would take minutes against a closed port.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    tracker = MlflowTracker(
        MlflowConfig(
            experiment="unreachable",
            tracking_uri=f"http://127.0.0.1:{closed_port}",
            queue_size=1,  # a job runs while the next ones arrive: they are dropped
            max_attempts=2,
            shutdown_timeout=2.0,
            **FAST,
        )
    )
    caplog.set_level(logging.WARNING, logger="turnout.plugins.mlflow")
    started = time.monotonic()
    async with ModelServer(plugins=[tracker], entry_points=False) as server:
        for version in ("v1", "v2", "v3"):
            await server.deploy_model("cancer", version, binary_model)
        for version in ("v2", "v3", "v1"):
            await server.set_active_version("cancer", version)
        got = await server.predict("cancer", binary_data.records())
        np.testing.assert_allclose(
            got, binary_model.predict_proba(binary_data.X_test)[:, 1], atol=1e-5
        )
    assert time.monotonic() - started < 10.0
    stats = await tracker.aclose()
    assert stats.logged == 0
    assert stats.dropped > 0  # past the queue's bound: counted, never waited for
    assert stats.failed + stats.pending > 0
    messages = [r.getMessage() for r in caplog.records]
    assert any("failed" in m and "retry 1" in m for m in messages)
    assert any("dropped" in m for m in messages)
    if stats.pending:
        assert any("were not logged before shutdown" in m for m in messages)


def test_unflushed_records_are_reported_at_shutdown(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="turnout.plugins.mlflow")
    release = threading.Event()

    def connect() -> object:
        release.wait(5.0)  # a tracking server that does not answer
        raise ConnectionError("no answer")

    worker: Worker[object] = Worker(connect, capacity=10, retry=RetryPolicy(3, 0.01, 0.01))
    for kind in ("deployment", "metrics", "metrics"):
        assert worker.submit(Job(kind, lambda session: None))
    stats = worker.close(0.2)
    release.set()
    assert stats.pending == 3
    assert stats.unflushed == (("deployment", 1), ("metrics", 2))
    assert "3 record(s) were not logged before shutdown (1 deployment, 2 metrics)" in caplog.text
    assert not worker.submit(Job("metrics", lambda session: None))


def test_a_failed_record_is_retried_with_backoff_in_order() -> None:
    done: list[str] = []
    failures = {"first": 2}

    def job(name: str) -> Job[object]:
        def run(session: object) -> None:
            if failures.get(name, 0):
                failures[name] -= 1
                raise OSError("tracking server busy")
            done.append(name)

        return Job("event", run)

    worker: Worker[object] = Worker(object, capacity=10, retry=RetryPolicy(3, 0.01, 0.02))
    worker.submit(job("first"))
    worker.submit(job("second"))
    stats = worker.close(5.0)
    assert done == ["first", "second"]
    assert (stats.logged, stats.retries, stats.failed, stats.pending) == (2, 2, 0, 0)


def test_retry_delays_double_up_to_the_limit() -> None:
    policy = RetryPolicy(max_attempts=6, initial_delay=0.5, max_delay=3.0)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"metrics_interval": 0}, "metrics_interval"),
        ({"shutdown_timeout": -1.0}, "shutdown_timeout"),
        ({"queue_size": 0}, "queue_size"),
        ({"queue_size": True}, "queue_size"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"retry_delay": 2.0, "max_retry_delay": 1.0}, "max_delay"),
        ({"experiment": ""}, "experiment"),
        ({"tracking_uri": 5}, "tracking_uri"),
    ],
)
def test_config_is_validated(options: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidConfigError, match=message):
        MlflowConfig(**options)


def test_manager_refuses_an_mlflow_config_without_enable_mlflow() -> None:
    with pytest.raises(InvalidConfigError, match="enable_mlflow"):
        ModelServingManager(mlflow_config=MlflowConfig())


def test_metadata_keys_become_valid_tag_keys_outside_mlflows_namespace() -> None:
    assert tag_key("trained_by") == "trained_by"
    assert tag_key("data set/v2") == "data set/v2"
    assert tag_key("owner:email") == "owner_email"
    assert tag_key("mlflow.user") == "metadata.mlflow.user"
    assert tag_key("") == "_"
