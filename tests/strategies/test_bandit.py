"""The ``bandit`` strategy: traffic shifts toward the version whose outcomes are best.

The bandit draws from its own generator, seeded by the ``seed`` param, so a
seeded bandit is repeatable; the RouteRequest's draws are not used.
"""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from turnout import InvalidInputError, InvalidRoutingError, RouteRequest, RoutingContext
from turnout.core.routing.outcomes import OutcomeTotals
from turnout.strategies.bandit import BanditRouting

CONTEXT = RoutingContext(model_id="churn", active="v1", versions=frozenset({"v1", "v2", "v3"}))
# The chance that a request served by each version ends in a success (reward 1).
SUCCESS_RATE = {"v1": 0.2, "v2": 0.8, "v3": 0.4}


def serve(bandit: BanditRouting, rounds: int, world: random.Random) -> Counter[str]:
    """Route ``rounds`` requests and feed each one's 0/1 reward back; count where they went."""
    draw = random.Random(0).random
    served: Counter[str] = Counter()
    for _ in range(rounds):
        version = bandit.route(RouteRequest(key=None, random=draw)).primary
        served[version] += 1
        bandit.record_outcome(version, 1.0 if world.random() < SUCCESS_RATE[version] else 0.0)
    return served


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"algorithm": "thompson"}, id="thompson"),
        pytest.param({"algorithm": "epsilon_greedy", "epsilon": 0.1}, id="epsilon-greedy"),
    ],
)
def test_after_a_few_hundred_outcomes_most_traffic_goes_to_the_best_version(params):
    bandit = BanditRouting({"versions": ["v1", "v2", "v3"], "seed": 42, **params}, CONTEXT)
    world = random.Random(1)

    serve(bandit, 300, world)
    later = serve(bandit, 1000, world)

    assert later["v2"] / 1000 > 0.8
    alpha, beta = bandit.posteriors()["v2"]
    assert alpha / (alpha + beta) == pytest.approx(0.8, abs=0.05)


def test_thompson_sampling_splits_evenly_before_any_outcome():
    bandit = BanditRouting({"versions": ["v1", "v2"], "seed": 0}, CONTEXT)
    draw = random.Random(0).random

    counts = Counter(bandit.route(RouteRequest(None, draw)).primary for _ in range(4000))

    assert counts["v1"] / 4000 == pytest.approx(0.5, abs=0.03)


def test_a_seeded_bandit_is_repeatable():
    params = {"versions": ["v1", "v2", "v3"], "seed": 7}
    one, two = BanditRouting(params, CONTEXT), BanditRouting(params, CONTEXT)

    assert serve(one, 200, random.Random(3)) == serve(two, 200, random.Random(3))
    assert one.posteriors() == two.posteriors()


def test_rewards_update_the_beta_posterior():
    bandit = BanditRouting({"versions": ["v1", "v2"]}, CONTEXT)

    bandit.record_outcome("v1", 1.0)
    bandit.record_outcome("v1", 0.25)
    bandit.record_outcome("v2", 0)
    bandit.record_outcome("v2", True)  # a bool is a success or a failure

    assert bandit.posteriors() == {"v1": (2.25, 1.75), "v2": (2.0, 2.0)}


def test_an_outcome_for_a_version_outside_the_bandit_is_ignored():
    # A request pinned with predict(version=...) may have been served by any version.
    bandit = BanditRouting({"versions": ["v1", "v2"]}, CONTEXT)

    bandit.record_outcome("v3", 1.0)

    assert bandit.posteriors() == {"v1": (1.0, 1.0), "v2": (1.0, 1.0)}


@pytest.mark.parametrize(
    "reward",
    [-0.1, 1.01, 2, math.nan, math.inf, pytest.param(10**400, id="huge int"), "1", None],
)
def test_a_reward_outside_zero_to_one_is_refused_and_changes_nothing(reward):
    bandit = BanditRouting({"versions": ["v1", "v2"]}, CONTEXT)

    with pytest.raises(InvalidInputError, match=r"\[0, 1\]"):
        bandit.record_outcome("v1", reward)
    assert bandit.posteriors() == {"v1": (1.0, 1.0), "v2": (1.0, 1.0)}


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"versions": ["v1", "v2"], "weights": [1, 1]}, id="unknown key"),
        pytest.param({}, id="no versions"),
        pytest.param({"versions": ["v1", "v9"]}, id="undeployed version"),
        pytest.param({"versions": ["v1", "v1"]}, id="repeated version"),
        pytest.param({"versions": ["v1", "v2"], "algorithm": "ucb"}, id="unknown algorithm"),
        pytest.param({"versions": ["v1", "v2"], "epsilon": -0.1}, id="negative epsilon"),
        pytest.param({"versions": ["v1", "v2"], "epsilon": 1.5}, id="epsilon above one"),
        pytest.param({"versions": ["v1", "v2"], "epsilon": math.nan}, id="NaN epsilon"),
        pytest.param({"versions": ["v1", "v2"], "epsilon": "0.1"}, id="string epsilon"),
        pytest.param({"versions": ["v1", "v2"], "epsilon": True}, id="bool epsilon"),
        pytest.param({"versions": ["v1", "v2"], "seed": "42"}, id="string seed"),
        pytest.param({"versions": ["v1", "v2"], "seed": 4.2}, id="float seed"),
        pytest.param({"versions": ["v1", "v2"], "seed": True}, id="bool seed"),
    ],
)
def test_invalid_params_are_refused(params):
    with pytest.raises(InvalidRoutingError):
        BanditRouting(params, CONTEXT)


@given(st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=200))
def test_the_fleets_totals_give_the_posterior_the_rewards_themselves_give(rewards):
    # Every server hands its bandit the shared totals: they must say what the rewards say.
    learned = BanditRouting({"versions": ["v1", "v2"]}, CONTEXT)
    adopted = BanditRouting({"versions": ["v1", "v2"]}, CONTEXT)
    totals = OutcomeTotals()
    for reward in rewards:
        learned.record_outcome("v1", reward)
        totals = totals.add(reward)

    adopted.adopt_outcomes("v1", totals)

    alpha, beta = adopted.posteriors()["v1"]
    assert (alpha, beta) == pytest.approx(learned.posteriors()["v1"], rel=1e-9, abs=1e-9)
    assert alpha >= 1.0
    assert beta >= 1.0
    assert adopted.posteriors()["v2"] == (1.0, 1.0)


def test_totals_of_outcomes_other_than_rewards_are_not_learned(caplog):
    # Revenue recorded for v1 under a weighted test before it joined the bandit.
    bandit = BanditRouting({"versions": ["v1", "v2"]}, CONTEXT)
    bandit.record_outcome("v1", 1.0)
    revenue = OutcomeTotals().add(120.0).add(80.0)

    bandit.adopt_outcomes("v1", revenue)
    bandit.adopt_outcomes("v1", revenue)

    assert bandit.posteriors()["v1"] == (2.0, 1.0)
    warnings = [r for r in caplog.records if "not all rewards in [0, 1]" in r.getMessage()]
    assert len(warnings) == 1
