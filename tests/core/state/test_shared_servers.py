"""Servers that share one control state: a change on one is in force on the other.

Two ModelServers, each with its own handle to one store (one MemoryState;
two clients of one Redis), stand for two processes sharing it. Each deploys
the versions it serves; routing, active version and fallback changes made
on either reach the other through the change feed. A change is based on the
newest revision even when the feed lags; of two changes made at once, one
is written and the other gets StateConflictError, overwriting nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest

from services import RedisServer
from support import DelegatingState, eventually
from turnout import (
    ControlState,
    Fallback,
    InvalidConfigError,
    InvalidInputError,
    ModelServer,
    RepositoryInUseError,
    RoutingConfig,
    StateConflictError,
    StateUnavailableError,
    TurnoutError,
)
from turnout.core.deployments.faults import inject_faults
from turnout.core.service import controller_lease
from turnout.core.state.redis_state import RedisState
from turnout.core.state.repository import ModelStore

SPLIT = RoutingConfig("weighted", {"versions": ["v1", "v2"], "weights": [70, 30]})


class LaggingFeed(DelegatingState):
    """A handle to a control state whose change feed holds notifications until released."""

    def __init__(self, inner: ControlState) -> None:
        super().__init__(inner)
        self.held: list[tuple[Callable[[str, int], None], str, int]] = []
        self.lagging = False

    async def subscribe(self, listener: Callable[[str, int], None]) -> Callable[[], None]:
        def deliver(model_id: str, revision: int) -> None:
            if self.lagging:
                self.held.append((listener, model_id, revision))
            else:
                listener(model_id, revision)

        return await super().subscribe(deliver)

    def release(self) -> None:
        self.lagging = False
        for listener, model_id, revision in self.held:
            listener(model_id, revision)
        self.held.clear()


@pytest.fixture
async def pair(
    connect: Callable[[], ControlState], logistic_model: Any, forest_model: Any
) -> AsyncIterator[tuple[ModelServer, ModelServer, LaggingFeed]]:
    shared = connect()
    lagging = LaggingFeed(connect())
    async with (
        ModelServer(state=shared, entry_points=False) as one,
        ModelServer(state=lagging, entry_points=False) as two,
    ):
        for server in (one, two):
            await server.deploy_model("bc", "v1", logistic_model)
            await server.deploy_model("bc", "v2", forest_model, set_active=False)
        yield one, two, lagging


async def test_a_routing_change_on_one_server_is_in_force_on_the_other(
    pair: tuple[ModelServer, ModelServer, LaggingFeed],
) -> None:
    one, two, _ = pair
    await one.set_routing("bc", SPLIT)
    await eventually(lambda: two.get_routing("bc") == SPLIT)
    assert (await one.control_state.read("bc")).routing == SPLIT


async def test_set_active_and_fallback_reach_the_other_server(
    pair: tuple[ModelServer, ModelServer, LaggingFeed],
) -> None:
    one, two, _ = pair
    await two.set_active_version("bc", "v2")
    await eventually(lambda: one.active_models.get("bc") == "v2")
    await one.set_fallback("bc", Fallback(version="v1"))
    await eventually(lambda: two.get_fallback("bc") == Fallback(version="v1"))


async def test_both_servers_catalogue_their_versions_in_one_state(
    pair: tuple[ModelServer, ModelServer, LaggingFeed], logistic_model: Any
) -> None:
    one, two, _ = pair
    await two.deploy_model("bc", "v3", logistic_model, set_active=False)
    stored = await one.control_state.read("bc")
    assert set(stored.versions) == {"v1", "v2", "v3"}
    # v3 is served by the server that deployed it only; the other keeps it in the catalogue.
    await one.set_routing("bc", RoutingConfig("active"))
    assert set((await one.control_state.read("bc")).versions) == {"v1", "v2", "v3"}


async def test_a_server_whose_feed_lags_changes_the_newest_state(
    pair: tuple[ModelServer, ModelServer, LaggingFeed],
) -> None:
    one, two, feed = pair
    feed.lagging = True
    await one.set_routing("bc", SPLIT)  # two has not heard of it
    await two.set_fallback("bc", Fallback(version="v2"))  # read first, then written

    stored = await one.control_state.read("bc")
    assert (stored.routing, stored.fallback) == (SPLIT, Fallback(version="v2"))
    assert two.get_routing("bc") == SPLIT
    feed.release()
    await eventually(lambda: one.get_fallback("bc") == Fallback(version="v2"))


async def test_two_servers_changing_one_model_at_once_lose_no_change(
    pair: tuple[ModelServer, ModelServer, LaggingFeed],
) -> None:
    one, two, _ = pair
    results = await asyncio.gather(
        one.set_routing("bc", SPLIT), two.set_active_version("bc", "v2"), return_exceptions=True
    )

    stored = await one.control_state.read("bc")
    outcome = (stored.routing, stored.active)
    split_only, active_only = (SPLIT, "v1"), (RoutingConfig("active"), "v2")
    if isinstance(results[1], StateConflictError):  # one's split won; two's change not made
        assert outcome == split_only, results
    elif isinstance(results[0], StateConflictError):  # two's set-active won
        assert outcome == active_only, results
    else:  # the store took them one after the other, each on the other's result
        assert results == [None, None]
        assert outcome in ((SPLIT, "v2"), active_only), results
    for server in (one, two):  # the loser holds the winner's state; so does the winner
        await eventually(lambda s=server: s.get_routing("bc") == stored.routing)
        assert server.active_models["bc"] == stored.active


async def test_outcomes_from_both_servers_add_up_in_one_comparison(
    pair: tuple[ModelServer, ModelServer, LaggingFeed], binary_data: Any
) -> None:
    one, two, _ = pair
    rows = binary_data.X_test.to_numpy()[:1]
    for server, outcome in ((one, 1.0), (two, 0.0), (two, 1.0)):
        result = await server.infer("bc", rows, version="v1")
        await server.record_outcome("bc", result.request_id, outcome)
    totals = (await one.control_state.outcomes("bc"))["v1"]
    assert totals.statistics("v1").count == 3
    # The server that recorded last sees every process's outcomes; another takes them.
    assert two.compare_versions("bc", "v1", "v2").a.count == 3
    await one.refresh_outcomes("bc")
    assert one.compare_versions("bc", "v1", "v2").a.count == 3


async def test_a_request_takes_one_outcome_through_any_server(
    pair: tuple[ModelServer, ModelServer, LaggingFeed], binary_data: Any
) -> None:
    one, two, _ = pair
    rows = binary_data.X_test.to_numpy()[:1]
    issued = await one.infer("bc", rows, version="v1")
    answered = await two.infer("bc", rows, version="v1")

    assert await two.record_outcome("bc", issued.request_id, 1.0) == "v1"
    for server in (one, two):  # neither the issuer nor the same server takes it again
        with pytest.raises(InvalidInputError, match="already has an outcome"):
            await server.record_outcome("bc", issued.request_id, 0.0)
    assert await one.record_outcome("bc", answered.request_id, 0.0) == "v1"
    with pytest.raises(InvalidInputError, match="already has an outcome"):
        await two.record_outcome("bc", answered.request_id, 1.0)
    totals = (await one.control_state.outcomes("bc"))["v1"]
    assert (totals.count, totals.statistics("v1").mean) == (2, 0.5)


class FailingOutcomes(DelegatingState):
    """A handle whose next ``failures`` outcome additions find the store unreachable."""

    failures = 0

    async def add_outcome(
        self, model_id: str, version: str, value: float, *, once: str | None = None
    ) -> Any:
        if self.failures:
            self.failures -= 1
            raise StateUnavailableError("the control state is unreachable (injected)")
        return await super().add_outcome(model_id, version, value, once=once)


async def test_an_outcome_the_store_could_not_take_may_be_sent_again(
    connect: Callable[[], ControlState], logistic_model: Any, binary_data: Any
) -> None:
    state = FailingOutcomes(connect())
    async with ModelServer(state=state, entry_points=False) as server:
        await server.deploy_model("bc", "v1", logistic_model)
        result = await server.infer("bc", binary_data.X_test.to_numpy()[:1])
        state.failures = 1
        with pytest.raises(StateUnavailableError):
            await server.record_outcome("bc", result.request_id, 1.0)

        assert await server.record_outcome("bc", result.request_id, 1.0) == "v1"
        assert (await state.outcomes("bc"))["v1"].count == 1


BANDIT = RoutingConfig("bandit", {"versions": ["v1", "v2"], "seed": 0})


async def test_bandits_on_every_server_learn_from_the_outcomes_any_server_recorded(
    pair: tuple[ModelServer, ModelServer, LaggingFeed], binary_data: Any
) -> None:
    one, two, _ = pair
    await one.set_routing("bc", BANDIT)
    await eventually(lambda: two.get_routing("bc") == BANDIT)
    rows = binary_data.X_test.to_numpy()[:1]
    for version, reward in (("v1", 1.0), ("v1", 1.0), ("v2", 0.0), ("v1", 0.25)):
        result = await one.infer("bc", rows, version=version)
        await one.record_outcome("bc", result.request_id, reward)
    fleet_posteriors = [3.25, 1.75, 1.0, 2.0]  # v1's alpha and beta, then v2's

    def posteriors(server: ModelServer) -> list[float]:
        """The bandit's (alpha, beta) of v1 then v2, flat: approx compares flat sequences."""
        found = server._router.traffic("bc").strategy.posteriors()  # type: ignore[attr-defined]
        return [*found["v1"], *found["v2"]]

    assert posteriors(one) == pytest.approx(fleet_posteriors)
    # The other server takes them within a heartbeat, with no outcome of its own.
    await eventually(lambda: posteriors(two) == pytest.approx(fleet_posteriors), 3.0)
    # A new bandit config resumes from the fleet's outcomes, not from the prior.
    await two.set_routing("bc", RoutingConfig("bandit", {"versions": ["v1", "v2"], "seed": 1}))
    await eventually(lambda: posteriors(two) == pytest.approx(fleet_posteriors), 3.0)


# -- shared artifacts: a version deployed on one server is loaded by the others ----------------


@pytest.fixture
async def fleet(
    connect: Callable[[], ControlState], tmp_path: Any
) -> AsyncIterator[tuple[ModelServer, ModelServer]]:
    artifacts = tmp_path / "artifacts"
    async with (
        ModelServer(state=connect(), artifacts=artifacts, entry_points=False) as one,
        ModelServer(state=connect(), artifacts=artifacts, entry_points=False) as two,
    ):
        yield one, two


async def test_a_version_deployed_on_one_server_is_loaded_and_served_by_the_other(
    fleet: tuple[ModelServer, ModelServer], logistic_model: Any, forest_model: Any, binary_data: Any
) -> None:
    one, two = fleet
    rows = binary_data.X_test.to_numpy()[:3]
    await one.deploy_model("bc", "v1", logistic_model)
    await one.deploy_model("bc", "v2", forest_model, set_active=False)
    await one.set_routing("bc", SPLIT)

    await eventually(lambda: not two.unloaded_versions and two.get_routing("bc") == SPLIT)
    assert two.active_models["bc"] == "v1"
    for version in ("v1", "v2"):
        mine = await one.predict("bc", rows, version=version)
        theirs = await two.predict("bc", rows, version=version)
        assert np.allclose(mine, theirs)
    stored = await one.control_state.read("bc")
    assert set(stored.versions) == {"v1", "v2"}


async def test_a_server_started_later_serves_every_version_once_started(
    connect: Callable[[], ControlState], tmp_path: Any, logistic_model: Any, forest_model: Any
) -> None:
    artifacts = tmp_path / "artifacts"
    async with ModelServer(state=connect(), artifacts=artifacts, entry_points=False) as one:
        await one.deploy_model("bc", "v1", logistic_model)
        await one.deploy_model("bc", "v2", forest_model, set_active=False)
        await one.set_routing("bc", SPLIT)

        # No waiting: a worker listens right after this, and must not answer 404 meanwhile.
        async with ModelServer(state=connect(), artifacts=artifacts, entry_points=False) as two:
            assert two.unloaded_versions == []
            assert set(two.get_all_models_status()["bc"]) == {"v1", "v2"}
            assert two.get_routing("bc") == SPLIT


async def test_a_version_retired_on_one_server_is_retired_on_the_other(
    fleet: tuple[ModelServer, ModelServer], logistic_model: Any, forest_model: Any
) -> None:
    one, two = fleet
    await one.deploy_model("bc", "v1", logistic_model)
    await one.deploy_model("bc", "v2", forest_model, set_active=False)
    await eventually(lambda: set(two.get_all_models_status().get("bc", {})) == {"v1", "v2"})

    await one.retire_model("bc", "v2")
    await eventually(lambda: set(two.get_all_models_status()["bc"]) == {"v1"})
    assert set((await two.control_state.read("bc")).versions) == {"v1"}


# -- one repository, many servers: one writes it, the others stand by ---------------------------


async def test_servers_sharing_a_state_share_a_repository_with_one_writer_at_a_time(
    connect: Callable[[], ControlState], tmp_path: Any, logistic_model: Any, forest_model: Any
) -> None:
    repository, artifacts = tmp_path / "models", tmp_path / "artifacts"

    def on_disk() -> dict[str, Any]:
        records = ModelStore(repository, read_only=True).load()
        (record,) = [r for r in records if r.model_id == "bc"]
        return {"versions": {v.version for v in record.versions}, "active": record.active}

    # A model no server can load: no catalogue names it, and no writer may delete it.
    broken = repository / "broken" / "v1"
    broken.mkdir(parents=True)
    (broken / "model.onnx").write_bytes(b"not ONNX")

    one = ModelServer(
        state=connect(), repository=repository, artifacts=artifacts, entry_points=False
    )
    await one.__aenter__()
    try:
        await one.deploy_model("bc", "v1", logistic_model)
        await one.deploy_model("bc", "v2", forest_model, set_active=False)
        async with ModelServer(
            state=connect(), repository=repository, artifacts=artifacts, entry_points=False
        ) as two:
            assert set(two.get_all_models_status()["bc"]) == {"v1", "v2"}
            # Without a shared state, a second server is refused, as before.
            with pytest.raises(RepositoryInUseError, match="in use by a running server"):
                async with ModelServer(repository=repository, entry_points=False):
                    pass

            # A change made through the standby is written by the holder, which hears it.
            await two.set_active_version("bc", "v2")
            await eventually(lambda: on_disk()["active"] == "v2", 5.0)

            await one.close()  # its lock goes with it: the standby takes over within a beat
            await eventually(lambda: not two._store.standby, 5.0)  # type: ignore[union-attr]
            await two.deploy_model("bc", "v3", logistic_model, set_active=True)
            await two.retire_model("bc", "v1")
            assert on_disk() == {"versions": {"v2", "v3"}, "active": "v3"}
            assert (broken / "model.onnx").read_bytes() == b"not ONNX"
    finally:
        await one.close()


# -- the store goes away, and comes back empty ---------------------------------------------------


async def test_a_redis_outage_refuses_control_writes_not_inference(
    tmp_path: Any, logistic_model: Any, forest_model: Any, binary_data: Any
) -> None:
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    state = RedisState(redis.url)
    rows = binary_data.X_test.to_numpy()[:1]
    try:
        async with ModelServer(state=state, entry_points=False) as server:
            await server.deploy_model("bc", "v1", logistic_model)
            await server.deploy_model("bc", "v2", forest_model, set_active=False)
            await server.set_routing("bc", SPLIT)

            redis.stop()
            answered = [await server.predict("bc", rows) for _ in range(200)]
            assert len(answered) == 200  # inference never asks the store
            with pytest.raises(StateUnavailableError, match="unreachable"):
                await server.set_routing("bc", RoutingConfig("active"))
            assert server.get_routing("bc") == SPLIT  # refused, so not made here either

            redis.start()  # on the same port, without its data

            async def stored_again() -> bool:
                return (await state.read("bc")).routing == SPLIT

            for _ in range(200):
                if await stored_again():
                    break
                await asyncio.sleep(0.05)
            stored = await state.read("bc")
            assert (stored.routing, set(stored.versions)) == (SPLIT, {"v1", "v2"})
            await server.set_routing("bc", RoutingConfig("active"))  # writes work again
            assert (await state.read("bc")).routing == RoutingConfig("active")
    finally:
        await state.close()
        redis.stop()


# -- one controller -----------------------------------------------------------------------------


async def test_one_server_leads_and_another_takes_over_when_it_stops(
    connect: Callable[[], ControlState], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(controller_lease, "LEASE_SECONDS", 0.3)
    one = ModelServer(state=connect(), entry_points=False)
    two = ModelServer(state=connect(), entry_points=False)
    async with one, two:
        assert [one._leads(), two._leads()] == [True, False]
        await one.close()  # its lease is no longer renewed
        taken = await eventually(two._leads, 5.0)
    assert taken < 2 * 0.3, f"the lease changed hands after {taken:.2f} s"


async def test_a_canary_whose_leader_stops_ends_promoted_exactly_once(
    connect: Callable[[], ControlState],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
    logistic_model: Any,
    binary_data: Any,
) -> None:
    monkeypatch.setattr(controller_lease, "LEASE_SECONDS", 0.3)
    artifacts = tmp_path / "artifacts"
    rows = binary_data.X_test.to_numpy()[:1]
    one = ModelServer(state=connect(), artifacts=artifacts, entry_points=False)
    two = ModelServer(state=connect(), artifacts=artifacts, entry_points=False)
    async with one, two:
        await one.deploy_model("bc", "v1", logistic_model)
        await one.deploy_model("bc", "v2", logistic_model, set_active=False)
        await eventually(lambda: not two.unloaded_versions and "bc" in two.active_models)
        # The same model in both versions: only latency noise could fail it, so allow that.
        await one.start_canary(
            "bc", "v2", steps=[0.25, 0.5, 1.0], min_requests=20, max_latency_ratio=1000.0
        )
        await eventually(lambda: two.get_routing("bc").strategy == "canary")

        async def traffic(server: ModelServer, until: Callable[[], bool]) -> None:
            while not until():
                await server.predict("bc", rows)
                await asyncio.sleep(0)

        stepped = lambda: one.get_routing("bc").params.get("step", 0) >= 1  # noqa: E731
        await asyncio.wait_for(traffic(one, stepped), 10)
        await one.close()  # the leader stops mid-rollout
        await eventually(two._leads, 5.0)
        promoted = lambda: two.get_routing("bc").strategy != "canary"  # noqa: E731
        await asyncio.wait_for(traffic(two, promoted), 10)
        await two._flush_changes()

        stored = await two.control_state.read("bc")
        events = [event.event for event in stored.history]
        assert events.count("promoted") + events.count("rolled_back") == 1, events
        assert "promoted" in events, events
        assert stored.active == "v2"
        assert stored.history[-1].step >= 1  # resumed at its stored step, not from zero


async def test_a_canary_is_judged_on_the_traffic_every_server_served(
    pair: tuple[ModelServer, ModelServer, LaggingFeed], binary_data: Any
) -> None:
    leader, follower, _ = pair
    rows = binary_data.X_test.to_numpy()[:1]
    await leader.start_canary(
        "bc", "v2", steps=[0.5, 1.0], min_requests=20, max_latency_ratio=1000.0
    )
    await eventually(lambda: follower.get_routing("bc").strategy == "canary")

    async def follower_traffic() -> None:
        # Every request goes to the follower: only the fleet's numbers can decide the canary.
        while leader.get_routing("bc").strategy == "canary":
            await follower.predict("bc", rows)
            await asyncio.sleep(0.005)

    await asyncio.wait_for(follower_traffic(), 10)
    await leader._flush_changes()
    stored = await leader.control_state.read("bc")
    assert stored.active == "v2", [(e.event, e.reason) for e in stored.history]
    served = leader.get_all_models_status()["bc"]["v2"]["metrics"].request_count
    assert served == 0, "the leader judged traffic it did not serve itself"


async def test_a_candidate_failing_on_another_server_is_rolled_back_by_the_leader(
    pair: tuple[ModelServer, ModelServer, LaggingFeed], binary_data: Any
) -> None:
    leader, follower, _ = pair
    rows = binary_data.X_test.to_numpy()[:1]
    await leader.start_canary("bc", "v2", steps=[0.5, 1.0], min_requests=20)
    await eventually(lambda: follower.get_routing("bc").strategy == "canary")
    with inject_faults(follower.get_deployment("bc", "v2")) as fault:
        fault.fail_fraction(1.0)
        for _ in range(60):
            with contextlib.suppress(TurnoutError):
                await follower.predict("bc", rows, version="v2")
    await eventually(lambda: leader.get_routing("bc").strategy != "canary", 5.0)
    await leader._flush_changes()
    stored = await leader.control_state.read("bc")
    assert stored.active == "v1"
    assert [e.event for e in stored.history][-1] == "rolled_back"
    assert "failed" in stored.history[-1].reason, stored.history[-1].reason


async def test_the_leaders_health_monitor_rolls_back_on_failures_another_server_saw(
    pair: tuple[ModelServer, ModelServer, LaggingFeed], binary_data: Any
) -> None:
    leader, follower, _ = pair
    rows = binary_data.X_test.to_numpy()[:1]
    leader.start_health_monitor(interval=0.05, auto_rollback=True)
    try:
        for _ in range(20):  # v1 healthy while active, on the follower's traffic alone
            await follower.predict("bc", rows)
        await eventually(
            lambda: leader._health._stable.get("bc") == ["v1"],
            5.0,  # type: ignore[attr-defined]
        )
        await leader.set_active_version("bc", "v2")
        await eventually(lambda: follower.active_models["bc"] == "v2")
        with inject_faults(follower.get_deployment("bc", "v2")) as fault:
            fault.fail_fraction(1.0)
            for _ in range(40):
                with contextlib.suppress(TurnoutError):
                    await follower.predict("bc", rows)

            await eventually(lambda: leader.active_models["bc"] == "v1", 5.0)
        await eventually(lambda: follower.active_models["bc"] == "v1")
        served = leader.get_all_models_status()["bc"]["v2"]["metrics"].request_count
        assert served == 0, "the leader judged traffic it did not serve itself"
        # Judged on the follower's requests (its breaker opened after the first failures),
        # as of the follower's last flush of its totals, which may trail its own count.
        served_there = follower.get_deployment("bc", "v2").metrics.requests
        for _ in range(100):
            report = await leader.health_check("bc", "v2")
            if report.request_count == served_there:
                break
            await asyncio.sleep(0.05)
        assert report.request_count == served_there
        assert report.error_rate == 1.0
    finally:
        leader.stop_health_monitor()


async def test_outcomes_recorded_through_three_servers_sum_exactly(
    connect: Callable[[], ControlState], tmp_path: Any, logistic_model: Any, binary_data: Any
) -> None:
    artifacts = tmp_path / "artifacts"
    rows = binary_data.X_test.to_numpy()[:1]
    servers = [ModelServer(state=connect(), artifacts=artifacts, entry_points=False) for _ in "abc"]
    async with servers[0], servers[1], servers[2]:
        await servers[0].deploy_model("bc", "v1", logistic_model)
        await servers[0].deploy_model("bc", "v2", logistic_model, set_active=False)
        both = {"v1", "v2"}
        for server in servers[1:]:
            await eventually(lambda s=server: set(s.get_all_models_status().get("bc", {})) == both)
        expected = {"v1": [], "v2": []}
        for i in range(30):
            version = "v1" if i % 3 else "v2"
            result = await servers[i % 3].infer("bc", rows, version=version)
            # The outcome arrives at another server than the one that answered.
            served = await servers[(i + 1) % 3].record_outcome("bc", result.request_id, i % 2)
            assert served == version
            expected[version].append(float(i % 2))
        for n, server in enumerate(servers):
            await server.refresh_outcomes("bc")
            comparison = server.compare_versions("bc", "v1", "v2")
            figures = (
                f"server {n} counts v1 {comparison.a.count}, v2 {comparison.b.count}"
                f" of 20 and 10 recorded through 3 servers (means {comparison.a.mean:.3f},"
                f" {comparison.b.mean:.3f})"
            )
            assert (comparison.a.count, comparison.b.count) == (20, 10), figures
            assert comparison.a.mean == pytest.approx(sum(expected["v1"]) / 20), figures
            assert comparison.b.mean == pytest.approx(sum(expected["v2"]) / 10), figures
        with pytest.raises(InvalidInputError, match="does not have"):
            await servers[1].record_outcome("bc", "bc~v9~feedface-1", 1.0)


async def test_every_server_sharing_a_state_is_listed_with_what_it_serves(
    pair: tuple[ModelServer, ModelServer, LaggingFeed],
) -> None:
    one, _, _ = pair
    for _ in range(50):  # each beats once a second: wait for a beat after the deploys
        fleet = await one.fleet()
        if len(fleet) == 2 and all(
            facts["models"].get("bc", {}).get("loaded") == ["v1", "v2"] for facts in fleet.values()
        ):
            break
        await asyncio.sleep(0.1)
    assert len(fleet) == 2
    assert sorted(facts["leads"] for facts in fleet.values()) == [False, True]
    for facts in fleet.values():
        assert facts["models"]["bc"]["loaded"] == ["v1", "v2"]
        assert facts["models"]["bc"]["revision"] > 0
        assert facts["pid"] == os.getpid()


async def test_a_server_announces_plain_facts_of_its_own_names_only(
    pair: tuple[ModelServer, ModelServer, LaggingFeed],
) -> None:
    one, _, _ = pair
    one.announce(listen="http://127.0.0.1:8080")
    one.announce(listen="http://127.0.0.1:8081")  # said again, it is replaced
    assert one.announced == {"listen": "http://127.0.0.1:8081"}
    with pytest.raises(InvalidConfigError, match="itself"):
        one.announce(pid=1)
    with pytest.raises(InvalidConfigError, match="JSON"):
        one.announce(when=object())
