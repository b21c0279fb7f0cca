"""The ``active`` strategy, every model's default: all traffic to the active version."""

from __future__ import annotations

import random

import pytest

from turnout import InvalidRoutingError, ModelNotFoundError, Route, RouteRequest, RoutingContext
from turnout.strategies.active import ActiveRouting

CONTEXT = RoutingContext(model_id="churn", active="v2", versions=frozenset({"v1", "v2"}))


def test_every_request_goes_to_the_active_version():
    strategy = ActiveRouting({}, CONTEXT)
    draw = random.Random(0).random

    routes = {strategy.route(RouteRequest(f"user-{i}", draw, {"region": "eu"})) for i in range(100)}

    assert routes == {Route("v2")}
    assert strategy.versions() == {"v2"}


def test_without_an_active_version_routing_raises_model_not_found():
    strategy = ActiveRouting({}, RoutingContext("churn", None, frozenset({"v1"})))

    assert strategy.versions() == frozenset()
    with pytest.raises(ModelNotFoundError, match="churn") as caught:
        strategy.route(RouteRequest(None, random.Random(0).random))
    assert caught.value.model_id == "churn"


@pytest.mark.parametrize("params", [{"version": "v1"}, {"versions": ["v1"], "weights": [1]}])
def test_it_takes_no_params(params):
    with pytest.raises(InvalidRoutingError, match="no params"):
        ActiveRouting(params, CONTEXT)
