"""The ``weighted`` strategy: each request goes to a version drawn at random by weight (A/B tests).

Strategies are built straight from their params and a RoutingContext, and
routed with a seeded ``random.Random(seed).random`` inside each RouteRequest,
exactly as the server's Router does for every request.
"""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
from scipy.stats import chisquare

from turnout import InvalidRoutingError, RouteRequest, RoutingContext
from turnout.strategies.weighted import WeightedRouting

CONTEXT = RoutingContext(model_id="churn", active="v1", versions=frozenset({"v1", "v2", "v3"}))
N = 10_000

SPLITS = [
    pytest.param(["v1", "v2"], [50, 50], id="50/50"),
    pytest.param(["v1", "v2"], [95, 5], id="95/5"),
    pytest.param(["v1", "v2", "v3"], [70, 20, 10], id="70/20/10"),
]


def route_many(strategy: WeightedRouting, n: int = N, seed: int = 0) -> Counter[str]:
    """Route ``n`` keyless requests with seeded draws; count each version's requests."""
    draw = random.Random(seed).random
    return Counter(strategy.route(RouteRequest(key=None, random=draw)).primary for _ in range(n))


@pytest.mark.parametrize(("versions", "weights"), SPLITS)
def test_each_version_gets_its_weight_share_within_two_points(versions, weights):
    strategy = WeightedRouting({"versions": versions, "weights": weights}, CONTEXT)

    counts = route_many(strategy)

    assert set(counts) == set(versions)
    for version, weight in zip(versions, weights, strict=True):
        assert counts[version] / N == pytest.approx(weight / sum(weights), abs=0.02)


@pytest.mark.parametrize(("versions", "weights"), SPLITS)
def test_the_split_passes_a_chi_square_goodness_of_fit_test(versions, weights):
    strategy = WeightedRouting({"versions": versions, "weights": weights}, CONTEXT)

    counts = route_many(strategy, seed=20240607)

    observed = [counts[version] for version in versions]
    expected = [N * weight / sum(weights) for weight in weights]
    assert chisquare(observed, expected).pvalue > 0.001


def test_weights_are_normalised_so_only_their_ratio_matters():
    percent = WeightedRouting({"versions": ["v1", "v2"], "weights": [90, 10]}, CONTEXT)
    fraction = WeightedRouting({"versions": ["v1", "v2"], "weights": [0.9, 0.1]}, CONTEXT)

    assert route_many(percent, n=1000, seed=3) == route_many(fraction, n=1000, seed=3)


def test_the_same_draws_route_alike_on_every_replica():
    params = {"versions": ["v1", "v2", "v3"], "weights": [1, 2, 3]}
    one, two = WeightedRouting(params, CONTEXT), WeightedRouting(params, CONTEXT)
    draws_one, draws_two = random.Random(7).random, random.Random(7).random

    for _ in range(1000):
        assert one.route(RouteRequest(None, draws_one)) == two.route(RouteRequest(None, draws_two))


def test_a_zero_weight_version_gets_no_traffic_and_is_not_among_its_versions():
    strategy = WeightedRouting({"versions": ["v1", "v2", "v3"], "weights": [1, 0, 1]}, CONTEXT)

    assert strategy.versions() == {"v1", "v3"}
    assert "v2" not in route_many(strategy)


@pytest.mark.parametrize("draw", [0.0, 0.5, math.nextafter(1.0, 0.0)])
def test_a_draw_at_either_edge_never_lands_on_a_zero_weight_version(draw):
    # 0.7 + 0.05 normalised adds up to 0.9999999999999999, not 1: the largest
    # draw random() can return used to fall through to the trailing v3.
    strategy = WeightedRouting({"versions": ["v1", "v2", "v3"], "weights": [0.7, 0.05, 0]}, CONTEXT)
    assert strategy.route(RouteRequest(None, lambda: draw)).primary in {"v1", "v2"}

    leading_zero = WeightedRouting({"versions": ["v1", "v2"], "weights": [0, 1]}, CONTEXT)
    assert leading_zero.route(RouteRequest(None, lambda: draw)).primary == "v2"


def test_weighted_routes_never_mirror():
    strategy = WeightedRouting({"versions": ["v1", "v2"], "weights": [1, 1]}, CONTEXT)
    draw = random.Random(0).random

    assert all(strategy.route(RouteRequest(None, draw)).mirrors == () for _ in range(100))


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({}, id="no versions"),
        pytest.param({"versions": ["v1", "v2"]}, id="no weights"),
        pytest.param({"versions": ["v1", "v2"], "weights": [1, 1], "seed": 1}, id="unknown key"),
        pytest.param({"versions": ["v1", "v9"], "weights": [1, 1]}, id="unknown version"),
        pytest.param({"versions": ["v1", "v1"], "weights": [1, 1]}, id="repeated version"),
        pytest.param({"versions": [], "weights": []}, id="no version listed"),
        pytest.param({"versions": "v1", "weights": [1]}, id="versions a string"),
        pytest.param({"versions": ["v1", 2], "weights": [1, 1]}, id="version not a string"),
        pytest.param({"versions": ["v1", "v2"], "weights": [1, -1]}, id="negative weight"),
        pytest.param({"versions": ["v1", "v2"], "weights": [1]}, id="too few weights"),
        pytest.param({"versions": ["v1", "v2"], "weights": [1, 1, 1]}, id="too many weights"),
        pytest.param({"versions": ["v1", "v2"], "weights": [0, 0]}, id="zero-sum weights"),
        pytest.param({"versions": ["v1", "v2"], "weights": [math.nan, 1]}, id="NaN weight"),
        pytest.param({"versions": ["v1", "v2"], "weights": [math.inf, 1]}, id="infinite weight"),
        pytest.param({"versions": ["v1", "v2"], "weights": [True, 1]}, id="bool weight"),
        pytest.param({"versions": ["v1", "v2"], "weights": ["1", 1]}, id="string weight"),
        pytest.param({"versions": ["v1", "v2"], "weights": {"v1": 1}}, id="weights a dict"),
        pytest.param({"versions": ["v1", "v2"], "weights": [10**400, 1]}, id="huge int weight"),
        pytest.param({"versions": ["v1", "v2"], "weights": [1e308, 1e308]}, id="sum overflows"),
    ],
)
def test_invalid_params_are_refused(params):
    with pytest.raises(InvalidRoutingError):
        WeightedRouting(params, CONTEXT)
