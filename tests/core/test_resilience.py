"""Resilience scenarios on real models: breakers, poison requests, fallbacks, hangs, health.

Faults are injected by wrapping a deployed version's runtime in a
FaultInjectingRuntime. Breaker cool-downs run on a FakeClock that the tests
advance, so nothing sleeps for them; the batcher's deadline timers still run
on the loop's real time, so the deadline tests wait for their (short)
timeouts. Every scenario checks that every request got exactly one answer:
a result or one TurnoutError, with the version's counters agreeing.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any, ClassVar

import numpy as np
import pytest

from support import eventually
from turnout import (
    BatchingConfig,
    BreakerConfig,
    BreakerState,
    CircuitOpenError,
    DeadlineExceededError,
    Fallback,
    HealthFacts,
    HealthStatus,
    HealthVerdict,
    InferenceError,
    InferenceResult,
    InvalidConfigError,
    InvalidInputError,
    ModelServer,
    OverloadedError,
    RoutingConfig,
    TurnoutError,
    VersionNotFoundError,
    hookimpl,
)
from turnout.core.clock import FakeClock
from turnout.core.deployments.faults import FaultInjectingRuntime, inject_faults
from turnout.core.deployments.registry import Deployment
from turnout.core.resilience.health import HealthReport
from turnout.core.service import monitor
from turnout.core.service.requests import FIXED_VALUE

OPEN_MESSAGE = "Circuit breaker is open for model bc:v1"
# A breaker that trips on the third failed execution in a row.
TRIP_AT_3 = BreakerConfig(policy="consecutive_failures", params={"failures": 3})
# A breaker that would trip on any failed execution at all.
HAIR_TRIGGER = BreakerConfig(policy="consecutive_failures", params={"failures": 1})
# A breaker that never trips and shows the test every execution it is given.
LOGGED = BreakerConfig(policy="logged")
COOL_DOWN = BreakerConfig().cool_down


def positive(model: Any, frame: Any) -> np.ndarray[Any, Any]:
    """What ``predict`` should return for a binary classifier: P(class 1) per row."""
    return model.predict_proba(frame)[:, 1]


def assert_close(actual: np.ndarray[Any, Any], expected: np.ndarray[Any, Any]) -> None:
    # ONNX Runtime computes in float32; scikit-learn in float64.
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)


async def answer_all(calls: Iterable[Awaitable[Any]], *, cancelled: int = 0) -> list[Any]:
    """Await every call at once; each ends in one result or one TurnoutError.

    Only the ``cancelled`` requests the test cancelled itself may end otherwise.
    """
    calls = list(calls)
    answers = await asyncio.gather(*calls, return_exceptions=True)
    assert len(answers) == len(calls)
    strays = [
        a for a in answers if isinstance(a, BaseException) and not isinstance(a, TurnoutError)
    ]
    assert [type(a) for a in strays] == [asyncio.CancelledError] * cancelled, strays
    return answers


def metrics(server: ModelServer, version: str = "v1") -> Any:
    return server.get_all_models_status()["bc"][version]["metrics"]


class Events:
    """A plugin that records breaker, health and active-version events, in order."""

    def __init__(self) -> None:
        self.log: list[tuple[Any, ...]] = []

    @hookimpl
    def breaker_state_changed(
        self, model_id: str, version: str, old: BreakerState, new: BreakerState, reason: str
    ) -> None:
        self.log.append(("breaker", model_id, version, old, new, reason))

    @hookimpl
    def health_changed(
        self, model_id: str, version: str, old: HealthReport | None, new: HealthReport
    ) -> None:
        self.log.append(("health", model_id, version, old and old.status, new.status))

    @hookimpl
    def active_version_changed(self, model_id: str, old: str | None, new: str | None) -> None:
        self.log.append(("active", model_id, old, new))

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        return [event[1:] for event in self.log if event[0] == kind]


class ExecutionLog:
    """A plugin offering the breaker policy ``logged``: never trips, logs what it is shown."""

    def __init__(self) -> None:
        self.executions: list[tuple[bool, float]] = []

    @hookimpl
    def register_breaker_policies(self) -> list[Any]:
        executions = self.executions

        class Logged:
            name: ClassVar[str] = "logged"

            def __init__(self, params: Any, error_threshold: float) -> None:
                pass

            def record(self, failed: bool, duration: float, now: float) -> None:
                executions.append((failed, duration))

            def should_trip(self, now: float) -> str | None:
                return None

            def reset(self) -> None:
                pass

        return [Logged]

    @property
    def failures(self) -> int:
        return sum(failed for failed, _ in self.executions)


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def executions() -> ExecutionLog:
    return ExecutionLog()


@pytest.fixture
async def server(
    fake_clock: FakeClock, events: Events, executions: ExecutionLog
) -> AsyncIterator[ModelServer]:
    """A ModelServer on a FakeClock, with the two recording plugins."""
    async with ModelServer(
        clock=fake_clock, plugins=[events, executions], entry_points=False
    ) as server:
        yield server


@pytest.fixture(autouse=True)
def _no_loop_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """A future answered twice, or a callback that raised, is logged by asyncio: none may be."""
    yield
    broken = [
        r
        for r in caplog.records
        if r.name in ("asyncio", "turnout.core.execution.batching") and r.levelno >= logging.ERROR
    ]
    assert not broken, [r.getMessage() for r in broken]


async def open_breaker(
    server: ModelServer, fault: FaultInjectingRuntime, X: Any, version: str = "v1"
) -> int:
    """Fail a version's executions one request at a time until its breaker opens; return how
    many failed."""
    fault.fail_next(1000)
    failed = 0
    while server.circuit_breaker("bc", version).state is not BreakerState.OPEN:
        with pytest.raises(InferenceError, match="injected failure"):
            await server.predict("bc", X, version=version)
        failed += 1
        assert failed <= 50
    fault.heal()
    return failed


# -- an error burst opens the breaker ---------------------------------------------------------


async def test_an_error_burst_opens_the_breaker_and_later_requests_cost_no_model_time(
    server, binary_model, binary_data, events
):
    X = binary_data.X_test
    deployment = await server.deploy_model("bc", "v1", binary_model)  # default error_rate policy
    sent = 0
    with inject_faults(deployment) as fault:
        fault.fail_fraction(1.0)
        # Concurrent bursts: each is a lone batch then one merged batch (bisected
        # and failed whole), so two failed executions per burst; the default
        # policy trips once ten executions are in its window, all failed.
        for _burst in range(5):
            assert server.circuit_breaker("bc").state is BreakerState.CLOSED
            answers = await answer_all(
                server.predict("bc", X.iloc[i : i + 1]) for i in range(sent, sent + 25)
            )
            sent += 25
            assert all(isinstance(a, InferenceError) for a in answers)
        snapshot = server.circuit_breaker("bc")
        assert snapshot.state is BreakerState.OPEN
        assert snapshot.times_opened == 1
        assert snapshot.retry_after == COOL_DOWN  # the FakeClock has not moved
        ran = list(fault.batches)

        refused = await answer_all(server.predict("bc", X.iloc[:3]) for _ in range(200))
        with pytest.raises(CircuitOpenError) as info:
            await server.infer("bc", X.iloc[:1])

    assert all(isinstance(a, CircuitOpenError) for a in refused)
    assert {str(a) for a in refused} == {OPEN_MESSAGE}
    assert str(info.value) == OPEN_MESSAGE
    assert info.value.retry_after == COOL_DOWN
    assert fault.batches == ran  # the runtime saw nothing more
    m = metrics(server)
    # The refused requests never reached the version; every admitted one failed once.
    assert (m.request_count, m.error_count, m.shed_count) == (sent, sent, 0)
    ((model_id, version, old, new, reason),) = events.of("breaker")
    assert (model_id, version, old, new) == ("bc", "v1", BreakerState.CLOSED, BreakerState.OPEN)
    assert reason == "error rate 100% over the last 10 executions exceeds 50%"
    report = await server.health_check("bc")
    assert report.status is HealthStatus.UNHEALTHY
    assert report.circuit_breaker_open is True


async def test_after_the_cool_down_a_probe_succeeds_once_healed_and_the_breaker_closes(
    server, binary_model, binary_data, fake_clock, events
):
    X = binary_data.X_test.iloc[:4]
    deployment = await server.deploy_model("bc", "v1", binary_model, breaker=TRIP_AT_3)
    with inject_faults(deployment) as fault:
        assert await open_breaker(server, fault, X) == 3
        fake_clock.advance(COOL_DOWN - 0.5)
        with pytest.raises(CircuitOpenError) as info:
            await server.predict("bc", X)
        assert info.value.retry_after == pytest.approx(0.5)

        fake_clock.advance(0.5)
        assert server.circuit_breaker("bc").state is BreakerState.OPEN  # reading changes nothing
        assert_close(await server.predict("bc", X), positive(binary_model, X))
        probing = server.circuit_breaker("bc")
        assert (probing.state, probing.probe_successes, probing.probes_in_flight) == (
            BreakerState.HALF_OPEN,
            1,
            0,
        )
        assert_close(await server.predict("bc", X), positive(binary_model, X))

    closed = server.circuit_breaker("bc")
    assert (closed.state, closed.cool_down, closed.times_opened) == (
        BreakerState.CLOSED,
        COOL_DOWN,
        1,
    )
    transitions = [(old, new) for _, _, old, new, _ in events.of("breaker")]
    assert transitions == [
        (BreakerState.CLOSED, BreakerState.OPEN),
        (BreakerState.OPEN, BreakerState.HALF_OPEN),
        (BreakerState.HALF_OPEN, BreakerState.CLOSED),
    ]
    reasons = [reason for *_, reason in events.of("breaker")]
    assert reasons == [
        "3 executions failed in a row",
        "cool-down over: probing",
        "probes succeeded",
    ]
    m = metrics(server)
    assert (m.request_count, m.error_count) == (5, 3)


async def test_a_failed_probe_reopens_the_breaker_with_a_longer_cool_down(
    server, binary_model, binary_data, fake_clock
):
    X = binary_data.X_test.iloc[:2]
    deployment = await server.deploy_model("bc", "v1", binary_model, breaker=TRIP_AT_3)
    with inject_faults(deployment) as fault:
        await open_breaker(server, fault, X)
        fake_clock.advance(COOL_DOWN)
        fault.fail_next()
        with pytest.raises(InferenceError):
            await server.predict("bc", X)  # the probe fails

        reopened = server.circuit_breaker("bc")
        assert (reopened.state, reopened.cool_down, reopened.retry_after) == (
            BreakerState.OPEN,
            2 * COOL_DOWN,
            2 * COOL_DOWN,
        )
        assert reopened.times_opened == 2
        ran = len(fault.batches)
        fake_clock.advance(COOL_DOWN)
        with pytest.raises(CircuitOpenError) as info:
            await server.predict("bc", X)
        assert info.value.retry_after == pytest.approx(COOL_DOWN)
        assert len(fault.batches) == ran

        fake_clock.advance(COOL_DOWN)
        for _ in range(2):
            assert_close(await server.predict("bc", X), positive(binary_model, X))

    closed = server.circuit_breaker("bc")
    assert (closed.state, closed.cool_down) == (BreakerState.CLOSED, COOL_DOWN)


async def test_half_open_admits_only_its_probes_and_refuses_the_rest_at_once(
    server, binary_model, binary_data, fake_clock
):
    X = binary_data.X_test
    deployment = await server.deploy_model("bc", "v1", binary_model, breaker=TRIP_AT_3)
    with inject_faults(deployment) as fault:
        await open_breaker(server, fault, X.iloc[:1])
        fake_clock.advance(COOL_DOWN)
        fault.hang()
        tasks = [asyncio.create_task(server.predict("bc", X.iloc[i : i + 1])) for i in range(20)]
        await eventually(lambda: sum(t.done() for t in tasks) == 17, seconds=5.0)
        assert server.circuit_breaker("bc").probes_in_flight == 3
        fault.release()
        answers = await answer_all(tasks)

    expected = positive(binary_model, X)
    for i, answer in enumerate(answers):
        if i < 3:
            assert_close(answer, expected[i : i + 1])
        else:
            assert isinstance(answer, CircuitOpenError)
            assert answer.retry_after == 0.0
    snapshot = server.circuit_breaker("bc")
    # The lone first probe, then the other two together: two successful executions.
    assert (snapshot.state, snapshot.probes_in_flight) == (BreakerState.CLOSED, 0)


# -- what must not count against a version ---------------------------------------------------


def _bad_inputs(data: Any) -> list[Any]:
    good = data.X_test.iloc[:2]
    records = data.records(2)
    wrong_name = [{**records[0], "not a feature": 1.0}]
    missing = [{k: v for k, v in records[0].items() if k != "mean radius"}]
    nan = good.to_numpy().copy()
    nan[1, 3] = np.nan
    inf = good.to_numpy().copy()
    inf[0, 0] = np.inf
    strings = [["a"] * 30]
    text_value = [{**records[0], "mean radius": "large"}]
    return [
        wrong_name,
        missing,
        nan,
        inf,
        strings,
        text_value,
        "rows",
        [[1.0, 2.0]],
        [],
        [None],
        np.zeros((2, 29)),
        np.zeros(30),
    ]


async def test_an_invalid_input_flood_leaves_the_breaker_closed_and_no_errors_counted(
    server, binary_model, binary_data
):
    deployment = await server.deploy_model("bc", "v1", binary_model, breaker=HAIR_TRIGGER)
    kinds = _bad_inputs(binary_data)
    flood = [kinds[i % len(kinds)] for i in range(3000)]
    X = binary_data.X_test.iloc[:2]

    with inject_faults(deployment) as fault:
        answers = await answer_all(server.predict("bc", bad) for bad in flood)
        assert all(isinstance(a, InvalidInputError) for a in answers)
        assert fault.batches == []  # no bad request reached the model
        assert_close(await server.predict("bc", X), positive(binary_model, X))

    snapshot = server.circuit_breaker("bc")
    assert (snapshot.state, snapshot.times_opened) == (BreakerState.CLOSED, 0)
    m = metrics(server)
    assert (m.request_count, m.error_count, m.error_rate) == (1, 0, 0.0)
    assert (await server.health_check("bc")).status is HealthStatus.HEALTHY


async def test_invalid_input_while_half_open_takes_no_probe_permit(
    server, binary_model, binary_data, fake_clock
):
    X = binary_data.X_test.iloc[:2]
    deployment = await server.deploy_model("bc", "v1", binary_model, breaker=TRIP_AT_3)
    with inject_faults(deployment) as fault:
        await open_breaker(server, fault, X)
        fake_clock.advance(COOL_DOWN)
        fault.hang()
        probe = asyncio.create_task(server.predict("bc", X))
        await eventually(lambda: server.circuit_breaker("bc").probes_in_flight == 1, seconds=5.0)
        kinds = _bad_inputs(binary_data)
        answers = await answer_all(server.predict("bc", kinds[i % len(kinds)]) for i in range(500))
        assert all(isinstance(a, InvalidInputError) for a in answers)
        assert server.circuit_breaker("bc").probes_in_flight == 1
        fault.release()
        assert_close(await probe, positive(binary_model, X))


async def test_shed_and_cancelled_requests_do_not_count_against_the_version(
    server, binary_model, binary_data
):
    config = BatchingConfig(max_batch_rows=4, max_queue_rows=8, max_request_rows=2)
    deployment = await server.deploy_model(
        "bc", "v1", binary_model, batching=config, breaker=HAIR_TRIGGER
    )
    X = binary_data.X_test
    expected = positive(binary_model, X)
    with inject_faults(deployment) as fault:
        fault.hang()
        first = asyncio.create_task(server.predict("bc", X.iloc[:1]))
        await eventually(
            lambda: deployment.batcher.statistics().batches_in_flight == 1, seconds=5.0
        )
        # Eight rows fit in the queue; the other 36 requests are refused at once.
        burst = [
            asyncio.create_task(server.predict("bc", X.iloc[2 * i : 2 * i + 2])) for i in range(40)
        ]
        await eventually(lambda: sum(t.done() for t in burst) == 36, seconds=5.0)
        for task in burst[:2]:
            task.cancel()
        fault.release()
        answers = await answer_all([first, *burst], cancelled=2)

    assert_close(answers[0], expected[:1])
    assert all(isinstance(a, asyncio.CancelledError) for a in answers[1:3])
    for i in (2, 3):
        assert_close(answers[1 + i], expected[2 * i : 2 * i + 2])
    assert all(isinstance(a, OverloadedError) for a in answers[5:])
    snapshot = server.circuit_breaker("bc")
    assert (snapshot.state, snapshot.times_opened) == (BreakerState.CLOSED, 0)
    m = metrics(server)
    assert (m.request_count, m.error_count, m.shed_count, m.timeout_count) == (3, 0, 36, 0)
    # The cancelled requests were dropped before they ran.
    assert sum(fault.batches) == 1 + 4


async def test_a_cancelled_probe_gives_its_permit_back(
    server, binary_model, binary_data, fake_clock
):
    X = binary_data.X_test.iloc[:2]
    deployment = await server.deploy_model(
        "bc",
        "v1",
        binary_model,
        breaker=BreakerConfig(
            policy="consecutive_failures", params={"failures": 3}, half_open_permits=1
        ),
    )
    with inject_faults(deployment) as fault:
        await open_breaker(server, fault, X)
        fake_clock.advance(COOL_DOWN)
        fault.hang()
        running = asyncio.create_task(server.predict("bc", X))
        await eventually(
            lambda: deployment.batcher.statistics().batches_in_flight == 1, seconds=5.0
        )
        with pytest.raises(CircuitOpenError):
            await server.predict("bc", X)  # the one permit is out
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        assert server.circuit_breaker("bc").probes_in_flight == 0
        fault.release()
        await eventually(
            lambda: deployment.batcher.statistics().batches_in_flight == 0, seconds=5.0
        )
        # The cancelled probe's batch still ran and succeeded: one probe success.
        assert server.circuit_breaker("bc").probe_successes == 1
        assert_close(await server.predict("bc", X), positive(binary_model, X))

    assert server.circuit_breaker("bc").state is BreakerState.CLOSED


# -- one poison request -------------------------------------------------------------------


async def test_one_poison_request_does_not_fail_its_batch_mates(
    server, binary_model, binary_data, executions
):
    X = binary_data.X_test.iloc[:50]
    assert len(np.unique(X.to_numpy(), axis=0)) == 50
    poison = X.to_numpy(dtype=np.float32)[25]
    deployment = await server.deploy_model("bc", "v1", binary_model, breaker=LOGGED)
    expected = positive(binary_model, X)

    with inject_faults(deployment) as fault:
        fault.poison_rows(lambda batch: (batch == poison).all(axis=1))
        answers = await answer_all(server.predict("bc", X.iloc[i : i + 1]) for i in range(50))

    for i, answer in enumerate(answers):
        if i == 25:
            assert isinstance(answer, InferenceError)
            assert "poison row" in str(answer)
        else:
            assert_close(answer, expected[i : i + 1])
    assert max(fault.batches) > 1  # the requests were batched, then bisected
    # Every batch the caller saw is one execution; the poisoned batch is one failure.
    assert executions.failures == 1
    m = metrics(server)
    assert (m.request_count, m.error_count) == (50, 1)
    assert server.circuit_breaker("bc").state is BreakerState.CLOSED


async def test_a_poisoned_multi_row_request_fails_alone(
    server, binary_model, binary_data, executions
):
    X = binary_data.X_test.iloc[:90]
    poison = X.to_numpy(dtype=np.float32)[40]  # in request 13 (rows 39..41)
    deployment = await server.deploy_model("bc", "v1", binary_model, breaker=LOGGED)
    expected = positive(binary_model, X)

    with inject_faults(deployment) as fault:
        fault.poison_rows(lambda batch: (batch == poison).all(axis=1))
        answers = await answer_all(
            server.predict("bc", X.iloc[3 * i : 3 * i + 3].to_dict("records")) for i in range(30)
        )

    for i, answer in enumerate(answers):
        if i == 13:
            assert isinstance(answer, InferenceError)
        else:
            assert_close(answer, expected[3 * i : 3 * i + 3])
    assert executions.failures == 1
    assert (metrics(server).request_count, metrics(server).error_count) == (30, 1)


# -- fallbacks ------------------------------------------------------------------------------


@pytest.fixture
async def two_versions(server, binary_model, binary_model_v2) -> tuple[Deployment, Deployment]:
    v1 = await server.deploy_model("bc", "v1", binary_model, breaker=TRIP_AT_3)
    v2 = await server.deploy_model("bc", "v2", binary_model_v2)
    return v1, v2


async def test_a_fallback_version_serves_while_the_breaker_is_open(
    server, two_versions, binary_model, binary_model_v2, binary_data, fake_clock
):
    v1, _ = two_versions
    X = binary_data.X_test.iloc[:6]
    await server.set_fallback("bc", Fallback(version="v2"))
    with inject_faults(v1) as fault:
        await open_breaker(server, fault, X)
        ran = len(fault.batches)

        results = await answer_all(server.infer("bc", X.iloc[i : i + 2]) for i in range(0, 6, 2))
        assert len(fault.batches) == ran

    for i, result in zip(range(0, 6, 2), results, strict=True):
        assert isinstance(result, InferenceResult)
        assert (result.fallback, result.version, result.model_id) == (True, "v2", "bc")
        assert_close(result.outputs, positive(binary_model_v2, X.iloc[i : i + 2]))
        assert list(result.labels) == list(binary_model_v2.predict(X.iloc[i : i + 2]))
    assert metrics(server, "v2").request_count == 3
    assert_close(await server.predict("bc", X), positive(binary_model_v2, X))

    # Once v1 recovers, it serves again: no fallback.
    fake_clock.advance(COOL_DOWN)
    for _ in range(2):
        result = await server.infer("bc", X)
        assert (result.fallback, result.version) == (False, "v1")
        assert_close(result.outputs, positive(binary_model, X))
    assert server.circuit_breaker("bc").state is BreakerState.CLOSED


async def test_a_fallback_value_answers_every_row(server, two_versions, binary_data):
    v1, _ = two_versions
    X = binary_data.X_test.iloc[:5]
    await server.set_fallback("bc", Fallback(value=0.5))
    with inject_faults(v1) as fault:
        await open_breaker(server, fault, X)
        ran = len(fault.batches)
        predicted = await server.predict("bc", X)
        result = await server.infer("bc", X.iloc[:2])
        assert len(fault.batches) == ran

    np.testing.assert_array_equal(predicted, np.full(5, 0.5))
    assert (result.fallback, result.version) == (True, "v1")
    np.testing.assert_array_equal(result.outputs, [0.5, 0.5])
    assert result.labels is None
    assert result.probabilities is None

    await server.set_fallback("bc", Fallback(value=[0.3, 0.7]))
    np.testing.assert_array_equal(await server.predict("bc", X.iloc[:2]), [[0.3, 0.7]] * 2)


async def test_a_request_pinned_to_a_version_gets_no_fallback(server, two_versions, binary_data):
    v1, _ = two_versions
    X = binary_data.X_test.iloc[:2]
    await server.set_fallback("bc", Fallback(version="v2"))
    with inject_faults(v1) as fault:
        await open_breaker(server, fault, X)

    with pytest.raises(CircuitOpenError, match="Circuit breaker is open for model bc:v1"):
        await server.predict("bc", X, version="v1")
    assert (await server.infer("bc", X)).fallback  # routed requests still get it


async def test_outcomes_of_a_fallback_value_are_credited_to_no_version(
    server, two_versions, binary_data
):
    v1, _ = two_versions
    X = binary_data.X_test.iloc[:2]
    await server.set_fallback("bc", Fallback(value=0.5))
    with inject_faults(v1) as fault:
        await open_breaker(server, fault, X)
    result = await server.infer("bc", X)

    assert await server.record_outcome("bc", result.request_id, 1.0) == FIXED_VALUE
    assert server.compare_versions("bc", "v1", "v2").a.count == 0


async def test_without_a_fallback_an_open_breaker_refuses(server, two_versions, binary_data):
    v1, _ = two_versions
    X = binary_data.X_test.iloc[:2]
    await server.set_fallback("bc", Fallback(version="v2"))
    await server.set_fallback("bc", None)
    with inject_faults(v1) as fault:
        await open_breaker(server, fault, X)
        with pytest.raises(CircuitOpenError, match=OPEN_MESSAGE):
            await server.predict("bc", X)


async def test_a_fallback_whose_own_breaker_is_open_refuses_too(
    server, binary_model, binary_model_v2, binary_data
):
    X = binary_data.X_test.iloc[:2]
    v1 = await server.deploy_model("bc", "v1", binary_model, breaker=TRIP_AT_3)
    v2 = await server.deploy_model("bc", "v2", binary_model_v2, breaker=TRIP_AT_3)
    await server.set_fallback("bc", Fallback(version="v2"))
    with inject_faults(v1) as f1, inject_faults(v2) as f2:
        await open_breaker(server, f1, X)
        f2.fail_next(3)
        for _ in range(3):
            with pytest.raises(InferenceError):
                await server.predict("bc", X, version="v2")
        with pytest.raises(CircuitOpenError, match="Circuit breaker is open for model bc:v2"):
            await server.predict("bc", X)


async def test_the_fallback_version_cannot_be_retired(server, two_versions, binary_data):
    await server.set_fallback("bc", Fallback(version="v2"))
    with pytest.raises(InvalidConfigError, match="fallback"):
        await server.retire_model("bc", "v2")
    assert "v2" in server.get_all_models_status()["bc"]

    with pytest.raises(VersionNotFoundError):
        await server.set_fallback("bc", Fallback(version="v3"))
    with pytest.raises(InvalidConfigError):
        await server.set_fallback("bc", "v2")  # type: ignore[arg-type]
    await server.set_fallback("bc", None)
    await server.retire_model("bc", "v2")
    assert list(server.get_all_models_status()["bc"]) == ["v1"]


# -- a hung model ------------------------------------------------------------------------------


async def test_a_hung_model_answers_every_waiting_caller_at_its_deadline(
    server, binary_model, binary_data, fake_clock
):
    X = binary_data.X_test
    deployment = await server.deploy_model(
        "bc",
        "v1",
        binary_model,
        breaker=TRIP_AT_3,
        batching=BatchingConfig(max_concurrent_batches=3),
    )
    loop = asyncio.get_running_loop()
    timeout = 0.2

    async def call(i: int) -> tuple[float, Any]:
        started = loop.time()
        try:
            answer: Any = await server.predict("bc", X.iloc[i : i + 1], timeout=timeout)
        except TurnoutError as exc:
            answer = exc
        return loop.time() - started, answer

    with inject_faults(deployment) as fault:
        fault.hang()
        timed = await answer_all(call(i) for i in range(100))

        for elapsed, answer in timed:
            assert isinstance(answer, DeadlineExceededError)
            assert timeout * 0.9 <= elapsed < timeout + 1.0
        # Three executions hung (one per worker), each overran once: the breaker opened.
        assert deployment.batcher.statistics().batches_in_flight == 3
        snapshot = server.circuit_breaker("bc")
        assert snapshot.state is BreakerState.OPEN
        assert snapshot.reason == "3 executions failed in a row"
        with pytest.raises(CircuitOpenError):
            await server.predict("bc", X.iloc[:1], timeout=timeout)

        report = await server.health_check("bc")
        assert report.status is HealthStatus.UNHEALTHY
        assert report.circuit_breaker_open is True
        assert report.error_rate == 1.0
        m = metrics(server)
        assert (m.request_count, m.timeout_count, m.error_count) == (100, 100, 0)

        fault.release()
        await asyncio.wait_for(server.close(), 5.0)
        # close() returned once everyone was answered; the released batches
        # finish in their threads after it.
        await eventually(lambda: deployment.batcher.statistics().batches_in_flight == 0)

    # The hung batches ended after everyone was answered: nothing counted twice.
    assert fault.batches == [1, 1, 1]
    m = metrics(server)
    assert (m.request_count, m.timeout_count) == (100, 100)
    assert server.circuit_breaker("bc").times_opened == 1
    assert fault.closed


async def test_a_hung_model_opens_the_default_breaker_and_later_calls_are_refused_at_once(
    server, binary_model, binary_data, fake_clock
):
    X = binary_data.X_test.iloc[:1]
    deployment = await server.deploy_model("bc", "v1", binary_model)  # error_rate, 10 calls
    loop = asyncio.get_running_loop()
    with inject_faults(deployment) as fault:
        fault.hang()
        waited = []
        for _ in range(10):
            # One after another: each waits behind the one hung execution, never runs.
            with pytest.raises(DeadlineExceededError):
                await server.predict("bc", X, timeout=0.05)
        snapshot = server.circuit_breaker("bc")
        assert snapshot.state is BreakerState.OPEN, snapshot
        for _ in range(20):
            started = loop.time()
            with pytest.raises(CircuitOpenError):
                await server.predict("bc", X, timeout=0.05)
            waited.append(loop.time() - started)
        assert max(waited) < 0.05  # refused, not queued until the deadline
        fault.release()
        await eventually(lambda: deployment.batcher.statistics().batches_in_flight == 0)

    fake_clock.advance(COOL_DOWN)
    assert_close(await server.predict("bc", X), positive(binary_model, X))


async def test_timeouts_under_load_on_a_healthy_model_do_not_open_the_breaker(
    server, binary_model, binary_data
):
    X = binary_data.X_test.iloc[:64]  # a batch each
    deployment = await server.deploy_model("bc", "v1", binary_model)
    with inject_faults(deployment) as fault:
        fault.slow_down(0.02)  # every batch well inside every deadline, but 50 of them queued
        tasks = [asyncio.create_task(server.predict("bc", X, timeout=0.1)) for _ in range(50)]
        answers = await answer_all(tasks)
    assert any(isinstance(a, DeadlineExceededError | OverloadedError) for a in answers)
    assert server.circuit_breaker("bc").state is BreakerState.CLOSED


async def test_a_batch_stuck_in_the_runtime_makes_the_version_unhealthy(
    server, binary_model, binary_data, fake_clock
):
    X = binary_data.X_test.iloc[:1]
    deployment = await server.deploy_model("bc", "v1", binary_model)
    await server.predict("bc", X)
    with inject_faults(deployment) as fault:
        fault.hang()
        stuck = asyncio.create_task(server.predict("bc", X))  # no deadline: it just waits
        await eventually(
            lambda: deployment.batcher.statistics().batches_in_flight == 1, seconds=5.0
        )
        assert (await server.health_check("bc")).status is HealthStatus.HEALTHY
        fake_clock.advance(11.0)
        report = await server.health_check("bc")
        fault.release()
        assert_close(await stuck, positive(binary_model, X))

    assert report.status is HealthStatus.UNHEALTHY
    assert report.reasons == ("a batch has been running for 11 s",)
    assert (await server.health_check("bc")).status is HealthStatus.HEALTHY


async def test_an_overrun_is_shown_to_the_policy_with_the_time_the_execution_had_run(
    server, binary_model, binary_data, fake_clock, executions
):
    X = binary_data.X_test.iloc[:1]
    deployment = await server.deploy_model("bc", "v1", binary_model, breaker=LOGGED)
    with inject_faults(deployment) as fault:
        fault.hang()
        request = asyncio.create_task(server.predict("bc", X, timeout=0.05))
        await eventually(
            lambda: deployment.batcher.statistics().batches_in_flight == 1, seconds=5.0
        )
        fake_clock.advance(0.75)  # the execution has now run 0.75 s, by the server's clock
        with pytest.raises(DeadlineExceededError):
            await request
        assert executions.executions == [(True, pytest.approx(0.75))]
        fault.release()
        await eventually(
            lambda: deployment.batcher.statistics().batches_in_flight == 0, seconds=5.0
        )
    assert executions.executions == [(True, pytest.approx(0.75))]  # counted once


async def test_timeout_ms_gives_requests_without_a_timeout_a_deadline(
    server, binary_model, binary_data
):
    X = binary_data.X_test.iloc[:1]
    deployment = await server.deploy_model(
        "bc", "v1", binary_model, batching=BatchingConfig(timeout_ms=50)
    )
    loop = asyncio.get_running_loop()
    with inject_faults(deployment) as fault:
        fault.hang()
        started = loop.time()
        with pytest.raises(DeadlineExceededError):
            await server.predict("bc", X)
        assert 0.045 <= loop.time() - started < 1.0

        started = loop.time()
        with pytest.raises(DeadlineExceededError):
            await server.predict("bc", X, timeout=0.25)  # an explicit timeout wins
        assert 0.24 <= loop.time() - started < 1.25
        fault.release()

    assert metrics(server).timeout_count == 2


async def test_a_server_wide_timeout_ms_applies_to_every_deployment(binary_model, binary_data):
    X = binary_data.X_test.iloc[:1]
    async with ModelServer(batching=BatchingConfig(timeout_ms=40), entry_points=False) as server:
        deployment = await server.deploy_model("bc", "v1", binary_model)
        assert_close(await server.predict("bc", X), positive(binary_model, X))
        with inject_faults(deployment) as fault:
            fault.hang()
            with pytest.raises(DeadlineExceededError):
                await asyncio.wait_for(server.predict("bc", X), 2.0)
            fault.release()


# -- health reports -----------------------------------------------------------------------------


async def test_a_health_check_fn_with_an_ambiguous_answer_fails_only_itself(
    binary_model, binary_data
):
    async with ModelServer() as server:
        await server.deploy_model(
            "bc", "v1", binary_model, health_check_fn=lambda model, version: np.array([1, 0])
        )
        await server.deploy_model("bc", "v2", binary_model)
        await server.predict("bc", binary_data.X_test.iloc[:2])

        reports = {r.version: r for r in await server.evaluate_health()}
    assert reports["v1"].status is HealthStatus.UNHEALTHY
    assert "health_check_fn reported failure" in " ".join(reports["v1"].reasons)
    assert reports["v2"].status is HealthStatus.UNKNOWN  # assessed all the same


async def test_health_judges_the_recent_error_rate_not_the_whole_life(
    server, binary_model, binary_data
):
    X = binary_data.X_test.iloc[:1]
    v1 = await server.deploy_model(
        "bc",
        "v1",
        binary_model,
        breaker=BreakerConfig(policy="consecutive_failures", params={"failures": 1000}),
    )
    with inject_faults(v1) as fault:
        fault.fail_next(20)
        for _ in range(20):
            with pytest.raises(InferenceError):
                await server.predict("bc", X)
    assert (await server.health_check("bc")).status is HealthStatus.UNHEALTHY

    for _ in range(100):  # the failures fall out of the last 100 batches
        await server.predict("bc", X)
    report = await server.health_check("bc")
    assert report.status is HealthStatus.HEALTHY
    assert report.error_rate == 0.0
    assert metrics(server).error_rate == pytest.approx(20 / 120)  # the lifetime rate stays


def test_an_unknown_server_wide_breaker_policy_is_refused_at_construction():
    with pytest.raises(InvalidConfigError, match="unknown breaker policy 'nope'"):
        ModelServer(breaker=BreakerConfig(policy="nope"))


async def test_health_follows_the_breaker_open_half_open_closed_and_no_traffic(
    server, binary_model, binary_data, fake_clock
):
    X = binary_data.X_test.iloc[:1]
    deployment = await server.deploy_model("bc", "v1", binary_model, breaker=TRIP_AT_3)

    fresh = await server.health_check("bc")
    assert (fresh.status, fresh.reasons, fresh.request_count) == (
        HealthStatus.UNKNOWN,
        ("no requests served yet",),
        0,
    )
    assert fresh.last_request_time is None
    for _ in range(30):
        await server.predict("bc", X)
    with inject_faults(deployment) as fault:
        await open_breaker(server, fault, X)  # 3 of 33 failed: below half the threshold

    tripped = await server.health_check("bc")
    assert tripped.status is HealthStatus.UNHEALTHY
    assert tripped.circuit_breaker_open is True
    assert tripped.reasons == ("circuit breaker open: 3 executions failed in a row",)
    assert tripped.error_rate == pytest.approx(3 / 33)

    fake_clock.advance(COOL_DOWN)
    await server.predict("bc", X)  # one successful probe of two
    probing = await server.health_check("bc")
    assert (probing.status, probing.circuit_breaker_open, probing.reasons) == (
        HealthStatus.DEGRADED,
        False,
        ("circuit breaker probing recovery",),
    )

    await server.predict("bc", X)
    healthy = await server.health_check("bc")
    assert (healthy.status, healthy.reasons) == (HealthStatus.HEALTHY, ())
    assert healthy.request_count == 35


class NamedCheck:
    """A health check for the ``register_health_checks`` hook: a name and a call."""

    def __init__(self, name: str, call: Callable[[HealthFacts], HealthVerdict | None]) -> None:
        self.name = name
        self._call = call

    def __call__(self, facts: HealthFacts) -> HealthVerdict | None:
        return self._call(facts)


class HealthChecks:
    """A plugin offering health checks."""

    def __init__(self, *checks: NamedCheck) -> None:
        self.checks = checks

    @hookimpl
    def register_health_checks(self) -> list[NamedCheck]:
        return list(self.checks)


async def test_a_health_check_plugin_can_degrade_a_version(binary_model, binary_data):
    seen: list[HealthFacts] = []

    def latency_budget(facts: HealthFacts) -> HealthVerdict | None:
        seen.append(facts)
        if facts.request_count == 0:
            return None
        return HealthVerdict(HealthStatus.DEGRADED, f"{facts.version} is over its latency budget")

    plugin = HealthChecks(NamedCheck("latency_budget", latency_budget))
    async with ModelServer(plugins=[plugin], entry_points=False) as server:
        await server.deploy_model("bc", "v1", binary_model)
        assert (await server.health_check("bc")).status is HealthStatus.UNKNOWN
        await server.predict("bc", binary_data.X_test.iloc[:1])
        report = await server.health_check("bc")

    assert report.status is HealthStatus.DEGRADED
    assert report.reasons == ("v1 is over its latency budget",)
    assert [(f.model_id, f.version, f.request_count) for f in seen] == [
        ("bc", "v1", 0),
        ("bc", "v1", 1),
    ]
    assert seen[-1].model is binary_model
    assert seen[-1].breaker_state == "closed"


async def test_a_health_check_plugin_that_raises_or_hangs_counts_as_failed(
    binary_model, binary_data, monkeypatch, caplog
):
    monkeypatch.setattr(monitor, "HEALTH_CHECK_TIMEOUT", 0.1)
    stuck = threading.Event()

    def explodes(facts: HealthFacts) -> HealthVerdict | None:
        raise RuntimeError("the check itself broke")

    def hangs(facts: HealthFacts) -> HealthVerdict | None:
        stuck.wait(10)
        return None

    plugin = HealthChecks(NamedCheck("explodes", explodes), NamedCheck("hangs", hangs))
    try:
        async with ModelServer(plugins=[plugin], entry_points=False) as server:
            await server.deploy_model("bc", "v1", binary_model)
            await server.predict("bc", binary_data.X_test.iloc[:1])
            loop = asyncio.get_running_loop()
            started = loop.time()
            report = await server.health_check("bc")
            assert loop.time() - started < 2.0
            # The server keeps serving while the hung check's thread is stuck.
            await server.predict("bc", binary_data.X_test.iloc[:1])
    finally:
        stuck.set()

    assert report.status is HealthStatus.UNHEALTHY
    assert report.reasons == ("health check 'explodes' failed", "health check 'hangs' failed")
    assert "health check 'explodes' of bc:v1 raised" in caplog.text
    assert "health check 'hangs' of bc:v1 timed out after 0.1 s" in caplog.text


# -- the monitor and auto-rollback --------------------------------------------------------------


async def test_the_monitor_rolls_an_unhealthy_active_version_back_to_the_last_stable_one(
    server, binary_model, binary_model_v2, binary_data, events
):
    X = binary_data.X_test.iloc[:3]
    await server.deploy_model("bc", "v1", binary_model)
    for _ in range(5):
        await server.predict("bc", X)
    reports = await server.evaluate_health()
    assert [(r.version, r.status) for r in reports] == [("v1", HealthStatus.HEALTHY)]

    v2 = await server.deploy_model("bc", "v2", binary_model_v2, breaker=TRIP_AT_3)
    await server.set_active_version("bc", "v2")
    with inject_faults(v2) as fault:
        assert await open_breaker(server, fault, X, "v2") == 3
    assert server.active_models["bc"] == "v2"
    events.log.clear()

    server.start_health_monitor(interval=0.05, auto_rollback=True)
    took = await eventually(lambda: server.active_models["bc"] == "v1", seconds=5.0)
    server.stop_health_monitor()

    assert took < 1.0
    assert_close(await server.predict("bc", X), positive(binary_model, X))
    # v1 was HEALTHY at the last look and still is: only v2's first report is news.
    assert events.log[:2] == [
        ("health", "bc", "v2", None, HealthStatus.UNHEALTHY),
        ("active", "bc", "v2", "v1"),
    ]
    assert events.of("active") == [("bc", "v2", "v1")]
    assert server.get_routing("bc") == RoutingConfig("active")


async def test_a_rollback_with_nowhere_to_go_logs_an_error_and_keeps_serving(
    server, binary_model, binary_data, caplog
):
    X = binary_data.X_test.iloc[:2]
    never_trips = BreakerConfig(policy="consecutive_failures", params={"failures": 1000})
    deployment = await server.deploy_model(
        "bc", "v1", binary_model, error_threshold=0.1, breaker=never_trips
    )
    # Two failures in five requests: 40% is over the 10% threshold.
    with inject_faults(deployment) as fault:
        fault.fail_next(2)
        for _ in range(2):
            with pytest.raises(InferenceError):
                await server.predict("bc", X)
        for _ in range(3):
            assert_close(await server.predict("bc", X), positive(binary_model, X))

    caplog.clear()
    reports = await server.evaluate_health(auto_rollback=True)

    assert [(r.version, r.status) for r in reports] == [("v1", HealthStatus.UNHEALTHY)]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "turnout"]
    assert len(errors) == 1
    assert errors[0].getMessage().startswith("bc:v1 is UNHEALTHY (error rate 40.0% is above 10.0%)")
    assert "no stable version to roll back to; it keeps serving" in errors[0].getMessage()
    assert server.active_models["bc"] == "v1"
    assert_close(await server.predict("bc", X), positive(binary_model, X))


async def test_rollback_skips_a_stable_version_whose_breaker_is_open(
    server, binary_model, binary_model_v2, binary_data, caplog
):
    X = binary_data.X_test.iloc[:2]
    v1 = await server.deploy_model("bc", "v1", binary_model, breaker=TRIP_AT_3)
    await server.predict("bc", X)
    await server.evaluate_health()  # v1: healthy while active
    v2 = await server.deploy_model("bc", "v2", binary_model_v2, breaker=TRIP_AT_3)
    await server.set_active_version("bc", "v2")
    with inject_faults(v1) as f1, inject_faults(v2) as f2:
        await open_breaker(server, f1, X, "v1")
        await open_breaker(server, f2, X, "v2")

    caplog.clear()
    await server.evaluate_health(auto_rollback=True)

    assert server.active_models["bc"] == "v2"
    assert "bc:v2 is UNHEALTHY" in caplog.text
    assert "no stable version to roll back to" in caplog.text


async def test_rollback_never_goes_to_a_version_the_monitor_last_found_unhealthy(
    server, binary_model, binary_model_v2, binary_data, events
):
    # Both versions were healthy while active once, then failed too often (their
    # breakers stay closed). Rolling back from one to the other would swap two
    # unhealthy versions every interval.
    X = binary_data.X_test.iloc[:2]
    never_trips = BreakerConfig(policy="consecutive_failures", params={"failures": 1000})
    v1 = await server.deploy_model(
        "bc", "v1", binary_model, breaker=never_trips, error_threshold=0.2
    )
    v2 = await server.deploy_model(
        "bc", "v2", binary_model_v2, breaker=never_trips, error_threshold=0.2
    )
    for version in ("v1", "v2"):
        await server.set_active_version("bc", version)
        for _ in range(3):
            await server.predict("bc", X)
        await server.evaluate_health()
    with inject_faults(v2) as fault:
        fault.fail_next(3)
        for _ in range(3):
            with pytest.raises(InferenceError):
                await server.predict("bc", X)
    await server.evaluate_health(auto_rollback=True)
    assert server.active_models["bc"] == "v1"  # v2 is unhealthy: back to v1

    with inject_faults(v1) as fault:
        fault.fail_next(3)
        for _ in range(3):
            with pytest.raises(InferenceError):
                await server.predict("bc", X)
    events.log.clear()
    for _ in range(3):
        await server.evaluate_health(auto_rollback=True)

    assert server.active_models["bc"] == "v1"
    assert events.of("active") == []


async def test_the_health_monitor_cannot_be_started_twice(server):
    server.start_health_monitor(interval=0.05)
    with pytest.raises(InvalidConfigError, match="already running"):
        server.start_health_monitor(interval=0.05)  # in the same loop turn
    await asyncio.sleep(0.01)
    with pytest.raises(InvalidConfigError, match="already running"):
        server.start_health_monitor(interval=0.05)
    await asyncio.wait_for(server.close(), 2.0)


async def test_a_health_monitor_stopped_before_it_first_ran_does_not_run(
    server, binary_model, events
):
    await server.deploy_model("bc", "v1", binary_model)
    server.start_health_monitor(interval=0.01)
    server.stop_health_monitor()
    await asyncio.sleep(0.05)

    assert events.of("health") == []
    server.start_health_monitor(interval=0.01)  # it may be started again
    await eventually(lambda: events.of("health") != [], seconds=5.0)
    server.stop_health_monitor()
    server.start_health_monitor(interval=0.01)  # stopped and restarted in one turn
    await asyncio.sleep(0.03)
    await asyncio.wait_for(server.close(), 2.0)


async def test_closing_right_after_starting_the_monitor_does_not_hang(binary_model):
    server = ModelServer(entry_points=False)
    await server.deploy_model("bc", "v1", binary_model)
    server.start_health_monitor(interval=0.05, auto_rollback=True)
    await asyncio.wait_for(server.close(), 2.0)
    # Restarted after a stop, too.
    async with ModelServer(entry_points=False) as other:
        other.start_health_monitor(interval=0.05)
        await asyncio.sleep(0.01)
        other.stop_health_monitor()
        other.start_health_monitor(interval=0.05)
    assert other.closed


# -- manual reset, and canaries ---------------------------------------------------------------


async def test_reset_circuit_breaker_closes_it_and_forgets_the_failures(
    server, binary_model, binary_data, fake_clock, events
):
    X = binary_data.X_test.iloc[:2]
    deployment = await server.deploy_model("bc", "v1", binary_model, breaker=TRIP_AT_3)
    await server.reset_circuit_breaker("bc", "v1")  # already closed: nothing happens
    assert events.of("breaker") == []
    with inject_faults(deployment) as fault:
        await open_breaker(server, fault, X)
        fake_clock.advance(COOL_DOWN)
        fault.fail_next()
        with pytest.raises(InferenceError):
            await server.predict("bc", X)  # a failed probe: a longer cool-down
        assert server.circuit_breaker("bc").cool_down == 2 * COOL_DOWN

        await server.reset_circuit_breaker("bc", "v1")
        snapshot = server.circuit_breaker("bc")
        assert (snapshot.state, snapshot.cool_down, snapshot.retry_after) == (
            BreakerState.CLOSED,
            COOL_DOWN,
            0.0,
        )
        assert events.of("breaker")[-1] == (
            "bc",
            "v1",
            BreakerState.OPEN,
            BreakerState.CLOSED,
            "reset by hand",
        )
        assert not (await server.health_check("bc", "v1")).circuit_breaker_open
        assert_close(await server.predict("bc", X), positive(binary_model, X))

        # The failures before the reset are forgotten: three new ones trip it again.
        fault.fail_next(2)
        for _ in range(2):
            with pytest.raises(InferenceError):
                await server.predict("bc", X)
        assert server.circuit_breaker("bc").state is BreakerState.CLOSED
        fault.fail_next(1)
        with pytest.raises(InferenceError):
            await server.predict("bc", X)
        assert server.circuit_breaker("bc").state is BreakerState.OPEN

    with pytest.raises(VersionNotFoundError):
        await server.reset_circuit_breaker("bc", "v9")


async def test_a_canary_whose_candidate_breaker_opens_is_rolled_back(
    binary_model, binary_model_v2, binary_data
):
    X = binary_data.X_test
    expected = positive(binary_model, X)
    async with ModelServer(seed=0, entry_points=False) as server:
        await server.deploy_model("bc", "v1", binary_model)
        v2 = await server.deploy_model("bc", "v2", binary_model_v2, breaker=TRIP_AT_3)
        # Neither the step's error rate nor its size decides here: only the breaker.
        await server.start_canary(
            "bc", "v2", steps=[0.5, 1.0], min_requests=10_000, max_error_rate=1.0
        )
        answers: list[Any] = []
        with inject_faults(v2) as fault:
            fault.fail_fraction(1.0)
            while server.get_routing("bc").strategy == "canary":
                assert len(answers) < 500
                i = len(answers) % len(X)
                try:
                    answers.append((i, await server.infer("bc", X.iloc[i : i + 1])))
                except InferenceError as exc:
                    answers.append((i, exc))
            after = [await server.infer("bc", X.iloc[i : i + 1]) for i in range(20)]
        history = server.rollout_history("bc")

        assert server.active_models["bc"] == "v1"
        assert server.get_routing("bc") == RoutingConfig("active")
        assert server.circuit_breaker("bc", "v2").state is BreakerState.OPEN

    failed = [a for _, a in answers if isinstance(a, InferenceError)]
    assert len(failed) == 3  # the breaker opened on the third; nothing went to v2 after
    for i, answer in answers:
        if not isinstance(answer, InferenceError):
            assert answer.version == "v1"
            assert_close(answer.outputs, expected[i : i + 1])
    assert {result.version for result in after} == {"v1"}
    assert (history[-1].event, history[-1].reason) == (
        "rolled_back",
        "v2's circuit breaker opened",
    )
