"""Canary rollouts through a real ModelServer: stepping, promotion, rollback, and their ends.

The rollout controller judges a step after every batch, so the tests drive
traffic one request at a time (or in gathered bursts) until the model's
routing is no longer ``canary``: no sleeps, no timing beyond what a slow
candidate is made to take.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter, defaultdict
from typing import Any

import numpy as np
import pytest

from turnout import (
    DeadlineExceededError,
    InferenceError,
    InvalidRoutingError,
    ModelServer,
    RoutingConfig,
    hookimpl,
)
from turnout.core.deployments.faults import inject_faults
from turnout.core.deployments.registry import Deployment

ACTIVE = RoutingConfig("active")
STEPS = [0.05, 0.25, 0.5, 1.0]
# Two versions of one small pipeline run alike; the promotion tests are about
# stepping, not latency, so a hiccup of the shared machine must not roll them
# back. The slow-candidate test keeps the default ratio of 1.5.
LENIENT_LATENCY = 50.0


class RolloutEvents:
    """A plugin that records every rollout_step event."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, int, float, str]] = []

    @hookimpl
    def rollout_step(
        self, model_id: str, candidate: str, step: int, weight: float, event: str
    ) -> None:
        self.events.append((model_id, candidate, step, weight, event))


class Traffic:
    """Sends single-row requests and checks each answer against the version that gave it."""

    def __init__(self, server: ModelServer, data: Any, models: dict[str, Any]) -> None:
        self.server = server
        self.records = data.records()
        # What each version must answer for each test row: P(class 1) from scikit-learn.
        self.expected = {v: m.predict_proba(data.X_test)[:, 1] for v, m in models.items()}
        self.sent = 0
        self.served: Counter[str] = Counter()
        self.failures: list[InferenceError] = []
        # step -> version -> requests routed while the rollout was at that step
        self.by_step: defaultdict[int, Counter[str]] = defaultdict(Counter)

    async def one(self) -> str | None:
        """Send one request; return the version that answered, None if it failed."""
        row = self.sent % len(self.records)
        self.sent += 1
        routing = self.server.get_routing("bc")
        step = routing.params["step"] if routing.strategy == "canary" else None
        try:
            result = await self.server.infer("bc", [self.records[row]])
        except InferenceError as exc:
            self.failures.append(exc)
            return None
        np.testing.assert_allclose(
            result.outputs, self.expected[result.version][row : row + 1], rtol=1e-4, atol=1e-5
        )
        self.served[result.version] += 1
        if step is not None:
            self.by_step[step][result.version] += 1
        return result.version

    async def until_rollout_ends(self, limit: int = 3000) -> None:
        """Send requests one at a time until the canary promotes or rolls back."""
        while self.server.get_routing("bc").strategy == "canary":
            assert self.sent < limit, (
                f"the rollout never ended: {self.server.rollout_history('bc')}"
            )
            await self.one()


@pytest.fixture
def events() -> RolloutEvents:
    return RolloutEvents()


@pytest.fixture
async def server(events: RolloutEvents) -> Any:
    """A seeded server with the event-recording plugin (shadows conftest's ``server``)."""
    async with ModelServer(plugins=[events], seed=11) as server:
        yield server


@pytest.fixture
async def versions(server, binary_model, binary_model_v2) -> dict[str, Deployment]:
    """bc:v1 (active, the baseline) and bc:v2 (the candidate)."""
    return {
        "v1": await server.deploy_model("bc", "v1", binary_model),
        "v2": await server.deploy_model("bc", "v2", binary_model_v2),
    }


@pytest.fixture
def traffic(server, versions, binary_data, binary_model, binary_model_v2) -> Traffic:
    return Traffic(server, binary_data, {"v1": binary_model, "v2": binary_model_v2})


def history(server: ModelServer) -> list[tuple[str, int, float, str]]:
    return [(e.candidate, e.step, e.weight, e.event) for e in server.rollout_history("bc")]


# -- promotion ---------------------------------------------------------------------------


async def test_a_healthy_candidate_steps_through_every_share_and_is_promoted(
    server, versions, traffic, events
):
    await server.start_canary("bc", "v2", min_requests=10, max_latency_ratio=LENIENT_LATENCY)
    assert server.get_routing("bc").params["step"] == 0

    await traffic.until_rollout_ends()

    assert server.active_models["bc"] == "v2"
    assert server.get_routing("bc") == ACTIVE
    assert history(server) == [
        ("v2", 0, 0.05, "started"),
        ("v2", 1, 0.25, "step"),
        ("v2", 2, 0.5, "step"),
        ("v2", 3, 1.0, "step"),
        ("v2", 3, 1.0, "promoted"),
    ]
    reasons = [e.reason for e in server.rollout_history("bc")]
    assert reasons[0] == ""
    # Each step records why the one before it passed; "promoted" why the last did.
    for step, reason in enumerate(reasons[1:]):
        share = f"{STEPS[step]:.0%}"
        assert re.match(rf"step {step} \({share}\) passed: 10 requests, 0 failed, p99 ", reason)
    assert events.events == [
        ("bc", "v2", 0, 0.05, "started"),
        ("bc", "v2", 1, 0.25, "step"),
        ("bc", "v2", 2, 0.5, "step"),
        ("bc", "v2", 3, 1.0, "step"),
        ("bc", "v2", 3, 1.0, "promoted"),
    ]
    # Each step ended the moment its candidate had served min_requests, and the
    # baseline took the rest of the traffic in proportion (loosely: few draws).
    assert [traffic.by_step[step]["v2"] for step in range(4)] == [10, 10, 10, 10]
    assert traffic.by_step[3]["v1"] == 0
    assert traffic.by_step[0]["v1"] > traffic.by_step[2]["v1"]
    assert traffic.by_step[0]["v2"] / traffic.by_step[0].total() < 0.2
    assert not traffic.failures

    # Promoted means plain active routing: everything to v2 from now on.
    for _ in range(20):
        assert await traffic.one() == "v2"
    assert len(server.rollout_history("bc")) == 5


async def test_a_plan_that_stops_short_of_100_percent_still_promotes_to_all_traffic(
    server, versions, traffic, events
):
    await server.start_canary(
        "bc", "v2", steps=[0.2, 0.6], min_requests=5, max_latency_ratio=LENIENT_LATENCY
    )
    await traffic.until_rollout_ends()

    assert history(server) == [
        ("v2", 0, 0.2, "started"),
        ("v2", 1, 0.6, "step"),
        ("v2", 1, 0.6, "promoted"),  # the step it was promoted at
    ]
    # The event tells the share the candidate gets from now on: all of it.
    assert events.events[-1] == ("bc", "v2", 1, 1.0, "promoted")
    for _ in range(20):
        assert await traffic.one() == "v2"


async def test_a_canary_under_concurrent_bursts_is_promoted_and_every_answer_is_right(
    server, versions, traffic
):
    await server.start_canary("bc", "v2", min_requests=25, max_latency_ratio=LENIENT_LATENCY)

    bursts = 0
    while server.get_routing("bc").strategy == "canary":
        bursts += 1
        assert bursts < 100, history(server)
        await asyncio.gather(*(traffic.one() for _ in range(50)))

    assert server.active_models["bc"] == "v2"
    assert [event for *_, event in history(server)] == [
        "started",
        "step",
        "step",
        "step",
        "promoted",
    ]
    assert not traffic.failures
    assert traffic.served.total() == traffic.sent


async def test_min_seconds_holds_each_step_until_the_clock_has_moved(
    binary_model, binary_model_v2, binary_data, fake_clock
):
    async with ModelServer(clock=fake_clock, seed=3) as server:
        await server.deploy_model("bc", "v1", binary_model)
        await server.deploy_model("bc", "v2", binary_model_v2)
        traffic = Traffic(server, binary_data, {"v1": binary_model, "v2": binary_model_v2})
        await server.start_canary("bc", "v2", steps=[0.5, 1.0], min_requests=3, min_seconds=60)

        for _ in range(40):
            await traffic.one()
        assert traffic.by_step[0]["v2"] >= 3
        assert server.get_routing("bc").params["step"] == 0  # enough requests, not enough time

        fake_clock.advance(59)
        await traffic.one()
        assert server.get_routing("bc").params["step"] == 0
        fake_clock.advance(1)
        await traffic.one()  # judged after this batch
        assert server.get_routing("bc").params["step"] == 1

        for _ in range(10):
            await traffic.one()
        assert server.get_routing("bc").strategy == "canary"
        fake_clock.advance(60)
        await traffic.one()
        assert server.get_routing("bc") == ACTIVE
        assert server.active_models["bc"] == "v2"
        assert [event for *_, event in history(server)] == ["started", "step", "promoted"]


# -- rollback ----------------------------------------------------------------------------


async def test_a_failing_candidate_is_rolled_back_at_once_and_the_baseline_serves_everything(
    server, versions, traffic, events
):
    with inject_faults(versions["v2"]) as fault:
        fault.fail_fraction(0.5)
        # 5% of 40 allowed: the third failure rolls back, long before 40 requests.
        await server.start_canary("bc", "v2", min_requests=40)
        await traffic.until_rollout_ends()

        assert server.active_models["bc"] == "v1"
        assert server.get_routing("bc") == ACTIVE
        assert history(server) == [("v2", 0, 0.05, "started"), ("v2", 0, 0.05, "rolled_back")]
        reason = server.rollout_history("bc")[-1].reason
        assert re.fullmatch(
            r"3 of (\d+) requests to v2 failed at step 0 \(5%\); the limit is 5\.0%", reason
        ), reason
        assert events.events[-1] == ("bc", "v2", 0, 0.0, "rolled_back")

        status = server.get_all_models_status()["bc"]
        candidate, baseline = status["v2"]["metrics"], status["v1"]["metrics"]
        assert candidate.request_count < 40
        assert candidate.error_count == len(traffic.failures) == 3
        assert baseline.error_count == 0
        # Every request the baseline got was answered, correctly (Traffic checks each).
        assert baseline.request_count == traffic.served["v1"] > 0
        assert traffic.served["v1"] + traffic.served["v2"] + 3 == traffic.sent

        # Rolled back means plain active routing: the candidate gets nothing more.
        before = traffic.sent
        for _ in range(50):
            assert await traffic.one() == "v1"
        assert traffic.served["v1"] == baseline.request_count + (traffic.sent - before)
        assert server.get_all_models_status()["bc"]["v2"]["metrics"].request_count == (
            candidate.request_count
        )


async def test_a_slow_candidate_is_rolled_back_on_its_latency(server, versions, traffic, events):
    for _ in range(30):  # the baseline's latency history to judge against
        await traffic.one()
    with inject_faults(versions["v2"]) as fault:
        fault.slow_down(0.03)
        await server.start_canary("bc", "v2", min_requests=5)
        await traffic.until_rollout_ends()

    assert server.active_models["bc"] == "v1"
    assert server.get_routing("bc") == ACTIVE
    assert [event for *_, event in history(server)] == ["started", "rolled_back"]
    reason = server.rollout_history("bc")[-1].reason
    match = re.fullmatch(
        r"v2's p99 latency ([\d.]+) ms is over 1\.5x the baseline's ([\d.]+) ms", reason
    )
    assert match, reason
    assert float(match[1]) >= 30.0 > float(match[2])
    assert traffic.by_step[0]["v2"] == 5  # judged the moment it had served min_requests
    assert not traffic.failures
    assert events.events[-1] == ("bc", "v2", 0, 0.0, "rolled_back")


async def test_a_hung_candidate_is_rolled_back_on_its_callers_deadlines(
    server, versions, binary_data
):
    records = binary_data.records()
    with inject_faults(versions["v2"]) as fault:
        fault.hang()
        await server.start_canary("bc", "v2", min_requests=20)
        sent, expired = 0, 0
        while server.get_routing("bc").strategy == "canary":
            assert sent < 2000
            try:
                result = await server.infer("bc", [records[sent % len(records)]], timeout=0.1)
                assert result.version == "v1"
            except DeadlineExceededError:
                expired += 1
            sent += 1

    assert server.active_models["bc"] == "v1"
    reason = server.rollout_history("bc")[-1].reason
    assert (
        reason == f"{expired} of {expired} requests to v2 failed at step 0 (5%); the limit is 5.0%"
    )
    assert server.get_deployment("bc", "v2").metrics.timeouts == expired >= 2


async def test_abort_canary_rolls_back_to_the_baseline(server, versions, traffic, events):
    await server.start_canary("bc", "v2", min_requests=1000)
    for _ in range(40):
        await traffic.one()
    assert traffic.served["v2"] > 0

    await server.abort_canary("bc")

    assert server.active_models["bc"] == "v1"
    assert server.get_routing("bc") == ACTIVE
    last = server.rollout_history("bc")[-1]
    assert (last.event, last.reason) == ("rolled_back", "aborted by request")
    assert events.events[-1] == ("bc", "v2", 0, 0.0, "rolled_back")
    for _ in range(20):
        assert await traffic.one() == "v1"
    with pytest.raises(InvalidRoutingError, match="no canary rollout in progress"):
        await server.abort_canary("bc")


async def test_abort_canary_without_a_canary_is_refused(server, versions):
    with pytest.raises(InvalidRoutingError, match="no canary rollout in progress"):
        await server.abort_canary("bc")
    assert server.rollout_history("bc") == ()


# -- ending a rollout by other means ----------------------------------------------------------


async def _set_active_v2(server: ModelServer) -> None:
    await server.set_active_version("bc", "v2")


async def _weighted(server: ModelServer) -> None:
    await server.setup_ab_test("bc", ["v1", "v2"], [0.5, 0.5])


async def _blue_green(server: ModelServer) -> None:
    await server.blue_green_switch("bc", "v2", smoke_test=lambda *_: True)


@pytest.mark.parametrize(
    ("end", "reason", "active", "strategy"),
    [
        (_set_active_v2, "ended by set_active_version", "v2", "active"),
        (_weighted, "replaced by new routing", "v1", "weighted"),
        (_blue_green, "replaced by a blue-green switch", "v2", "blue_green"),
    ],
    ids=["set_active_version", "set_routing", "blue_green_switch"],
)
async def test_changing_the_routing_during_a_canary_ends_it(
    server, versions, traffic, events, end, reason, active, strategy
):
    await server.start_canary("bc", "v2", min_requests=10, max_latency_ratio=LENIENT_LATENCY)
    for _ in range(20):
        await traffic.one()

    await end(server)

    assert server.active_models["bc"] == active
    assert server.get_routing("bc").strategy == strategy
    entries = server.rollout_history("bc")
    assert (entries[-1].event, entries[-1].reason) == ("ended", reason)
    # Nothing judges the ended rollout any more: no step, no promotion, no rollback.
    for _ in range(300):
        await traffic.one()
    assert server.rollout_history("bc") == entries
    assert [e[-1] for e in events.events] == ["started", "ended"]
    assert not traffic.failures


async def test_a_new_canary_replacing_a_running_one_starts_afresh(
    server, versions, binary_model_v2, events
):
    await server.deploy_model("bc", "v3", binary_model_v2)
    await server.start_canary("bc", "v2", min_requests=1000)
    await server.start_canary("bc", "v3", min_requests=1000)

    assert [(e.candidate, e.step, e.event) for e in server.rollout_history("bc")] == [
        ("v2", 0, "started"),
        ("v2", 0, "ended"),
        ("v3", 0, "started"),
    ]
    assert server.rollout_history("bc")[1].reason == "replaced by new routing"
    assert [(e[1], e[-1]) for e in events.events] == [
        ("v2", "started"),
        ("v2", "ended"),
        ("v3", "started"),
    ]
    assert server.get_routing("bc").params["candidate"] == "v3"


@pytest.mark.parametrize("broken", [False, True], ids=["healthy-build", "broken-build"])
async def test_replacing_the_candidate_mid_step_starts_the_step_over(
    server, versions, traffic, binary_model_v2, events, broken
):
    await server.start_canary(
        "bc", "v2", steps=[0.5, 0.9, 1.0], min_requests=20, max_latency_ratio=LENIENT_LATENCY
    )
    while server.get_routing("bc").params["step"] == 0:
        await traffic.one()
    for _ in range(10):
        await traffic.one()
    assert server.get_deployment("bc", "v2").metrics.requests > 20

    # A new build of the candidate: its counters start at zero.
    replacement = await server.deploy_model("bc", "v2", binary_model_v2, replace=True)
    entry = server.rollout_history("bc")[-1]
    assert (entry.step, entry.event, entry.reason) == (
        1,
        "step",
        "v2 was replaced; step 1 starts over",
    )
    assert events.events[-1] == ("bc", "v2", 1, 0.9, "step")

    with inject_faults(replacement) as fault:
        if broken:
            fault.fail_fraction(1.0)
        await traffic.until_rollout_ends()

    last = server.rollout_history("bc")[-1]
    if broken:
        # Judged on the new build alone: not "2 of -28 requests".
        assert last.reason == "2 of 2 requests to v2 failed at step 1 (90%); the limit is 5.0%"
        assert server.active_models["bc"] == "v1"
    else:
        assert last.event == "promoted"
        # The restarted step waited for 20 requests to the new build itself.
        assert [e.reason.split(":")[0] for e in server.rollout_history("bc")[-2:]] == [
            "step 1 (90%) passed",
            "step 2 (100%) passed",
        ]
        assert "passed: 20 requests" in server.rollout_history("bc")[-2].reason
        assert server.active_models["bc"] == "v2"


async def test_versions_in_a_canary_cannot_be_retired(server, versions):
    await server.start_canary("bc", "v2", min_requests=1000)
    for version in ("v1", "v2"):
        with pytest.raises(InvalidRoutingError, match="under 'canary' routing"):
            await server.retire_model("bc", version)
    assert server.get_routing("bc").strategy == "canary"


# -- validation ------------------------------------------------------------------------------

GOOD = {"baseline": "v1", "candidate": "v2"}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({**GOOD, "speed": 2}, "unknown params"),
        ({"baseline": "v1"}, "not deployed"),
        ({"candidate": "v2"}, "not deployed"),
        ({"baseline": "v1", "candidate": "v9"}, "'v9' of model 'bc' is not deployed"),
        ({"baseline": "v1", "candidate": "v1"}, "must not repeat"),
        ({**GOOD, "steps": []}, "non-empty list"),
        ({**GOOD, "steps": "0.5"}, "non-empty list"),
        ({**GOOD, "steps": [0.5, 0.25, 1.0]}, "must not decrease"),
        ({**GOOD, "steps": [0.0, 1.0]}, r"share in \(0, 1\]"),
        ({**GOOD, "steps": [0.5, 1.5]}, r"share in \(0, 1\]"),
        ({**GOOD, "steps": [0.5, True]}, r"share in \(0, 1\]"),
        ({**GOOD, "step": 4}, r"step must index steps \(0\.\.3\)"),
        ({**GOOD, "step": -1}, "step must index steps"),
        ({**GOOD, "step": 1.0}, "step must index steps"),
        ({**GOOD, "min_requests": 0}, "at least 1"),
        ({**GOOD, "min_requests": 2.5}, "must be an integer"),
        ({**GOOD, "min_requests": True}, "must be an integer"),
        ({**GOOD, "min_seconds": -1}, "min_seconds"),
        ({**GOOD, "min_seconds": "1"}, "min_seconds"),
        ({**GOOD, "max_error_rate": 1.5}, "max_error_rate"),
        ({**GOOD, "max_error_rate": -0.1}, "max_error_rate"),
        ({**GOOD, "max_latency_ratio": 0}, "max_latency_ratio"),
        ({**GOOD, "max_latency_ratio": None}, "max_latency_ratio"),
    ],
)
async def test_set_routing_refuses_bad_canary_params_and_keeps_the_old_routing(
    server, versions, params, message
):
    await server.setup_ab_test("bc", ["v1", "v2"], [0.9, 0.1])
    before = server.get_routing("bc")

    with pytest.raises(InvalidRoutingError, match=message):
        await server.set_routing("bc", RoutingConfig("canary", params))

    assert server.get_routing("bc") == before
    assert server.rollout_history("bc") == ()
    assert server.active_models["bc"] == "v1"


async def test_start_canary_refuses_bad_plans_and_keeps_a_running_rollout(server, versions):
    await server.start_canary("bc", "v2", min_requests=1000)
    before = server.get_routing("bc")
    with pytest.raises(InvalidRoutingError):
        await server.start_canary("bc", "v2", steps=[0.5, 0.1])
    with pytest.raises(InvalidRoutingError):
        await server.start_canary("bc", "v1")  # the active version is the baseline
    with pytest.raises(InvalidRoutingError):
        await server.start_canary("bc", "v2", max_error_rate=2.0)
    assert server.get_routing("bc") == before
    assert [e.event for e in server.rollout_history("bc")] == ["started"]


async def test_a_canary_config_set_directly_starts_a_rollout_at_its_step(server, versions, traffic):
    config = RoutingConfig(
        "canary",
        {**GOOD, "steps": [0.5, 1.0], "step": 1, "min_requests": 5, "max_latency_ratio": 50.0},
    )
    await server.set_routing("bc", config)
    assert server.get_routing("bc") == config
    assert history(server) == [("v2", 1, 1.0, "started")]

    await traffic.until_rollout_ends()
    assert history(server)[-1] == ("v2", 1, 1.0, "promoted")
    assert traffic.served == {"v2": 5}
