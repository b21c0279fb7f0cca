"""The ``canary`` strategy: the candidate gets the current step's share, the baseline the rest.

The plan (steps and thresholds) is validated by ``CanaryPlan.from_params``;
the strategy itself only routes by the current step's weight.
"""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from turnout import InvalidRoutingError, RouteRequest, RoutingContext
from turnout.core.routing.canary_plan import DEFAULT_STEPS, CanaryPlan
from turnout.strategies.canary import CanaryRouting

CONTEXT = RoutingContext(model_id="churn", active="v1", versions=frozenset({"v1", "v2", "v3"}))
N = 10_000
BASE = {"baseline": "v1", "candidate": "v2"}


def test_from_params_fills_in_the_defaults():
    plan = CanaryPlan.from_params(BASE, CONTEXT)

    assert plan == CanaryPlan(
        baseline="v1",
        candidate="v2",
        steps=(0.05, 0.25, 0.5, 1.0),
        step=0,
        min_requests=100,
        min_seconds=0.0,
        max_error_rate=0.05,
        max_latency_ratio=1.5,
    )
    assert plan.steps == DEFAULT_STEPS
    assert plan.weight == 0.05
    assert not plan.last_step


def test_a_plan_round_trips_through_its_params():
    params = {
        **BASE,
        "steps": [0.1, 0.5, 1],
        "step": 2,
        "min_requests": 10,
        "min_seconds": 30,
        "max_error_rate": 0.01,
        "max_latency_ratio": 2,
    }
    plan = CanaryPlan.from_params(params, CONTEXT)

    assert plan.steps == (0.1, 0.5, 1.0)
    assert plan.weight == 1.0
    assert plan.last_step
    assert CanaryPlan.from_params(plan.to_params(), CONTEXT) == plan


@pytest.mark.parametrize("step", range(len(DEFAULT_STEPS)))
def test_the_candidate_gets_the_current_steps_share(step):
    strategy = CanaryRouting({**BASE, "step": step}, CONTEXT)
    draw = random.Random(step).random

    counts = Counter(strategy.route(RouteRequest(None, draw)).primary for _ in range(N))

    assert set(counts) <= {"v1", "v2"}
    assert counts["v2"] / N == pytest.approx(DEFAULT_STEPS[step], abs=0.02)


def test_at_a_full_step_every_request_goes_to_the_candidate():
    strategy = CanaryRouting({**BASE, "steps": [0.5, 1.0], "step": 1}, CONTEXT)
    draw = random.Random(0).random

    assert {strategy.route(RouteRequest(None, draw)).primary for _ in range(1000)} == {"v2"}
    assert strategy.versions() == {"v1", "v2"}
    assert strategy.plan.candidate == "v2"


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({**BASE, "weights": [1, 1]}, id="unknown key"),
        pytest.param({"baseline": "v1"}, id="no candidate"),
        pytest.param({"candidate": "v2"}, id="no baseline"),
        pytest.param({"baseline": "v1", "candidate": "v9"}, id="undeployed candidate"),
        pytest.param({"baseline": "v1", "candidate": "v1"}, id="candidate is the baseline"),
        pytest.param({**BASE, "steps": []}, id="no steps"),
        pytest.param({**BASE, "steps": "0.5"}, id="steps a string"),
        pytest.param({**BASE, "steps": [0.5, 0.25]}, id="decreasing steps"),
        pytest.param({**BASE, "steps": [0.0, 1.0]}, id="zero step"),
        pytest.param({**BASE, "steps": [0.5, 1.5]}, id="step above one"),
        pytest.param({**BASE, "steps": [-0.5, 1.0]}, id="negative step"),
        pytest.param({**BASE, "steps": [math.nan, 1.0]}, id="NaN step"),
        pytest.param({**BASE, "steps": [True]}, id="bool step share"),
        pytest.param({**BASE, "steps": [10**400]}, id="huge int step share"),
        pytest.param({**BASE, "step": 4}, id="step past the last"),
        pytest.param({**BASE, "step": -1}, id="negative step index"),
        pytest.param({**BASE, "step": 1.0}, id="float step index"),
        pytest.param({**BASE, "step": True}, id="bool step index"),
        pytest.param({**BASE, "min_requests": 0}, id="min_requests zero"),
        pytest.param({**BASE, "min_requests": 1.5}, id="min_requests a float"),
        pytest.param({**BASE, "min_seconds": -1}, id="negative min_seconds"),
        pytest.param({**BASE, "min_seconds": math.inf}, id="infinite min_seconds"),
        pytest.param({**BASE, "max_error_rate": 1.5}, id="max_error_rate above one"),
        pytest.param({**BASE, "max_error_rate": "low"}, id="max_error_rate a string"),
        pytest.param({**BASE, "max_latency_ratio": 0}, id="max_latency_ratio zero"),
        pytest.param({**BASE, "max_latency_ratio": 10**400}, id="huge max_latency_ratio"),
    ],
)
def test_invalid_params_are_refused(params):
    with pytest.raises(InvalidRoutingError):
        CanaryPlan.from_params(params, CONTEXT)
    with pytest.raises(InvalidRoutingError):
        CanaryRouting(params, CONTEXT)
