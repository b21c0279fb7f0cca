"""Every control-state change made through ModelServer and ModelServingManager goes through it.

A recording ControlState wraps the built-in one and keeps every call. After
each operation, the state the seam holds is the state the server serves by:
versions, active version, routing, fallback, rollout history, outcomes.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from support import DelegatingState
from turnout import (
    ControlState,
    Fallback,
    MemoryState,
    ModelServer,
    ModelServingManager,
    ModelState,
    OutcomeTotals,
    RoutingConfig,
)
from turnout.core.state.control import Fence


class RecordingState(DelegatingState):
    """A MemoryState that records each change made to it: (method, model_id, what)."""

    def __init__(self) -> None:
        super().__init__(MemoryState())
        self.calls: list[tuple[str, str, Any]] = []

    async def write(self, state: ModelState, *, fence: Fence | None = None) -> ModelState:
        self.calls.append(("write", state.model_id, state))
        return await super().write(state, fence=fence)

    async def add_outcome(
        self, model_id: str, version: str, value: float, *, once: str | None = None
    ) -> OutcomeTotals | None:
        self.calls.append(("add_outcome", model_id, (version, value)))
        return await super().add_outcome(model_id, version, value, once=once)

    async def close(self) -> None:
        self.calls.append(("close", "", None))
        await super().close()

    def writes(self) -> int:
        return sum(1 for call in self.calls if call[0] == "write")


async def stored_matches(server: ModelServer, state: ControlState, model_id: str) -> ModelState:
    """Assert the seam holds what ``server`` serves ``model_id`` by; return the stored state."""
    stored = await state.read(model_id)
    status = server.get_all_models_status().get(model_id, {})
    assert set(stored.versions) == set(status)
    assert stored.active == server.active_models.get(model_id)
    if status:
        assert stored.routing == server.get_routing(model_id)
        assert stored.fallback == server.get_fallback(model_id)
        assert stored.history == server.rollout_history(model_id)
    return stored


def test_the_seam_is_a_control_state() -> None:
    recording: ControlState = RecordingState()  # mypy checks the protocol here
    assert recording is not None


async def test_every_change_through_model_server_is_written_to_the_seam(
    logistic_model: Any, forest_model: Any, binary_data: Any
) -> None:
    state = RecordingState()
    rows = binary_data.X_test.to_numpy()[:4]
    async with ModelServer(state=state, entry_points=False, seed=1) as server:
        assert server.control_state is state

        async def step(change: Any) -> ModelState:
            before = state.writes()
            await change
            assert state.writes() > before, "the change was not written through the seam"
            return await stored_matches(server, state, "bc")

        deployed = await step(server.deploy_model("bc", "v1", logistic_model))
        assert deployed.versions["v1"].digest
        assert deployed.active == "v1"
        await step(server.deploy_model("bc", "v2", forest_model, set_active=False))
        await step(server.deploy_model("bc", "v3", logistic_model, set_active=False))
        await step(server.set_active_version("bc", "v2"))
        await step(server.setup_ab_test("bc", ["v1", "v2"], [0.7, 0.3]))
        await step(server.set_fallback("bc", Fallback(version="v1")))
        await step(server.set_fallback("bc", None))
        canary = await step(server.start_canary("bc", "v1", baseline="v2", min_requests=1))
        assert canary.routing.strategy == "canary"
        assert canary.step_started is not None
        assert [e.event for e in canary.history] == ["started"]

        # Traffic steps the canary forward by itself: each step is written too.
        for _ in range(40):
            if server.get_routing("bc").strategy != "canary":
                break
            await server.predict("bc", rows)
            await asyncio.sleep(0.01)
        await server._flush_changes()
        promoted = await stored_matches(server, state, "bc")
        assert "promoted" in [e.event for e in promoted.history]
        assert promoted.active == "v1"

        await step(server.blue_green_switch("bc", "v3", smoke_test=lambda *_: True))
        await step(server.blue_green_rollback("bc"))
        await step(server.set_routing("bc", RoutingConfig("active")))

        result = await server.infer("bc", rows[:1])
        await server.record_outcome("bc", result.request_id, 1.0)
        assert state.calls[-1] == ("add_outcome", "bc", (result.version, 1.0))
        outcomes = await state.outcomes("bc")
        assert outcomes[result.version].count == 1
        assert server.compare_versions("bc", "v1", "v3").a.count == (result.version == "v1")

        await step(server.retire_model("bc", "v2"))
        await step(server.retire_model("bc", "v3"))
        await step(server.retire_model("bc", "v1"))
        assert await state.model_ids() == []

    assert ("close", "", None) not in state.calls  # whoever made the state closes it


async def test_a_burst_of_changes_is_written_in_order_and_ends_in_the_last(
    logistic_model: Any,
) -> None:
    state = RecordingState()
    async with ModelServer(state=state, entry_points=False) as server:
        await server.deploy_model("m", "v1", logistic_model)
        await server.deploy_model("m", "v2", logistic_model, set_active=False)
        await asyncio.gather(
            *(server.set_active_version("m", v) for v in ["v2", "v1", "v2", "v1", "v2"])
        )
        stored = await stored_matches(server, state, "m")
        assert stored.active == "v2"
        revisions = [call[2].revision for call in state.calls if call[0] == "write"]
        assert revisions == sorted(revisions)  # each based on the one before: no conflict


def test_every_change_through_the_manager_is_written_to_the_seam(
    logistic_model: Any, forest_model: Any, binary_data: Any
) -> None:
    state = RecordingState()
    manager = ModelServingManager(state=state, entry_points=False)
    try:

        def read() -> ModelState:
            return asyncio.run(state.read("bc"))  # MemoryState reads need no loop of their own

        assert manager.deploy_model("bc", "v1", logistic_model)
        assert manager.deploy_model("bc", "v2", forest_model, set_active=False)
        assert set(read().versions) == {"v1", "v2"}
        manager.set_active_version("bc", "v2")
        assert read().active == "v2"
        manager.setup_ab_test("bc", ["v1", "v2"], [0.5, 0.5])
        assert read().routing == manager.get_routing("bc")
        manager.set_fallback("bc", Fallback(value=0.5))
        assert read().fallback == Fallback(value=0.5)
        result = manager.infer("bc", binary_data.X_test.to_numpy()[:1])
        manager.record_outcome("bc", result.request_id, 0.0)
        outcomes = asyncio.run(state.outcomes("bc"))
        assert outcomes[result.version].count == 1
        manager.set_routing("bc", RoutingConfig("active"))
        manager.retire_model("bc", "v1")
        assert set(read().versions) == {"v2"}
        assert np.isfinite(manager.predict("bc", binary_data.X_test.to_numpy()[:2])).all()
    finally:
        manager.close()
    assert state.writes() >= 7


@pytest.mark.parametrize("owned", [True, False])
async def test_a_server_closes_only_the_state_it_made(owned: bool) -> None:
    given = None if owned else RecordingState()
    server = ModelServer(state=given, entry_points=False)
    async with server:
        pass
    if given is not None:
        assert ("close", "", None) not in given.calls
