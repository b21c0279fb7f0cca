"""Servers that share one control state: a change on one is in force on the other.

Two ModelServers given one MemoryState stand for two processes sharing a
store. Each deploys the versions it serves; routing, active version and
fallback changes made on either reach the other through the change feed.
A server whose view is stale (its feed lags) gets StateConflictError for
its change, and takes the other's state instead of overwriting it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from turnout import (
    Fallback,
    MemoryState,
    ModelServer,
    ModelState,
    OutcomeTotals,
    RoutingConfig,
    StateConflictError,
)

SPLIT = RoutingConfig("weighted", {"versions": ["v1", "v2"], "weights": [70, 30]})


class LaggingFeed:
    """A handle to a MemoryState whose change feed holds notifications until released."""

    def __init__(self, inner: MemoryState) -> None:
        self.inner = inner
        self.held: list[tuple[Callable[[str, int], None], str, int]] = []
        self.lagging = False

    async def read(self, model_id: str) -> ModelState:
        return await self.inner.read(model_id)

    async def model_ids(self) -> list[str]:
        return await self.inner.model_ids()

    async def write(self, state: ModelState) -> ModelState:
        return await self.inner.write(state)

    async def add_outcome(self, model_id: str, version: str, value: float) -> OutcomeTotals:
        return await self.inner.add_outcome(model_id, version, value)

    async def outcomes(self, model_id: str) -> dict[str, OutcomeTotals]:
        return await self.inner.outcomes(model_id)

    def subscribe(self, listener: Callable[[str, int], None]) -> Callable[[], None]:
        def deliver(model_id: str, revision: int) -> None:
            if self.lagging:
                self.held.append((listener, model_id, revision))
            else:
                listener(model_id, revision)

        return self.inner.subscribe(deliver)

    def release(self) -> None:
        self.lagging = False
        for listener, model_id, revision in self.held:
            listener(model_id, revision)
        self.held.clear()

    async def close(self) -> None:
        pass


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.002)
    raise AssertionError("the change never arrived")


@pytest.fixture
async def pair(
    logistic_model: Any, forest_model: Any
) -> AsyncIterator[tuple[ModelServer, ModelServer, LaggingFeed]]:
    shared = MemoryState()
    lagging = LaggingFeed(shared)
    async with (
        ModelServer(state=shared, entry_points=False) as one,
        ModelServer(state=lagging, entry_points=False) as two,
    ):
        for server in (one, two):
            await server.deploy_model("bc", "v1", logistic_model)
            await server.deploy_model("bc", "v2", forest_model, set_active=False)
        yield one, two, lagging
    await shared.close()


async def test_a_routing_change_on_one_server_is_in_force_on_the_other(
    pair: tuple[ModelServer, ModelServer, LaggingFeed],
) -> None:
    one, two, _ = pair
    await one.set_routing("bc", SPLIT)
    await until(lambda: two.get_routing("bc") == SPLIT)
    assert (await one.control_state.read("bc")).routing == SPLIT


async def test_set_active_and_fallback_reach_the_other_server(
    pair: tuple[ModelServer, ModelServer, LaggingFeed],
) -> None:
    one, two, _ = pair
    await two.set_active_version("bc", "v2")
    await until(lambda: one.active_models.get("bc") == "v2")
    await one.set_fallback("bc", Fallback(version="v1"))
    await until(lambda: two.get_fallback("bc") == Fallback(version="v1"))


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


async def test_a_stale_server_gets_a_conflict_and_takes_the_newer_state(
    pair: tuple[ModelServer, ModelServer, LaggingFeed],
) -> None:
    one, two, feed = pair
    feed.lagging = True
    await one.set_routing("bc", SPLIT)  # two has not heard of it

    with pytest.raises(StateConflictError, match="changed since revision"):
        await two.set_active_version("bc", "v2")

    stored = await one.control_state.read("bc")
    assert (stored.routing, stored.active) == (SPLIT, "v1")  # nothing was overwritten
    assert (two.get_routing("bc"), two.active_models["bc"]) == (SPLIT, "v1")
    feed.release()
    await two.set_active_version("bc", "v2")  # in step again: the retry is written
    await until(lambda: one.active_models.get("bc") == "v2")


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
    # The server that recorded last sees every process's outcomes.
    assert two.compare_versions("bc", "v1", "v2").a.count == 3
