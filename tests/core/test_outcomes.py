"""Outcome feedback: request ids, record_outcome, compare_versions, and the bandit learning.

Outcomes are simulated with seeded generators; the statistics are checked
against SciPy computed independently on the same numbers.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np
import pytest
from scipy import stats

from turnout import (
    ABComparison,
    InvalidInputError,
    ModelNotFoundError,
    ModelServer,
    RoutingConfig,
    VersionNotFoundError,
)
from turnout.core.routing.outcomes import OutcomeStatistics, OutcomeTracker, compare


@pytest.fixture
async def server() -> Any:
    """A seeded server, so the A/B split repeats (shadows conftest's ``server``)."""
    async with ModelServer(seed=2) as server:
        yield server


@pytest.fixture
async def ab(server, binary_model, binary_model_v2) -> ModelServer:
    """bc:v1 and bc:v2 in a 50/50 A/B test."""
    await server.deploy_model("bc", "v1", binary_model)
    await server.deploy_model("bc", "v2", binary_model_v2)
    await server.setup_ab_test("bc", ["v1", "v2"], [0.5, 0.5])
    return server


async def simulate(
    server: ModelServer, rows: list[dict[str, float]], draw: dict[str, Any], n: int
) -> dict[str, list[float]]:
    """Serve ``n`` requests and record ``draw[version]()`` as each one's outcome."""
    recorded: dict[str, list[float]] = {"v1": [], "v2": []}
    for i in range(n):
        result = await server.infer("bc", [rows[i % len(rows)]])
        outcome = draw[result.version]()
        assert await server.record_outcome("bc", result.request_id, outcome) == result.version
        recorded[result.version].append(float(outcome))
    return recorded


# -- request ids and record_outcome -------------------------------------------------------------


async def test_infer_returns_a_request_id_and_record_outcome_the_version_that_served(
    ab, binary_data
):
    results = [await ab.infer("bc", binary_data.records(3)) for _ in range(40)]
    ids = [r.request_id for r in results]
    assert all(isinstance(i, str) and i for i in ids)
    assert len(set(ids)) == 40  # one id per request, however many rows it has
    assert {r.version for r in results} == {"v1", "v2"}

    for result in results:
        assert await ab.record_outcome("bc", result.request_id, 1.0) == result.version

    # A pinned version is what record_outcome reports, whatever the routing.
    pinned = await ab.infer("bc", binary_data.records(1), version="v2")
    assert await ab.record_outcome("bc", pinned.request_id, 0) == "v2"


async def test_outcomes_may_be_ints_floats_or_bools(ab, binary_data):
    for outcome in (0, 1, 2.5, -3, True, False):
        result = await ab.infer("bc", binary_data.records(1), version="v1")
        assert await ab.record_outcome("bc", result.request_id, outcome) == "v1"
    comparison = ab.compare_versions("bc", "v1", "v2")
    assert comparison.a.count == 6
    assert comparison.a.mean == pytest.approx((0 + 1 + 2.5 - 3 + 1 + 0) / 6)


async def test_unknown_and_duplicate_request_ids_are_refused(ab, binary_data):
    result = await ab.infer("bc", binary_data.records(1))
    with pytest.raises(InvalidInputError, match="unknown request id 'nope'"):
        await ab.record_outcome("bc", "nope", 1.0)
    with pytest.raises(InvalidInputError, match="request_id must be a string"):
        await ab.record_outcome("bc", 7, 1.0)  # type: ignore[arg-type]

    await ab.record_outcome("bc", result.request_id, 1.0)
    with pytest.raises(InvalidInputError, match="already has an outcome"):
        await ab.record_outcome("bc", result.request_id, 0.0)
    assert (
        ab.compare_versions("bc", "v1", "v2").a.count
        + (ab.compare_versions("bc", "v1", "v2").b.count)
        == 1
    )


@pytest.mark.parametrize(
    "outcome",
    [math.nan, math.inf, -math.inf, "1", None, [1.0], np.array([1.0]), 10**400],
    ids=["nan", "inf", "-inf", "str", "none", "list", "array", "huge-int"],
)
async def test_non_numeric_and_non_finite_outcomes_are_refused_and_the_id_kept(
    ab, binary_data, outcome
):
    result = await ab.infer("bc", binary_data.records(1))
    with pytest.raises(InvalidInputError, match="outcome must be a finite number"):
        await ab.record_outcome("bc", result.request_id, outcome)
    # A refused outcome used nothing up: the request can still get a good one.
    assert await ab.record_outcome("bc", result.request_id, 1.0) == result.version


async def test_record_outcome_and_compare_versions_need_a_known_model_and_versions(ab):
    with pytest.raises(ModelNotFoundError):
        await ab.record_outcome("nope", "id", 1.0)
    with pytest.raises(VersionNotFoundError):
        ab.compare_versions("bc", "v1", "v9")


# -- compare_versions -------------------------------------------------------------------------


async def test_binary_outcomes_get_a_two_proportion_z_test(ab, binary_data):
    rng = np.random.default_rng(0)
    rates = {"v1": 0.3, "v2": 0.5}
    draw = {v: (lambda p=p: int(rng.random() < p)) for v, p in rates.items()}
    recorded = await simulate(ab, binary_data.records(), draw, 600)

    comparison = ab.compare_versions("bc", "v1", "v2")

    assert isinstance(comparison, ABComparison)
    assert comparison.test == "two-proportion z-test"
    a, b = (np.array(recorded[v]) for v in ("v1", "v2"))
    assert (comparison.a.count, comparison.b.count) == (len(a), len(b))
    assert comparison.a.binary
    assert comparison.b.binary
    assert comparison.a.mean == pytest.approx(a.mean())
    assert comparison.difference == pytest.approx(b.mean() - a.mean())
    # The z-test is the chi-squared test of the 2x2 table without continuity correction.
    table = [[a.sum(), len(a) - a.sum()], [b.sum(), len(b) - b.sum()]]
    expected_p = stats.chi2_contingency(table, correction=False).pvalue
    assert comparison.p_value == pytest.approx(expected_p, rel=1e-9)
    assert comparison.significant
    assert comparison.verdict.startswith("v2 has the higher mean outcome (v2 - v1 = +")


@pytest.mark.parametrize(("shift", "significant"), [(0.2, False), (1.5, True)])
async def test_continuous_outcomes_get_welchs_t_test(ab, binary_data, shift, significant):
    rng = np.random.default_rng(1)
    # Unequal spreads, as Welch's test allows.
    draw = {"v1": lambda: rng.normal(10.0, 1.0), "v2": lambda: rng.normal(10 + shift, 3.0)}
    recorded = await simulate(ab, binary_data.records(), draw, 300)

    comparison = ab.compare_versions("bc", "v1", "v2")

    assert comparison.test == "Welch's t-test"
    a, b = (np.array(recorded[v]) for v in ("v1", "v2"))
    assert not comparison.a.binary
    assert comparison.a.std == pytest.approx(a.std(ddof=1), rel=1e-9)
    assert comparison.b.std == pytest.approx(b.std(ddof=1), rel=1e-9)
    expected_p = stats.ttest_ind(a, b, equal_var=False).pvalue
    assert comparison.p_value == pytest.approx(expected_p, rel=1e-9)
    assert comparison.significant is significant
    difference = b.mean() - a.mean()
    if significant:
        assert comparison.verdict == (
            f"v2 has the higher mean outcome (v2 - v1 = {difference:+.4g},"
            f" p={expected_p:.3g} < 0.05)"
        )
    else:
        # The small difference is lost in v2's spread; the verdict says how many
        # outcomes would show it (80% power at the 5% level).
        z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
        needed = math.ceil(z**2 * (a.var(ddof=1) + b.var(ddof=1)) / difference**2)
        assert comparison.needed_per_version == needed
        assert comparison.verdict == (
            f"no significant difference yet ({difference:+.4g}, p={expected_p:.3g})"
            f" with {len(a)} and {len(b)} outcomes; about {needed} outcomes per version would"
            " detect it"
        )


async def test_not_enough_outcomes_says_so(ab, binary_data):
    assert "not enough outcomes yet (v1: 0, v2: 0)" in ab.compare_versions("bc", "v1", "v2").verdict

    for version, outcome in (("v1", 1.0), ("v1", 0.0), ("v2", 1.0)):
        result = await ab.infer("bc", binary_data.records(1), version=version)
        await ab.record_outcome("bc", result.request_id, outcome)

    comparison = ab.compare_versions("bc", "v1", "v2")
    assert comparison.p_value is None
    assert not comparison.significant
    assert comparison.verdict == (
        "not enough outcomes yet (v1: 2, v2: 1); record at least 2 per version"
    )


# -- the bandit learns from record_outcome -------------------------------------------------------


async def test_bandit_routing_sends_most_traffic_to_the_better_version(ab, binary_data):
    await ab.set_routing(
        "bc",
        RoutingConfig("bandit", {"versions": ["v1", "v2"], "algorithm": "thompson", "seed": 3}),
    )
    rng = np.random.default_rng(4)
    rates = {"v1": 0.3, "v2": 0.7}
    rows = binary_data.records()
    served: list[str] = []
    for i in range(400):
        result = await ab.infer("bc", [rows[i % len(rows)]])
        reward = float(rng.random() < rates[result.version])
        assert await ab.record_outcome("bc", result.request_id, reward) == result.version
        served.append(result.version)

    assert Counter(served[:20]).keys() == {"v1", "v2"}  # it explored both
    late = Counter(served[-200:])
    assert late["v2"] / 200 > 0.85
    # The same outcomes feed compare_versions.
    comparison = ab.compare_versions("bc", "v1", "v2")
    assert comparison.a.count + comparison.b.count == 400
    assert comparison.difference > 0


async def test_epsilon_greedy_bandit_also_learns(ab, binary_data):
    params = {"versions": ["v1", "v2"], "algorithm": "epsilon_greedy", "epsilon": 0.1, "seed": 1}
    await ab.set_routing("bc", RoutingConfig("bandit", params))
    rows = binary_data.records(1)
    served: list[str] = []
    for _ in range(300):
        result = await ab.infer("bc", rows)
        await ab.record_outcome("bc", result.request_id, 1.0 if result.version == "v1" else 0.0)
        served.append(result.version)
    assert Counter(served[-150:])["v1"] / 150 > 0.8


async def test_a_bandit_refuses_rewards_outside_0_to_1_and_keeps_the_id(ab, binary_data):
    await ab.set_routing("bc", RoutingConfig("bandit", {"versions": ["v1", "v2"], "seed": 0}))
    result = await ab.infer("bc", binary_data.records(1))
    with pytest.raises(InvalidInputError, match=r"reward must be in \[0, 1\]"):
        await ab.record_outcome("bc", result.request_id, 2.0)
    assert await ab.record_outcome("bc", result.request_id, 1.0) == result.version


# -- OutcomeTracker and compare, as units ----------------------------------------------------------


def test_the_tracker_forgets_the_oldest_requests_beyond_its_capacity():
    tracker = OutcomeTracker(capacity=3)
    ids = [tracker.new_request(f"v{i}") for i in range(5)]

    for evicted in ids[:2]:
        with pytest.raises(InvalidInputError, match="older than the last 3 requests"):
            tracker.version_of(evicted)
        with pytest.raises(InvalidInputError, match="unknown request id"):
            tracker.record(evicted, 1.0)
    assert [tracker.version_of(i) for i in ids[2:]] == ["v2", "v3", "v4"]


def test_the_tracker_knows_the_last_requests_whether_answered_or_not():
    tracker = OutcomeTracker(capacity=2)
    a, b = tracker.new_request("v1"), tracker.new_request("v2")
    assert tracker.record(a, 1.0) == "v1"
    with pytest.raises(InvalidInputError, match="already has an outcome"):
        tracker.version_of(a)
    c = tracker.new_request("v1")  # takes a's place: a was the oldest
    assert (tracker.version_of(b), tracker.version_of(c)) == ("v2", "v1")
    d = tracker.new_request("v2")  # now b, the oldest, is forgotten
    with pytest.raises(InvalidInputError):
        tracker.version_of(b)
    assert (tracker.version_of(c), tracker.version_of(d)) == ("v1", "v2")
    # Evicting ids forgets no outcome already recorded.
    assert tracker.statistics("v1").count == 1


def test_an_own_id_altered_in_any_part_is_unknown():
    tracker = OutcomeTracker(model_id="m")
    issued = tracker.new_request("v1")
    model, version, token = issued.split("~")
    number = token.rsplit("-", 1)[1]
    for altered in (
        f"{model}~v2~{token}",  # another version than the one that served
        f"{model}~{version}~{token[: -len(number)]}0{number}",  # a leading zero
        f"{model}~{version}~{token[: -len(number)]}{int(number) + 1}",  # not issued yet
        f"{model}~{version}~{token[: -len(number)]}x",
    ):
        with pytest.raises(InvalidInputError, match="unknown request id"):
            tracker.version_of(altered)
        tracker.forget(altered)
    assert tracker.version_of(issued) == "v1"  # forgetting the altered ones left it alone


def test_request_ids_are_unique_across_trackers():
    first, second = OutcomeTracker(model_id="m"), OutcomeTracker(model_id="m")
    assert first.new_request("v1") != second.new_request("v1")


def test_an_id_another_server_issued_for_the_model_is_attributed_by_its_version():
    # Two servers sharing the control state: an outcome may reach either one.
    first, second = OutcomeTracker(model_id="m"), OutcomeTracker(model_id="m")
    assert second.record(first.new_request("v2"), 1.0) == "v2"
    with pytest.raises(InvalidInputError):  # an id of another model's
        second.version_of(OutcomeTracker(model_id="other").new_request("v1"))
    with pytest.raises(InvalidInputError):  # and not one at all
        second.version_of("not-an-id")
    own = second.new_request("v1")
    assert second.record(own, 0.0) == "v1"
    with pytest.raises(InvalidInputError, match="already has an outcome"):
        second.record(own, 1.0)  # its own ids it answers once


def test_tracker_statistics():
    tracker = OutcomeTracker()
    for value in (1.0, 0.0, 1.0, 1.0):
        tracker.record(tracker.new_request("bin"), value)
    for value in (1.0, 0.5):
        tracker.record(tracker.new_request("mixed"), value)
    assert tracker.statistics("bin") == OutcomeStatistics(
        "bin", 4, 0.75, pytest.approx(np.std([1, 0, 1, 1], ddof=1)), True
    )
    assert not tracker.statistics("mixed").binary
    assert tracker.statistics("none") == OutcomeStatistics("none", 0, 0.0, 0.0, False)


def test_a_small_spread_around_a_large_mean_keeps_its_variance():
    # Sums of values and of squares cancel catastrophically here; Welford's update does not.
    rng = np.random.default_rng(9)
    a = 1e9 + rng.normal(0.0, 1.0, 400)
    b = 1e9 + 0.5 + rng.normal(0.0, 1.0, 400)
    tracker = OutcomeTracker()
    for version, values in (("a", a), ("b", b)):
        for value in values:
            tracker.record(tracker.new_request(version), float(value))

    sa, sb = tracker.statistics("a"), tracker.statistics("b")
    assert sa.std == pytest.approx(a.std(ddof=1), rel=1e-5)
    assert sb.mean == pytest.approx(b.mean(), abs=1e-5)
    comparison = compare(sa, sb)
    assert comparison.p_value == pytest.approx(
        stats.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-3
    )


def test_identical_outcomes_are_no_difference():
    ones = OutcomeStatistics("a", 50, 1.0, 0.0, True)
    comparison = compare(ones, OutcomeStatistics("b", 50, 1.0, 0.0, True))
    assert (comparison.p_value, comparison.significant) == (1.0, False)
    assert comparison.needed_per_version is None
    constant = compare(
        OutcomeStatistics("a", 5, 2.0, 0.0, False), OutcomeStatistics("b", 5, 2.0, 0.0, False)
    )
    assert (constant.test, constant.p_value) == ("Welch's t-test", 1.0)


@pytest.mark.parametrize("outcome", [1e200, -1e151])
def test_an_outcome_whose_square_would_overflow_is_refused_and_the_id_kept(outcome):
    tracker = OutcomeTracker()
    request = tracker.new_request("v1")
    with pytest.raises(InvalidInputError, match="within"):
        tracker.record(request, outcome)
    assert tracker.record(request, 1e150) == "v1"
