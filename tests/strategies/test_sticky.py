"""The ``sticky`` strategy: weighted over many keys, but one key always lands on one version.

Keys are placed by weighted rendezvous hashing with BLAKE2b, so placement
depends on nothing but the key and the weights: replicas agree, and growing
one version's weight moves only the keys that must move, all of them to it.
"""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
import types
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from turnout import InvalidRoutingError, RouteRequest, RoutingContext
from turnout.strategies import sticky
from turnout.strategies.sticky import StickyRouting, key_score
from turnout.strategies.weighted import WeightedRouting

VERSIONS = ["v1", "v2", "v3", "v4"]
CONTEXT = RoutingContext(model_id="churn", active="v1", versions=frozenset(VERSIONS))
N = 10_000
KEYS = [f"user-{i}" for i in range(N)]


def placement(strategy: StickyRouting, keys: list[str], seed: int = 0) -> dict[str, str]:
    """Route each key once, with seeded draws that sticky routing must not depend on."""
    draw = random.Random(seed).random
    return {key: strategy.route(RouteRequest(key=key, random=draw)).primary for key in keys}


def test_a_key_always_lands_on_the_same_version_while_the_weights_stand():
    params = {"versions": ["v1", "v2", "v3"], "weights": [50, 30, 20]}
    strategy = StickyRouting(params, CONTEXT)
    first = placement(strategy, KEYS[:500], seed=1)

    for seed in range(2, 6):
        assert placement(strategy, KEYS[:500], seed=seed) == first
    assert placement(StickyRouting(params, CONTEXT), KEYS[:500]) == first


@pytest.mark.parametrize(
    ("versions", "weights"),
    [
        pytest.param(["v1", "v2"], [50, 50], id="50/50"),
        pytest.param(["v1", "v2"], [95, 5], id="95/5"),
        pytest.param(["v1", "v2", "v3"], [70, 20, 10], id="70/20/10"),
    ],
)
def test_distinct_keys_split_by_the_weights_within_two_points(versions, weights):
    strategy = StickyRouting({"versions": versions, "weights": weights}, CONTEXT)

    counts = Counter(placement(strategy, KEYS).values())

    for version, weight in zip(versions, weights, strict=True):
        assert counts[version] / N == pytest.approx(weight / sum(weights), abs=0.02)


def test_growing_a_weight_moves_about_the_fewest_keys_that_must_move():
    before = StickyRouting({"versions": ["v1", "v2"], "weights": [90, 10]}, CONTEXT)
    after = StickyRouting({"versions": ["v1", "v2"], "weights": [90, 50]}, CONTEXT)

    old, new = placement(before, KEYS), placement(after, KEYS)
    moved = [key for key in KEYS if old[key] != new[key]]

    assert {old[key] for key in moved} == {"v1"}
    assert {new[key] for key in moved} == {"v2"}
    # v2's share grows from 10% to 50/140: that difference, and no more, must move.
    assert len(moved) / N == pytest.approx(50 / 140 - 10 / 100, abs=0.02)


@settings(deadline=None)  # hashing hundreds of keys: slow on a loaded machine
@given(
    weights=st.lists(st.integers(min_value=0, max_value=100), min_size=2, max_size=4).filter(
        lambda weights: sum(weights) > 0
    ),
    data=st.data(),
    extra_keys=st.lists(st.text(max_size=20), max_size=30),
)
def test_when_one_weight_grows_every_key_that_moves_moves_to_it(weights, data, extra_keys):
    grown = data.draw(st.integers(min_value=0, max_value=len(weights) - 1), label="grown")
    more = data.draw(st.integers(min_value=1, max_value=500), label="more")
    versions = VERSIONS[: len(weights)]
    # The others keep their weights, so once renormalised their shares shrink.
    new_weights = [w + more if i == grown else w for i, w in enumerate(weights)]
    keys = KEYS[:200] + extra_keys

    old = placement(StickyRouting({"versions": versions, "weights": weights}, CONTEXT), keys)
    new = placement(StickyRouting({"versions": versions, "weights": new_weights}, CONTEXT), keys)

    for key in keys:
        if new[key] != old[key]:
            assert new[key] == versions[grown], f"{key!r} moved {old[key]} -> {new[key]}"


@settings(deadline=None)
@given(
    weights=st.lists(
        st.floats(min_value=0.0, max_value=1e6, allow_nan=False), min_size=2, max_size=4
    ).filter(lambda weights: sum(weights) > 0),
    keys=st.lists(st.text(max_size=30), min_size=1, max_size=50),
)
def test_replicas_built_independently_route_every_key_identically(weights, keys):
    params = {"versions": VERSIONS[: len(weights)], "weights": weights}
    replica_a = StickyRouting(dict(params), CONTEXT)
    replica_b = StickyRouting(
        dict(params), RoutingContext("churn", "v2", frozenset(reversed(VERSIONS)))
    )

    assert placement(replica_a, keys, seed=1) == placement(replica_b, keys, seed=2)


def test_placement_does_not_depend_on_the_python_hash_seed():
    # Python's hash() of a str is salted per process; a replica is another process.
    script = (
        "from turnout import RouteRequest, RoutingContext\n"
        "from turnout.strategies.sticky import StickyRouting\n"
        "ctx = RoutingContext('churn', 'v1', frozenset({'v1', 'v2', 'v3'}))\n"
        "s = StickyRouting({'versions': ['v1', 'v2', 'v3'], 'weights': [5, 3, 2]}, ctx)\n"
        "print(''.join(s.route(RouteRequest(f'user-{i}', lambda: 0.5)).primary[-1]"
        " for i in range(300)))\n"
    )
    here = StickyRouting(
        {"versions": ["v1", "v2", "v3"], "weights": [5, 3, 2]},
        RoutingContext("churn", "v1", frozenset({"v1", "v2", "v3"})),
    )
    expected = "".join(version[-1] for version in placement(here, KEYS[:300]).values())
    env = {**os.environ, "PYTHONHASHSEED": "12345"}

    run = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )

    assert run.stdout.strip() == expected


def test_a_zero_weight_version_gets_no_key():
    strategy = StickyRouting({"versions": ["v1", "v2"], "weights": [1, 0]}, CONTEXT)

    assert strategy.versions() == {"v1"}
    assert set(placement(strategy, KEYS[:1000]).values()) == {"v1"}


def test_a_request_without_a_key_is_routed_at_random_by_weight():
    params = {"versions": ["v1", "v2", "v3"], "weights": [70, 20, 10]}
    strategy = StickyRouting(params, CONTEXT)
    draw = random.Random(0).random

    routes = [strategy.route(RouteRequest(key=None, random=draw)).primary for _ in range(N)]

    counts = Counter(routes)
    for version, share in [("v1", 0.7), ("v2", 0.2), ("v3", 0.1)]:
        assert counts[version] / N == pytest.approx(share, abs=0.02)
    # Exactly as the weighted strategy would route the same draws.
    weighted, again = WeightedRouting(params, CONTEXT), random.Random(0).random
    assert routes == [weighted.route(RouteRequest(None, again)).primary for _ in range(N)]


def test_a_digest_that_rounds_to_one_still_scores(monkeypatch):
    # The largest 64-bit digests make u == 1.0 as a float, and log(1.0) == 0.
    class Top:
        def __init__(self, data: bytes, digest_size: int) -> None:
            self.digest_size = digest_size

        def digest(self) -> bytes:
            return b"\xff" * self.digest_size

    monkeypatch.setattr(sticky, "hashlib", types.SimpleNamespace(blake2b=Top))

    score = key_score("any key", "v1", 0.5)

    assert math.isfinite(score)
    assert score > 0


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"versions": ["v1", "v2"], "weights": [1, 1], "key": "x"}, id="unknown key"),
        pytest.param({"versions": ["v1", "v5"], "weights": [1, 1]}, id="undeployed version"),
        pytest.param({"versions": ["v1", "v2"], "weights": [-1, 2]}, id="negative weight"),
        pytest.param({"versions": ["v1", "v2"], "weights": [1, 2, 3]}, id="weights mismatch"),
        pytest.param({"versions": ["v1", "v2"], "weights": [0, 0]}, id="zero-sum weights"),
        pytest.param({"versions": ["v1", "v2"]}, id="no weights"),
        pytest.param({"weights": [1]}, id="no versions"),
    ],
)
def test_invalid_params_are_refused(params):
    with pytest.raises(InvalidRoutingError):
        StickyRouting(params, CONTEXT)
