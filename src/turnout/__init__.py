"""turnout: an asyncio model-serving framework for scikit-learn and ONNX models.

Models run on ONNX Runtime behind an adaptive micro-batcher, one per deployed
version. ``ModelServer`` is the async API; ``ModelServingManager`` the
synchronous one.
"""

from turnout.admin_client import AdminClient
from turnout.core.errors import (
    CircuitOpenError,
    ConversionError,
    DeadlineExceededError,
    InferenceError,
    InvalidConfigError,
    InvalidInputError,
    InvalidNameError,
    InvalidRoutingError,
    ModelNotFoundError,
    OverloadedError,
    PluginError,
    RemoteError,
    RepositoryInUseError,
    ServerClosedError,
    ServiceUnavailableError,
    SmokeTestError,
    StateConflictError,
    StateUnavailableError,
    StoreError,
    TurnoutError,
    VersionExistsError,
    VersionNotFoundError,
)
from turnout.core.execution.batching import BatchingConfig
from turnout.core.execution.convert import Runtime
from turnout.core.execution.metrics import MetricsSnapshot
from turnout.core.execution.outputs import OutputMode
from turnout.core.hookspecs import hookimpl, hookspec
from turnout.core.resilience.breaker import (
    BreakerConfig,
    BreakerPolicy,
    BreakerPolicyFactory,
    BreakerSnapshot,
    BreakerState,
)
from turnout.core.resilience.fallback import Fallback
from turnout.core.resilience.health import (
    HealthCheck,
    HealthFacts,
    HealthReport,
    HealthStatus,
    HealthVerdict,
)
from turnout.core.routing.canary_controller import RolloutEvent
from turnout.core.routing.config import (
    Route,
    RouteRequest,
    RoutingConfig,
    RoutingContext,
    RoutingStrategy,
    RoutingStrategyFactory,
)
from turnout.core.routing.outcomes import ABComparison, OutcomeStatistics, OutcomeTotals
from turnout.core.routing.shadow_stats import ShadowStatistics
from turnout.core.service.server import InferenceResult, ModelServer
from turnout.core.state.control import ControlState, ModelState, VersionEntry
from turnout.core.state.memory import MemoryState
from turnout.manager import ModelServingManager

__version__ = "0.1.0"

__all__ = [
    "ABComparison",
    "AdminClient",
    "BatchingConfig",
    "BreakerConfig",
    "BreakerPolicy",
    "BreakerPolicyFactory",
    "BreakerSnapshot",
    "BreakerState",
    "CircuitOpenError",
    "ControlState",
    "ConversionError",
    "DeadlineExceededError",
    "Fallback",
    "HealthCheck",
    "HealthFacts",
    "HealthReport",
    "HealthStatus",
    "HealthVerdict",
    "InferenceError",
    "InferenceResult",
    "InvalidConfigError",
    "InvalidInputError",
    "InvalidNameError",
    "InvalidRoutingError",
    "MemoryState",
    "MetricsSnapshot",
    "ModelNotFoundError",
    "ModelServer",
    "ModelServingManager",
    "ModelState",
    "OutcomeStatistics",
    "OutcomeTotals",
    "OutputMode",
    "OverloadedError",
    "PluginError",
    "RemoteError",
    "RepositoryInUseError",
    "RolloutEvent",
    "Route",
    "RouteRequest",
    "RoutingConfig",
    "RoutingContext",
    "RoutingStrategy",
    "RoutingStrategyFactory",
    "Runtime",
    "ServerClosedError",
    "ServiceUnavailableError",
    "ShadowStatistics",
    "SmokeTestError",
    "StateConflictError",
    "StateUnavailableError",
    "StoreError",
    "TurnoutError",
    "VersionEntry",
    "VersionExistsError",
    "VersionNotFoundError",
    "__version__",
    "hookimpl",
    "hookspec",
]
