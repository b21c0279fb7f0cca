"""Breaker policies: when a closed circuit breaker trips.

The built-ins (``error_rate``, the default; ``consecutive_failures``;
``slow_calls``) register through the ``register_breaker_policies`` hook
exactly as a third-party policy does, and ``BreakerConfig(policy=name,
params=...)`` picks one per deployment. A policy sees executions (batches),
each as ``record(failed, duration, now)``, and answers ``should_trip(now)``
with a reason or None.
"""

from __future__ import annotations

import math
import types
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import pytest

from turnout import (
    BreakerConfig,
    BreakerState,
    CircuitOpenError,
    InferenceError,
    InvalidConfigError,
    ModelNotFoundError,
    ModelServer,
    PluginError,
    hookimpl,
)
from turnout.core.deployments.builder import load_runtime
from turnout.core.deployments.faults import FaultInjectingRuntime
from turnout.core.deployments.registry import Deployment
from turnout.core.resilience.breaker import BreakerPolicyFactory
from turnout.core.service.plugins import collect_breaker_policies, make_plugin_manager
from turnout.plugins.breaker_policies import (
    ConsecutiveFailuresPolicy,
    ErrorRatePolicy,
    SlowCallPolicy,
)

NOW = 1000.0


def record_all(policy: Any, outcomes: str, *, now: float = NOW, duration: float = 0.01) -> None:
    """Record one execution per letter: "F" failed, "S" succeeded."""
    for letter in outcomes:
        policy.record(letter == "F", duration, now)


# -- error_rate -------------------------------------------------------------------------------


def test_error_rate_defaults():
    policy = ErrorRatePolicy({}, 0.5)
    assert (policy.threshold, policy.window, policy.window_seconds, policy.min_calls) == (
        0.5,
        50,
        None,
        10,
    )


def test_error_rate_waits_for_min_calls():
    policy = ErrorRatePolicy({"min_calls": 5}, 0.5)
    record_all(policy, "FFFF")
    assert policy.should_trip(NOW) is None  # 100% failed, but only four calls

    record_all(policy, "F")

    assert policy.should_trip(NOW) == "error rate 100% over the last 5 executions exceeds 50%"


def test_error_rate_trips_only_above_the_threshold():
    policy = ErrorRatePolicy({"min_calls": 4}, 0.5)
    record_all(policy, "FSFS")
    assert policy.should_trip(NOW) is None  # 50% does not exceed 50%
    record_all(policy, "F")
    assert policy.should_trip(NOW) == "error rate 60% over the last 5 executions exceeds 50%"


def test_error_rate_counts_only_the_last_window_executions():
    policy = ErrorRatePolicy({"window": 4, "min_calls": 2}, 0.5)
    record_all(policy, "FFF" + "SSSS")  # the failures have left the window
    assert policy.should_trip(NOW) is None
    record_all(policy, "FF")  # S S F F: 50%
    assert policy.should_trip(NOW) is None
    record_all(policy, "F")  # S F F F
    assert policy.should_trip(NOW) == "error rate 75% over the last 4 executions exceeds 50%"


def test_error_rate_over_a_time_window():
    policy = ErrorRatePolicy({"window_seconds": 10, "min_calls": 3}, 0.5)
    policy.record(True, 0.01, NOW)
    policy.record(True, 0.01, NOW + 1)
    policy.record(False, 0.01, NOW + 5)
    assert policy.should_trip(NOW + 5) == "error rate 67% over the last 3 executions exceeds 50%"
    # Ten seconds on, the first failure is still (just) in the window ...
    assert policy.should_trip(NOW + 10) is not None
    # ... and then it is not: two calls are fewer than min_calls.
    assert policy.should_trip(NOW + 10.5) is None
    policy.record(False, 0.01, NOW + 10.5)
    assert policy.should_trip(NOW + 10.5) is None  # F S S: 33%


def test_a_time_window_holds_any_number_of_executions():
    # The counted window (50 by default) does not cap a time window.
    policy = ErrorRatePolicy({"window_seconds": 60, "threshold": 0.2}, 0.5)
    for i in range(100):
        policy.record(i % 4 == 0, 0.01, NOW + i / 10)
    assert policy.should_trip(NOW + 10) == "error rate 25% over the last 100 executions exceeds 20%"


def test_error_rate_threshold_defaults_to_the_deployments_error_threshold():
    defaulted = ErrorRatePolicy({}, 0.2)
    chosen = ErrorRatePolicy({"threshold": 0.9}, 0.2)
    assert (defaulted.threshold, chosen.threshold) == (0.2, 0.9)
    for policy in (defaulted, chosen):
        record_all(policy, "FFF" + "S" * 7)  # 30% of 10
    assert defaulted.should_trip(NOW) == "error rate 30% over the last 10 executions exceeds 20%"
    assert chosen.should_trip(NOW) is None


@pytest.mark.parametrize(("threshold", "trips"), [(0.0, True), (1.0, False)])
def test_error_rate_threshold_bounds(threshold, trips):
    policy = ErrorRatePolicy({"threshold": threshold, "min_calls": 2}, 0.5)
    record_all(policy, "SF" if trips else "FF")
    assert (policy.should_trip(NOW) is not None) is trips


def test_error_rate_reset_empties_the_window():
    policy = ErrorRatePolicy({"min_calls": 3}, 0.5)
    record_all(policy, "FFF")
    assert policy.should_trip(NOW) is not None
    policy.reset()
    assert policy.should_trip(NOW) is None
    record_all(policy, "FFS")
    assert policy.should_trip(NOW) == "error rate 67% over the last 3 executions exceeds 50%"


# -- consecutive_failures ---------------------------------------------------------------------


def test_consecutive_failures_needs_an_unbroken_streak():
    policy = ConsecutiveFailuresPolicy({"failures": 3}, 0.5)
    assert ConsecutiveFailuresPolicy({}, 0.5).failures == 5
    record_all(policy, "FFSFF")
    assert policy.should_trip(NOW) is None  # a success broke the streak

    record_all(policy, "F")
    assert policy.should_trip(NOW) == "3 executions failed in a row"
    record_all(policy, "F")
    assert policy.should_trip(NOW) == "4 executions failed in a row"
    record_all(policy, "S")
    assert policy.should_trip(NOW) is None


def test_consecutive_failures_reset_forgets_the_streak():
    policy = ConsecutiveFailuresPolicy({"failures": 2}, 0.5)
    record_all(policy, "F")
    policy.reset()
    record_all(policy, "F")
    assert policy.should_trip(NOW) is None
    record_all(policy, "F")
    assert policy.should_trip(NOW) is not None


# -- slow_calls -------------------------------------------------------------------------------


def test_slow_calls_defaults_ignore_the_error_threshold():
    policy = SlowCallPolicy({}, 0.1)
    assert (policy.slow_seconds, policy.threshold, policy.window, policy.min_calls) == (
        1.0,
        0.5,
        50,
        10,
    )


def test_slow_calls_counts_only_durations_above_slow_seconds():
    policy = SlowCallPolicy({"slow_seconds": 0.5, "min_calls": 2, "window": 4}, 0.5)
    policy.record(False, 0.5, NOW)  # exactly slow_seconds: not slow
    policy.record(False, 0.6, NOW)
    assert policy.should_trip(NOW) is None  # 1 of 2: 50%
    policy.record(True, 0.1, NOW)  # failed, but fast: failures are not its business
    assert policy.should_trip(NOW) is None
    policy.record(False, 2.0, NOW)  # 2 of 4
    assert policy.should_trip(NOW) is None
    policy.record(False, 0.7, NOW)  # 0.5 leaves the window: 0.6 0.1 2.0 0.7
    assert policy.should_trip(NOW) == "75% of the last 4 executions took longer than 0.5 s"


def test_slow_calls_waits_for_min_calls_and_resets():
    policy = SlowCallPolicy({"slow_seconds": 1, "threshold": 0.2, "min_calls": 3}, 0.5)
    policy.record(False, 5.0, NOW)
    policy.record(False, 5.0, NOW)
    assert policy.should_trip(NOW) is None
    policy.record(False, 0.1, NOW)
    assert policy.should_trip(NOW) == "67% of the last 3 executions took longer than 1 s"
    policy.reset()
    policy.record(False, 5.0, NOW)
    assert policy.should_trip(NOW) is None


# -- params -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("factory", "params", "message"),
    [
        (ErrorRatePolicy, {"failures": 3}, r"'error_rate': unknown params \['failures'\]"),
        (ErrorRatePolicy, {1: 2, "x": 3}, "'error_rate': unknown params"),
        (ErrorRatePolicy, {"threshold": -0.1}, r"threshold must be a number in \[0, 1\]"),
        (ErrorRatePolicy, {"threshold": 1.5}, "threshold must be a number in"),
        (ErrorRatePolicy, {"threshold": math.nan}, "threshold must be a number in"),
        (ErrorRatePolicy, {"threshold": True}, "threshold must be a number in"),
        (ErrorRatePolicy, {"threshold": "0.5"}, "threshold must be a number in"),
        (ErrorRatePolicy, {"threshold": None}, "threshold must be a number in"),
        (ErrorRatePolicy, {"threshold": 10**400}, "threshold must be a number in"),
        (ErrorRatePolicy, {"window": 0}, "window must be a positive integer, got 0"),
        (ErrorRatePolicy, {"window": 2.5}, "window must be a positive integer"),
        (ErrorRatePolicy, {"window": True}, "window must be a positive integer"),
        (ErrorRatePolicy, {"window": "50"}, "window must be a positive integer"),
        (ErrorRatePolicy, {"min_calls": 0}, "min_calls must be a positive integer"),
        (ErrorRatePolicy, {"min_calls": -3}, "min_calls must be a positive integer"),
        (ErrorRatePolicy, {"window_seconds": 0}, "window_seconds must be a positive number"),
        (ErrorRatePolicy, {"window_seconds": math.inf}, "window_seconds must be a positive"),
        (ErrorRatePolicy, {"window_seconds": True}, "window_seconds must be a positive"),
        (ErrorRatePolicy, {"window_seconds": 10**400}, "window_seconds must be a positive"),
        # A counted window that can never hold min_calls executions never trips.
        (ErrorRatePolicy, {"window": 5, "min_calls": 6}, "min_calls .* exceeds window"),
        (ErrorRatePolicy, {"window": 5}, r"min_calls \(10\) exceeds window \(5\)"),
        (ConsecutiveFailuresPolicy, {"window": 5}, "'consecutive_failures': unknown params"),
        (ConsecutiveFailuresPolicy, {"failures": 0}, "failures must be a positive integer"),
        (ConsecutiveFailuresPolicy, {"failures": 1.5}, "failures must be a positive integer"),
        (ConsecutiveFailuresPolicy, {"failures": False}, "failures must be a positive integer"),
        (SlowCallPolicy, {"window_seconds": 5}, "'slow_calls': unknown params"),
        (SlowCallPolicy, {"slow_seconds": 0}, "slow_seconds must be a positive number"),
        (SlowCallPolicy, {"slow_seconds": -1.0}, "slow_seconds must be a positive number"),
        (SlowCallPolicy, {"slow_seconds": None}, "slow_seconds must be a positive number"),
        (SlowCallPolicy, {"slow_seconds": 10**400}, "slow_seconds must be a positive number"),
        (SlowCallPolicy, {"threshold": 2}, "threshold must be a number in"),
        (SlowCallPolicy, {"window": 3, "min_calls": 4}, "min_calls .* exceeds window"),
    ],
)
def test_bad_params_are_refused(factory: Any, params: dict[Any, Any], message: str):
    with pytest.raises(InvalidConfigError, match=message):
        factory(params, 0.5)


def test_good_params_are_taken():
    error_rate = ErrorRatePolicy(
        {"threshold": 1, "window": 10**30, "window_seconds": 2, "min_calls": 1}, 0.5
    )
    assert (error_rate.threshold, error_rate.window_seconds) == (1.0, 2.0)
    # A time window counts no executions: min_calls may exceed the counted window.
    assert ErrorRatePolicy({"window": 2, "min_calls": 3, "window_seconds": 1}, 0.5).min_calls == 3
    assert ErrorRatePolicy({"window": 3, "min_calls": 3}, 0.5).window == 3
    slow = SlowCallPolicy({"slow_seconds": 2, "threshold": 0, "window": 4, "min_calls": 4}, 0.5)
    assert (slow.slow_seconds, slow.threshold) == (2.0, 0.0)


# -- registration -----------------------------------------------------------------------------


def test_the_built_in_policies_register_through_the_hook():
    policies = collect_breaker_policies(make_plugin_manager(entry_points=False))
    assert dict(policies) == {
        "error_rate": ErrorRatePolicy,
        "consecutive_failures": ConsecutiveFailuresPolicy,
        "slow_calls": SlowCallPolicy,
    }


class TotalFailuresPolicy:
    """Trips once ``failures`` executions have failed since the breaker last
    closed, however many succeeded in between: ``{"failures": 3}``."""

    name: ClassVar[str] = "mine"

    def __init__(self, params: Mapping[str, Any], error_threshold: float) -> None:
        if set(params) - {"failures"}:
            raise InvalidConfigError(f"'mine' breaker policy: unknown params {sorted(params)}")
        self.failures = params.get("failures", 3)
        self.error_threshold = error_threshold
        self.seen: list[tuple[bool, float, float]] = []
        self._failed = 0

    def record(self, failed: bool, duration: float, now: float) -> None:
        self.seen.append((failed, duration, now))
        self._failed += failed

    def should_trip(self, now: float) -> str | None:
        if self._failed >= self.failures:
            return f"{self._failed} of {len(self.seen)} executions failed"
        return None

    def reset(self) -> None:
        self._failed = 0


class MinePlugin:
    """A plugin object offering the "mine" policy.

    The factory a policy hook returns is usually the policy class; here it
    is the plugin itself, so the test can look at every policy it built.
    """

    name = "mine"

    def __init__(self) -> None:
        self.built: list[TotalFailuresPolicy] = []

    def __call__(self, params: Mapping[str, Any], error_threshold: float) -> TotalFailuresPolicy:
        policy = TotalFailuresPolicy(params, error_threshold)
        self.built.append(policy)
        return policy

    @hookimpl
    def register_breaker_policies(self) -> Sequence[BreakerPolicyFactory]:
        return [self]


def policy_module(name: str, *policies: object) -> types.ModuleType:
    """A plugin module called ``name`` that offers ``policies``, as an entry point loads one."""
    module = types.ModuleType(name)

    @hookimpl
    def register_breaker_policies() -> Sequence[Any]:
        return list(policies)

    module.register_breaker_policies = register_breaker_policies  # type: ignore[attr-defined]
    return module


class Deployed:
    """A plugin that records every model_deployed event."""

    def __init__(self) -> None:
        self.deployments: list[Deployment] = []

    @hookimpl
    def model_deployed(self, deployment: Deployment) -> None:
        self.deployments.append(deployment)


async def test_a_third_party_policy_decides_when_a_deployed_model_trips(
    logistic_model, binary_data
):
    plugin = MinePlugin()
    row = binary_data.X_test.to_numpy()[:1]
    async with ModelServer(plugins=[plugin], entry_points=False) as server:
        deployment = await server.deploy_model(
            "m",
            "v",
            logistic_model,
            breaker=BreakerConfig(policy="mine", params={"failures": 3}),
            error_threshold=0.25,
        )
        (policy,) = plugin.built
        assert policy.error_threshold == 0.25
        deployment.runtime = fault = FaultInjectingRuntime(deployment.runtime)

        fault.fail_next(2)
        for _ in range(2):
            with pytest.raises(InferenceError, match="injected failure"):
                await server.predict("m", row)
        # A success in between: consecutive_failures would start over, and
        # error_rate would wait for 10 executions. "mine" does neither.
        assert np.shape(await server.predict("m", row)) == (1,)
        assert server.circuit_breaker("m").state is BreakerState.CLOSED
        fault.fail_next(1)
        with pytest.raises(InferenceError):
            await server.predict("m", row)

        snapshot = server.circuit_breaker("m")
        assert snapshot.state is BreakerState.OPEN
        assert snapshot.reason == "3 of 4 executions failed"
        with pytest.raises(CircuitOpenError, match=r"^Circuit breaker is open for model m:v$"):
            await server.predict("m", row)
        assert fault.batches == [1, 1, 1, 1]  # the refused request never reached the model
        assert [failed for failed, _, _ in policy.seen] == [True, True, False, True]
        assert all(0.0 <= duration < 10.0 for _, duration, _ in policy.seen)


async def test_the_third_party_policy_validates_its_params_at_deploy(logistic_model):
    async with ModelServer(plugins=[MinePlugin()], entry_points=False) as server:
        with pytest.raises(InvalidConfigError, match="'mine' breaker policy: unknown params"):
            await server.deploy_model(
                "m", "v", logistic_model, breaker=BreakerConfig(policy="mine", params={"x": 1})
            )


def test_a_policy_name_taken_twice_is_a_plugin_error():
    with pytest.raises(PluginError, match="breaker policy 'mine' is registered by both"):
        ModelServer(
            plugins=[policy_module("acme", TotalFailuresPolicy), MinePlugin()], entry_points=False
        )


def test_a_policy_may_not_take_a_built_in_name():
    class Impostor(TotalFailuresPolicy):
        name: ClassVar[str] = "error_rate"

    with pytest.raises(PluginError, match="breaker policy 'error_rate' is registered by both"):
        ModelServer(plugins=[policy_module("impostor", Impostor)], entry_points=False)


def test_a_policy_without_a_name_is_a_plugin_error():
    with pytest.raises(PluginError, match="offers a breaker policy with no name"):
        ModelServer(plugins=[policy_module("nameless", object())], entry_points=False)


@pytest.mark.parametrize(
    ("breaker", "message"),
    [
        (
            BreakerConfig(policy="nope"),
            "unknown breaker policy 'nope'; known: consecutive_failures, error_rate, slow_calls",
        ),
        (BreakerConfig(params={"window": 0}), "window must be a positive integer"),
    ],
)
async def test_a_bad_policy_at_deploy_leaves_nothing_half_deployed(
    logistic_model, monkeypatch, breaker, message
):
    runtimes: list[FaultInjectingRuntime] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        loaded, runtime = load_runtime(*args, **kwargs)
        runtimes.append(FaultInjectingRuntime(runtime))  # to see that it gets closed
        return loaded, runtimes[-1]

    monkeypatch.setattr("turnout.core.service.version_lifecycle.load_runtime", spy)
    events = Deployed()
    async with ModelServer(plugins=[events], entry_points=False) as server:
        with pytest.raises(InvalidConfigError, match=message):
            await server.deploy_model("m", "v1", logistic_model, breaker=breaker)

        assert [runtime.closed for runtime in runtimes] == [True]
        assert dict(server.active_models) == {}
        with pytest.raises(ModelNotFoundError):
            server.get_deployment("m", "v1")
        assert events.deployments == []
        # Nothing left behind: the same version deploys cleanly now.
        await server.deploy_model("m", "v1", logistic_model)
        assert server.circuit_breaker("m").state is BreakerState.CLOSED
        assert len(events.deployments) == 1
