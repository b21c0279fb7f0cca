"""The ``blue_green`` strategy: everything to the live colour; the other one waits for rollback."""

from __future__ import annotations

import random

import pytest

from turnout import InvalidRoutingError, Route, RouteRequest, RoutingContext
from turnout.strategies.blue_green import BlueGreenRouting

CONTEXT = RoutingContext(model_id="churn", active="v1", versions=frozenset({"v1", "v2", "v3"}))


def routes(strategy: BlueGreenRouting, n: int = 1000) -> set[Route]:
    draw = random.Random(0).random
    return {strategy.route(RouteRequest(f"user-{i}", draw, {"region": "eu"})) for i in range(n)}


def test_blue_is_live_unless_green_is_named():
    strategy = BlueGreenRouting({"blue": "v1", "green": "v2"}, CONTEXT)

    assert routes(strategy) == {Route("v1")}
    assert strategy.live == "blue"


def test_every_request_goes_to_the_live_colour():
    strategy = BlueGreenRouting({"blue": "v1", "green": "v2", "live": "green"}, CONTEXT)

    assert routes(strategy) == {Route("v2")}


def test_both_colours_stay_among_its_versions_for_a_rollback():
    strategy = BlueGreenRouting({"blue": "v1", "green": "v2", "live": "green"}, CONTEXT)

    assert strategy.versions() == {"v1", "v2"}
    assert (strategy.blue, strategy.green) == ("v1", "v2")


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"blue": "v1", "green": "v2", "weights": [1]}, id="unknown key"),
        pytest.param({"blue": "v1"}, id="no green"),
        pytest.param({"green": "v2"}, id="no blue"),
        pytest.param({"blue": "v1", "green": "v9"}, id="undeployed green"),
        pytest.param({"blue": "v1", "green": "v1"}, id="one version both colours"),
        pytest.param({"blue": "v1", "green": "v2", "live": "red"}, id="unknown colour"),
        pytest.param({"blue": "v1", "green": "v2", "live": "v2"}, id="live names a version"),
        pytest.param({"blue": "v1", "green": "v2", "live": None}, id="live null"),
    ],
)
def test_invalid_params_are_refused(params):
    with pytest.raises(InvalidRoutingError):
        BlueGreenRouting(params, CONTEXT)
