"""The public surface: what ``import turnout`` offers, pinned, and documented."""

from __future__ import annotations

import inspect

import pytest

import turnout

EXPECTED = {
    "ABComparison",
    "ControlState",
    "MemoryState",
    "ModelState",
    "OutcomeTotals",
    "StateConflictError",
    "StateUnavailableError",
    "VersionEntry",
    "AdminClient",
    "RemoteError",
    "BatchingConfig",
    "BreakerConfig",
    "BreakerPolicy",
    "BreakerPolicyFactory",
    "HealthCheck",
    "BreakerSnapshot",
    "BreakerState",
    "Fallback",
    "HealthFacts",
    "HealthVerdict",
    "InvalidRoutingError",
    "OutcomeStatistics",
    "PluginError",
    "RolloutEvent",
    "Route",
    "RouteRequest",
    "RoutingConfig",
    "RoutingContext",
    "RoutingStrategy",
    "RoutingStrategyFactory",
    "ShadowStatistics",
    "SmokeTestError",
    "StoreError",
    "RepositoryInUseError",
    "hookimpl",
    "hookspec",
    "CircuitOpenError",
    "ConversionError",
    "DeadlineExceededError",
    "HealthReport",
    "HealthStatus",
    "InferenceError",
    "InferenceResult",
    "InvalidConfigError",
    "InvalidInputError",
    "InvalidNameError",
    "MetricsSnapshot",
    "ModelNotFoundError",
    "ModelServer",
    "ModelServingManager",
    "OutputMode",
    "Runtime",
    "OverloadedError",
    "ServerClosedError",
    "ServiceUnavailableError",
    "TurnoutError",
    "VersionExistsError",
    "VersionNotFoundError",
    "__version__",
}


def test_all_is_pinned() -> None:
    assert set(turnout.__all__) == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED - {"__version__", "hookimpl", "hookspec"}))
def test_every_export_is_documented(name: str) -> None:
    obj = getattr(turnout, name)
    assert inspect.getdoc(obj), f"{name} has no docstring"
    if inspect.isclass(obj):
        for attr, member in vars(obj).items():
            if not attr.startswith("_") and inspect.isfunction(member):
                assert inspect.getdoc(member), f"{name}.{attr} has no docstring"


@pytest.mark.parametrize("name", sorted(n for n in EXPECTED if n.endswith("Error")))
def test_every_error_is_a_turnout_error(name: str) -> None:
    assert issubclass(getattr(turnout, name), turnout.TurnoutError)
