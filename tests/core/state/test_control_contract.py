"""The control-state contract: what every ControlState does, run against each implementation.

Scenarios as a server lives them (deploy, set active, change routing, step a
canary, record outcomes), then the two properties sharing rests on:
compare-and-set on a model's revision, and a change feed that tells every
subscriber which revision a model is at.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support import eventually
from turnout import (
    ControlState,
    Fallback,
    ModelState,
    OutcomeTotals,
    RolloutEvent,
    RoutingConfig,
    StateConflictError,
    VersionEntry,
)

Connect = Callable[[], ControlState]


def entry(version: str) -> VersionEntry:
    return VersionEntry(version, digest=f"sha-{version}", metadata={"by": "test"})


def deployed(*versions: str, model_id: str = "m", revision: int = 0) -> ModelState:
    return ModelState(
        model_id,
        revision,
        versions={v: entry(v) for v in versions},
        active=versions[0],
    )


async def heard(state: ControlState) -> list[tuple[str, int]]:
    """Subscribe, and return the list the change feed appends to."""
    changes: list[tuple[str, int]] = []
    await state.subscribe(lambda model_id, revision: changes.append((model_id, revision)))
    return changes


async def settle(state: ControlState, *heard_by: list[tuple[str, int]]) -> None:
    """Write a marker model and wait until each list heard it: the feed delivers in order,
    so every earlier change has arrived too. The marker's entries are then removed."""
    await state.write(deployed("v1", model_id="marker"))
    await eventually(lambda: all(("marker", 1) in changes for changes in heard_by), 5.0)
    for changes in heard_by:
        changes[:] = [change for change in changes if change[0] != "marker"]


# -- scenarios ---------------------------------------------------------------------------------


async def test_a_model_never_written_is_at_revision_zero_with_no_versions(
    state: ControlState,
) -> None:
    unknown = await state.read("nothing")
    assert (unknown.revision, unknown.exists, unknown.active) == (0, False, None)
    assert await state.model_ids() == []


async def test_a_deploy_adds_the_version_to_the_catalogue(state: ControlState) -> None:
    written = await state.write(deployed("v1"))

    assert written.revision == 1
    read = await state.read("m")
    assert read == written
    assert read.versions["v1"] == entry("v1")
    assert read.active == "v1"
    assert await state.model_ids() == ["m"]


async def test_set_active_and_a_fallback_are_stored_whole(state: ControlState) -> None:
    first = await state.write(deployed("v1", "v2"))
    second = await state.write(first.changed(active="v2", fallback=Fallback(version="v1")))

    read = await state.read("m")
    assert (read.revision, read.active, read.fallback) == (2, "v2", Fallback(version="v1"))
    assert read == second


async def test_a_routing_change_is_read_back_as_written(state: ControlState) -> None:
    first = await state.write(deployed("v1", "v2"))
    routing = RoutingConfig("weighted", {"weights": {"v1": 0.7, "v2": 0.3}})
    await state.write(first.changed(routing=routing))

    assert (await state.read("m")).routing == routing


async def test_a_canary_step_keeps_its_start_and_its_history(state: ControlState) -> None:
    first = await state.write(deployed("v1", "v2"))
    started = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
    event = RolloutEvent(started, "v2", 1, 0.25, "step", "step 0 passed")
    canary = RoutingConfig("canary", {"baseline": "v1", "candidate": "v2", "step": 1})
    await state.write(first.changed(routing=canary, step_started=started, history=[event]))

    read = await state.read("m")
    assert (read.routing, read.step_started, read.history) == (canary, started, (event,))


async def test_outcomes_add_up_per_version_without_a_revision(state: ControlState) -> None:
    written = await state.write(deployed("v1", "v2"))
    for value in (1.0, 0.0, 1.0):
        await state.add_outcome("m", "v1", value)
    totals = await state.add_outcome("m", "v2", 0.5)

    assert totals == OutcomeTotals().add(0.5)
    outcomes = await state.outcomes("m")
    assert outcomes["v1"].statistics("v1").count == 3
    assert outcomes["v1"].statistics("v1").mean == pytest.approx(2 / 3)
    assert outcomes["v1"].statistics("v1").binary
    assert not outcomes["v2"].statistics("v2").binary
    assert (await state.read("m")).revision == written.revision


async def test_outcomes_near_a_large_value_keep_their_spread(state: ControlState) -> None:
    values = [1e9 + i for i in range(5)]
    for value in values:
        totals = await state.add_outcome("m", "v1", value)
    assert totals is not None
    statistics = totals.statistics("v1")
    assert statistics.mean == pytest.approx(1e9 + 2)
    assert statistics.std == pytest.approx(float(np.std(values, ddof=1)))
    assert await state.outcomes("m") == {"v1": totals}


async def test_a_request_id_takes_one_outcome_through_every_handle(connect: Connect) -> None:
    one, two = connect(), connect()
    first = await one.add_outcome("m", "v1", 1.0, once="m~v1~abc-1")

    assert await two.add_outcome("m", "v1", 0.0, once="m~v1~abc-1") is None
    assert await one.add_outcome("m", "v1", 0.0, once="m~v1~abc-1") is None
    assert (await two.outcomes("m"))["v1"] == first
    # Ids are per model; without one, every outcome counts.
    assert await two.add_outcome("other", "v1", 1.0, once="m~v1~abc-1") is not None
    assert await two.add_outcome("m", "v1", 1.0) is not None


async def test_the_memory_state_keeps_each_models_latest_answered_ids(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from turnout.core.state import memory

    monkeypatch.setattr(memory, "OUTCOME_IDS_KEPT", 3)
    state = memory.MemoryState()
    for i in range(5):
        assert await state.add_outcome("m", "v1", 1.0, once=f"m~v1~abc-{i}") is not None
    assert await state.add_outcome("other", "v1", 1.0, once="other~v1~abc-0") is not None
    # The 3 latest of m are still refused a second outcome; older ones have left, so its
    # memory stays bounded, and another model's ids took none of m's places.
    for i in (2, 3, 4):
        assert await state.add_outcome("m", "v1", 0.0, once=f"m~v1~abc-{i}") is None
    assert await state.add_outcome("m", "v1", 0.0, once="m~v1~abc-0") is not None
    assert await state.add_outcome("other", "v1", 0.0, once="other~v1~abc-0") is None


async def test_handles_racing_one_request_id_add_exactly_one_outcome(connect: Connect) -> None:
    handles = [connect() for _ in range(8)]
    added = await asyncio.gather(
        *(handle.add_outcome("m", "v1", 1.0, once="m~v1~race") for handle in handles)
    )
    assert sum(totals is not None for totals in added) == 1
    assert (await handles[0].outcomes("m"))["v1"].count == 1


async def test_a_state_without_versions_removes_the_model_and_its_outcomes(
    state: ControlState,
) -> None:
    written = await state.write(deployed("v1"))
    await state.add_outcome("m", "v1", 1.0)
    removed = await state.write(ModelState("m", written.revision))

    assert removed.revision == 2  # the revision counts on: a stale writer still conflicts
    assert await state.model_ids() == []
    assert await state.outcomes("m") == {}
    with pytest.raises(StateConflictError):
        await state.write(deployed("v1", revision=written.revision))


# -- compare-and-set -----------------------------------------------------------------------------


async def test_a_writer_with_a_stale_revision_gets_a_conflict_and_overwrites_nothing(
    connect: Connect,
) -> None:
    one, two = connect(), connect()
    base = await one.write(deployed("v1", "v2"))
    seen_by_two = await two.read("m")
    await one.write(base.changed(active="v2"))

    with pytest.raises(StateConflictError) as raised:
        await two.write(seen_by_two.changed(routing=RoutingConfig("shadow", {"primary": "v1"})))

    assert (raised.value.model_id, raised.value.expected, raised.value.actual) == ("m", 1, 2)
    stored = await one.read("m")
    assert (stored.revision, stored.active, stored.routing.strategy) == (2, "v2", "active")


async def test_two_first_writes_of_one_model_conflict(connect: Connect) -> None:
    one, two = connect(), connect()
    await one.write(deployed("v1"))
    with pytest.raises(StateConflictError):
        await two.write(deployed("v2"))
    assert set((await two.read("m")).versions) == {"v1"}


async def test_concurrent_writers_on_one_revision_have_exactly_one_winner(
    connect: Connect,
) -> None:
    handles = [connect() for _ in range(5)]
    base = await handles[0].write(deployed("v1", "v2", "v3"))
    attempts = [h.write(base.changed(active=f"v{1 + i % 3}")) for i, h in enumerate(handles)]
    results = await asyncio.gather(*attempts, return_exceptions=True)

    winners = [r for r in results if isinstance(r, ModelState)]
    losers = [r for r in results if isinstance(r, StateConflictError)]
    figures = f"5 writers on revision {base.revision}: {len(winners)} won, {len(losers)} refused"
    assert len(winners) == 1, figures
    assert len(losers) == 4, (figures, results)
    assert await handles[1].read("m") == winners[0], figures


# The fixture is a factory: each example opens a store of its own.
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(moves=st.lists(st.tuples(st.integers(0, 2), st.booleans()), min_size=1, max_size=25))
def test_writes_succeed_exactly_when_based_on_the_stored_revision(
    opener: Callable[[], Connect], moves: list[tuple[int, bool]]
) -> None:
    """Three writers; each writes from its last view, which it may refresh first."""

    async def play() -> None:
        connect = opener()
        handles = [connect() for _ in range(3)]
        views = [ModelState("m") for _ in handles]
        stored = ModelState("m")
        for count, (writer, refresh) in enumerate(moves):
            if refresh:
                views[writer] = await handles[writer].read("m")
            attempt = views[writer].changed(
                versions={"v": entry("v")},
                active="v",
                routing=RoutingConfig("active", {"write": count}),
            )
            if attempt.revision == stored.revision:
                stored = views[writer] = await handles[writer].write(attempt)
            else:
                with pytest.raises(StateConflictError):
                    await handles[writer].write(attempt)
            assert await handles[(writer + 1) % 3].read("m") == stored
        for handle in handles:
            await handle.close()

    asyncio.run(play())


# -- the change feed -----------------------------------------------------------------------------


async def test_every_subscriber_hears_each_write_with_its_revision(connect: Connect) -> None:
    writer, listener = connect(), connect()
    mine, theirs = await heard(writer), await heard(listener)

    first = await writer.write(deployed("v1"))
    await writer.write(first.changed(active="v1", routing=RoutingConfig("active")))
    await writer.write(deployed("x1", model_id="other"))
    await settle(writer, mine, theirs)

    assert theirs == [("m", 1), ("m", 2), ("other", 1)]
    assert mine == theirs  # the writer's own subscription hears its writes too


async def test_a_refused_write_is_not_announced(connect: Connect) -> None:
    writer = connect()
    changes = await heard(writer)
    await writer.write(deployed("v1"))
    with pytest.raises(StateConflictError):
        await writer.write(deployed("v1"))
    await settle(writer, changes)
    assert changes == [("m", 1)]


async def test_an_unsubscribed_listener_hears_nothing_more(state: ControlState) -> None:
    changes: list[tuple[str, int]] = []
    unsubscribe = await state.subscribe(lambda m, r: changes.append((m, r)))
    first = await state.write(deployed("v1"))
    await eventually(lambda: changes == [("m", 1)], 5.0)
    unsubscribe()
    await state.write(first.changed(active="v1"))
    still: list[tuple[str, int]] = []
    await state.subscribe(lambda m, r: still.append((m, r)))
    await settle(state, still)  # the marker reached a listener; the unsubscribed one heard none
    assert changes == [("m", 1)]


async def test_a_listener_is_not_called_inside_the_write(state: ControlState) -> None:
    changes: list[tuple[str, int]] = []
    await state.subscribe(lambda m, r: changes.append((m, r)))
    await state.write(deployed("v1"))
    assert changes == []  # delivered on a later turn of the loop, as a real feed is
    await settle(state, changes)
    assert changes == [("m", 1)]


# -- the controller lease --------------------------------------------------------------------


async def test_a_lease_is_held_by_one_holder_and_renewed_by_it(connect: Connect) -> None:
    one, two = connect(), connect()
    token = await one.hold_lease("controller", "a", 5.0)
    assert token is not None
    assert await two.hold_lease("controller", "b", 5.0) is None
    assert await one.hold_lease("controller", "a", 5.0) == token  # renewed, same token


async def test_an_expired_lease_changes_hands_with_a_greater_token(connect: Connect) -> None:
    one, two = connect(), connect()
    first = await one.hold_lease("controller", "a", 0.2)
    await asyncio.sleep(0.35)
    second = await two.hold_lease("controller", "b", 5.0)
    assert first is not None
    assert second is not None
    assert second > first
    assert await one.hold_lease("controller", "a", 5.0) is None


async def test_a_write_fenced_by_a_lost_lease_is_refused(connect: Connect) -> None:
    one, two = connect(), connect()
    base = await one.write(deployed("v1", "v2"))
    old = await one.hold_lease("controller", "a", 0.2)
    assert old is not None
    written = await one.write(base.changed(active="v2"), fence=("controller", old))
    await asyncio.sleep(0.35)
    new = await two.hold_lease("controller", "b", 5.0)
    assert new is not None

    with pytest.raises(StateConflictError, match="fenced out"):
        await one.write(written.changed(active="v1"), fence=("controller", old))
    assert (await two.read("m")).active == "v2"
    await two.write(written.changed(active="v1"), fence=("controller", new))
    assert (await one.read("m")).active == "v1"


# -- heartbeats --------------------------------------------------------------------------------


async def test_a_heartbeat_is_seen_by_every_handle_until_it_lapses(connect: Connect) -> None:
    one, two = connect(), connect()
    await one.heartbeat("worker-a", {"pid": 11, "models": {"m": {"revision": 3}}}, 0.3)
    await two.heartbeat("worker-b", {"pid": 12}, 5.0)

    beats = await two.heartbeats()
    assert set(beats) == {"worker-a", "worker-b"}
    assert beats["worker-a"]["models"] == {"m": {"revision": 3}}
    assert beats["worker-a"]["at"] > 0
    await asyncio.sleep(0.45)
    assert set(await one.heartbeats()) == {"worker-b"}  # a silent process is forgotten
