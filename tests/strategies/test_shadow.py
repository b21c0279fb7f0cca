"""The ``shadow`` strategy: the primary always answers; mirrors get a copy of a fraction."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from turnout import InvalidRoutingError, Route, RouteRequest, RoutingContext
from turnout.strategies.shadow import ShadowRouting

CONTEXT = RoutingContext(model_id="churn", active="v1", versions=frozenset({"v1", "v2", "v3"}))
N = 10_000


def route_many(strategy: ShadowRouting, n: int = N, seed: int = 0) -> list[Route]:
    draw = random.Random(seed).random
    return [strategy.route(RouteRequest(key=f"user-{i}", random=draw)) for i in range(n)]


def test_the_primary_always_answers():
    strategy = ShadowRouting({"primary": "v2", "mirrors": {"v1": 0.5, "v3": 0.1}}, CONTEXT)

    assert {route.primary for route in route_many(strategy)} == {"v2"}


def test_the_primary_defaults_to_the_active_version():
    strategy = ShadowRouting({"mirrors": {"v2": 1.0}}, CONTEXT)

    assert strategy.route(RouteRequest(None, random.random)) == Route("v1", ("v2",))
    assert strategy.versions() == {"v1", "v2"}


def test_each_mirror_gets_its_fraction_of_requests_within_two_points():
    strategy = ShadowRouting({"primary": "v1", "mirrors": {"v2": 0.3, "v3": 0.05}}, CONTEXT)

    mirrored = Counter(mirror for route in route_many(strategy) for mirror in route.mirrors)

    assert mirrored["v2"] / N == pytest.approx(0.3, abs=0.02)
    assert mirrored["v3"] / N == pytest.approx(0.05, abs=0.02)


def test_a_fraction_of_one_always_mirrors():
    everything = ShadowRouting({"primary": "v1", "mirrors": {"v2": 1.0, "v3": 1}}, CONTEXT)
    mixed = ShadowRouting({"primary": "v1", "mirrors": {"v2": 1.0, "v3": 0.5}}, CONTEXT)

    assert all(route == Route("v1", ("v2", "v3")) for route in route_many(everything, n=1000))
    assert all("v2" in route.mirrors for route in route_many(mixed, n=1000))


def test_a_fraction_of_zero_never_mirrors():
    strategy = ShadowRouting({"primary": "v1", "mirrors": {"v2": 0.0, "v3": 0.5}}, CONTEXT)

    assert not any("v2" in route.mirrors for route in route_many(strategy, n=1000))
    assert strategy.versions() == {"v1", "v3"}


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"mirrors": {"v2": 1.0}, "weights": [1]}, id="unknown key"),
        pytest.param({"primary": "v9", "mirrors": {"v2": 1.0}}, id="undeployed primary"),
        pytest.param({"primary": "v1", "mirrors": {"v9": 1.0}}, id="undeployed mirror"),
        pytest.param({"primary": "v1", "mirrors": {"v1": 1.0}}, id="primary mirrors itself"),
        pytest.param({"primary": "v1"}, id="no mirrors"),
        pytest.param({"primary": "v1", "mirrors": {}}, id="empty mirrors"),
        pytest.param({"primary": "v1", "mirrors": ["v2"]}, id="mirrors a list"),
        pytest.param({"primary": "v1", "mirrors": {"v2": 1.5}}, id="fraction above one"),
        pytest.param({"primary": "v1", "mirrors": {"v2": -0.1}}, id="negative fraction"),
        pytest.param({"primary": "v1", "mirrors": {"v2": math.nan}}, id="NaN fraction"),
        pytest.param({"primary": "v1", "mirrors": {"v2": "0.5"}}, id="string fraction"),
        pytest.param({"primary": "v1", "mirrors": {"v2": True}}, id="bool fraction"),
        pytest.param({"primary": "v1", "mirrors": {"v2": 10**400}}, id="huge int fraction"),
        pytest.param({"primary": ["v1"], "mirrors": {"v2": 1.0}}, id="primary a list"),
    ],
)
def test_invalid_params_are_refused(params):
    with pytest.raises(InvalidRoutingError):
        ShadowRouting(params, CONTEXT)


def test_without_an_active_version_the_primary_must_be_named():
    no_active = RoutingContext("churn", active=None, versions=frozenset({"v1", "v2"}))

    with pytest.raises(InvalidRoutingError, match="primary"):
        ShadowRouting({"mirrors": {"v2": 1.0}}, no_active)
    assert ShadowRouting({"primary": "v1", "mirrors": {"v2": 1.0}}, no_active).versions() == {
        "v1",
        "v2",
    }
