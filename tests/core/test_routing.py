"""Routing as data (RoutingConfig), and routing a real ModelServer's traffic by it.

A refused routing change must leave the old routing serving: every test that
expects InvalidRoutingError also checks ``get_routing`` and a live prediction.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from turnout import (
    InvalidRoutingError,
    ModelNotFoundError,
    ModelServer,
    RoutingConfig,
    hookimpl,
)

ACTIVE = RoutingConfig("active")
AB_80_20 = RoutingConfig("weighted", {"versions": ["v1", "v2"], "weights": [80, 20]})

# -- RoutingConfig -----------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=15,
)


@given(
    strategy=st.text(min_size=1, max_size=20),
    params=st.dictionaries(st.text(max_size=10), json_values, max_size=5),
)
def test_a_config_round_trips_through_plain_data(strategy, params):
    config = RoutingConfig(strategy, params)

    data = config.to_dict()

    assert data == {"strategy": strategy, "params": params}
    assert json.loads(json.dumps(data)) == data
    assert RoutingConfig.from_dict(data) == config


def test_the_default_config_is_active_routing_with_no_params():
    assert RoutingConfig() == ACTIVE
    assert RoutingConfig.from_dict({"strategy": "active"}).to_dict() == {
        "strategy": "active",
        "params": {},
    }


def test_params_are_a_frozen_private_copy():
    weights = [1, 1]
    params = {"versions": ["v1", "v2"], "weights": weights}
    config = RoutingConfig("weighted", params)

    weights.append(1)
    params["extra"] = True

    assert config.to_dict()["params"] == {"versions": ["v1", "v2"], "weights": [1, 1]}
    with pytest.raises(TypeError):
        config.params["extra"] = True  # type: ignore[index]


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"weights": [math.nan, 1]}, id="NaN"),
        pytest.param({"weights": [math.inf]}, id="infinity"),
        pytest.param({"seed": -math.inf}, id="minus infinity"),
        pytest.param({"versions": {"v1", "v2"}}, id="a set"),
        pytest.param({"callback": print}, id="a function"),
        pytest.param({"data": b"bytes"}, id="bytes"),
        pytest.param({"nested": {"deep": object()}}, id="an object"),
    ],
)
def test_params_that_are_not_plain_json_are_refused(params):
    with pytest.raises(InvalidRoutingError, match="JSON"):
        RoutingConfig("weighted", params)


@pytest.mark.parametrize("params", [["versions", "v1"], "versions=v1", 3])
def test_params_must_be_a_dict(params):
    with pytest.raises(InvalidRoutingError, match="dict"):
        RoutingConfig("weighted", params)


@pytest.mark.parametrize("strategy", ["", None, 3, b"weighted"])
def test_the_strategy_must_be_a_non_empty_string(strategy):
    with pytest.raises(InvalidRoutingError, match="strategy"):
        RoutingConfig(strategy)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({"params": {}}, id="no strategy"),
        pytest.param({"strategy": "active", "params": {}, "weights": [1]}, id="unknown key"),
        pytest.param([("strategy", "active")], id="not a dict"),
        pytest.param({"strategy": "weighted", "params": {"w": math.nan}}, id="NaN param"),
    ],
)
def test_from_dict_refuses_malformed_data(data):
    with pytest.raises(InvalidRoutingError):
        RoutingConfig.from_dict(data)


# -- through a ModelServer ---------------------------------------------------------------


class RoutingLog:
    """A plugin that records every routing change the server announces."""

    def __init__(self) -> None:
        self.changes: list[tuple[str, RoutingConfig, RoutingConfig]] = []

    @hookimpl
    def routing_changed(self, model_id: str, old: RoutingConfig, new: RoutingConfig) -> None:
        self.changes.append((model_id, old, new))


@pytest.fixture
async def seeded() -> AsyncIterator[ModelServer]:
    """A server whose routing draws are repeatable."""
    async with ModelServer(seed=0, entry_points=False) as server:
        yield server


@pytest.fixture
async def bc(server: ModelServer, binary_model: Any, binary_model_v2: Any) -> ModelServer:
    """``server`` with bc:v1 (active) and bc:v2 deployed, and bc:v3 deployed then retired."""
    await server.deploy_model("bc", "v1", binary_model)
    await server.deploy_model("bc", "v2", binary_model_v2)
    await server.deploy_model("bc", "v3", binary_model_v2)
    await server.retire_model("bc", "v3")
    return server


async def served_by(server: ModelServer, rows: Any, n: int = 50, **kwargs: Any) -> Counter[str]:
    """Send ``n`` requests; count the versions that answered them."""
    return Counter([(await server.infer("bc", rows, **kwargs)).version for _ in range(n)])


async def test_a_model_starts_on_active_routing(bc, binary_data):
    assert bc.get_routing("bc") == ACTIVE
    assert await served_by(bc, binary_data.records(1)) == {"v1": 50}


@pytest.mark.parametrize(
    "config",
    [
        pytest.param(RoutingConfig("round_robin", {}), id="unknown strategy"),
        pytest.param(
            RoutingConfig("weighted", {"versions": ["v1", "v9"], "weights": [1, 1]}),
            id="unknown version",
        ),
        pytest.param(
            RoutingConfig("weighted", {"versions": ["v1", "v3"], "weights": [1, 1]}),
            id="retired version",
        ),
        pytest.param(
            RoutingConfig("weighted", {"versions": ["v1", "v2"], "weights": [1, -1]}),
            id="negative weight",
        ),
        pytest.param(
            RoutingConfig("weighted", {"versions": ["v1", "v2"], "weights": [1]}),
            id="weights not matching versions",
        ),
        pytest.param(
            RoutingConfig("weighted", {"versions": ["v1", "v2"], "weights": [0, 0]}),
            id="zero-sum weights",
        ),
        pytest.param(RoutingConfig("active", {"version": "v2"}), id="params active takes not"),
        pytest.param(RoutingConfig("shadow", {"mirrors": {"v3": 1.0}}), id="retired mirror"),
        pytest.param(RoutingConfig("canary", {"baseline": "v1", "candidate": "v3"}), id="canary"),
    ],
)
async def test_a_refused_routing_leaves_the_old_one_serving(bc, binary_data, config):
    await bc.set_routing("bc", AB_80_20)

    with pytest.raises(InvalidRoutingError):
        await bc.set_routing("bc", config)

    assert bc.get_routing("bc") == AB_80_20
    assert set(await served_by(bc, binary_data.records(1))) == {"v1", "v2"}
    assert len(await bc.predict("bc", binary_data.records(3))) == 3


async def test_set_routing_takes_only_a_routing_config(bc):
    with pytest.raises(InvalidRoutingError, match="RoutingConfig"):
        await bc.set_routing("bc", {"strategy": "active"})  # type: ignore[arg-type]
    assert bc.get_routing("bc") == ACTIVE


async def test_routing_an_unknown_model_raises_model_not_found(server):
    with pytest.raises(ModelNotFoundError):
        await server.set_routing("nope", AB_80_20)
    with pytest.raises(ModelNotFoundError):
        server.get_routing("nope")


async def test_an_ab_test_splits_traffic_by_its_weights(seeded, binary_model, binary_model_v2):
    await seeded.deploy_model("bc", "v1", binary_model)
    await seeded.deploy_model("bc", "v2", binary_model_v2)
    rows = [[0.0] * 30]

    await seeded.setup_ab_test("bc", ["v1", "v2"], [50, 50])
    counts = await served_by(seeded, rows, n=2000)

    assert seeded.get_routing("bc") == RoutingConfig(
        "weighted", {"versions": ["v1", "v2"], "weights": [50, 50]}
    )
    assert counts["v1"] / 2000 == pytest.approx(0.5, abs=0.04)
    assert counts["v1"] + counts["v2"] == 2000


async def test_an_ab_test_with_bad_weights_is_refused(bc, binary_data):
    with pytest.raises(InvalidRoutingError):
        await bc.setup_ab_test("bc", ["v1", "v2"], [50, 50, 0])
    assert bc.get_routing("bc") == ACTIVE


async def test_a_pinned_version_bypasses_the_routing(bc, binary_data):
    await bc.setup_ab_test("bc", ["v1", "v2"], [50, 50])

    assert await served_by(bc, binary_data.records(1), version="v2") == {"v2": 50}


async def test_a_key_keeps_a_caller_on_one_version_under_sticky_routing(bc, binary_data):
    sticky = RoutingConfig("sticky", {"versions": ["v1", "v2"], "weights": [50, 50]})
    await bc.set_routing("bc", sticky)
    rows = binary_data.records(1)

    for user in ("alice", "bob", "carol", "dave"):
        assert len(await served_by(bc, rows, n=10, key=user)) == 1
    assert len(await served_by(bc, rows, n=100)) == 2  # no key: random by weight


async def test_set_active_version_ends_an_ab_test(bc, binary_data):
    await bc.setup_ab_test("bc", ["v1", "v2"], [50, 50])

    await bc.set_active_version("bc", "v2")

    assert bc.get_routing("bc") == ACTIVE
    assert bc.active_models["bc"] == "v2"
    assert await served_by(bc, binary_data.records(1)) == {"v2": 50}


async def test_a_version_that_the_routing_sends_traffic_to_cannot_be_retired(bc, binary_data):
    await bc.setup_ab_test("bc", ["v1", "v2"], [50, 50])

    with pytest.raises(InvalidRoutingError, match="change the routing"):
        await bc.retire_model("bc", "v2")

    assert bc.get_deployment("bc", "v2").version == "v2"
    assert bc.get_routing("bc") == RoutingConfig(
        "weighted", {"versions": ["v1", "v2"], "weights": [50, 50]}
    )
    assert set(await served_by(bc, binary_data.records(1))) == {"v1", "v2"}

    await bc.set_active_version("bc", "v1")  # the test is over: now v2 can go
    await bc.retire_model("bc", "v2")


async def test_routing_changes_are_announced_once_each(binary_model, binary_model_v2):
    log = RoutingLog()
    zero_for_v2 = RoutingConfig("weighted", {"versions": ["v1", "v2"], "weights": [1, 0]})
    async with ModelServer(plugins=[log], entry_points=False) as server:
        await server.deploy_model("bc", "v1", binary_model)
        await server.deploy_model("bc", "v2", binary_model_v2)

        await server.set_routing("bc", AB_80_20)
        await server.set_routing("bc", AB_80_20)  # no change, no event
        with pytest.raises(InvalidRoutingError):
            await server.set_routing("bc", RoutingConfig("round_robin"))
        await server.set_active_version("bc", "v2")  # ends the A/B test
        await server.set_active_version("bc", "v1")  # already on active routing
        await server.set_routing("bc", zero_for_v2)
        # v2 gets no traffic, so it may go; the routing that names it falls back to active.
        await server.retire_model("bc", "v2")

    assert log.changes == [
        ("bc", ACTIVE, AB_80_20),
        ("bc", AB_80_20, ACTIVE),
        ("bc", ACTIVE, zero_for_v2),
        ("bc", zero_for_v2, ACTIVE),
    ]
