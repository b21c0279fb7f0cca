"""turnout: an asyncio model-serving framework for scikit-learn and ONNX models.

Models run on ONNX Runtime behind an adaptive micro-batcher, one per deployed
version. ``ModelServer`` is the async API; ``ModelServingManager`` the
synchronous one.
"""

from turnout.admin_client import AdminClient
from turnout.core.batching import BatchingConfig
from turnout.core.breaker import (
    BreakerConfig,
    BreakerPolicy,
    BreakerPolicyFactory,
    BreakerSnapshot,
    BreakerState,
)
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
    ServerClosedError,
    ServiceUnavailableError,
    SmokeTestError,
    StoreError,
    TurnoutError,
    VersionExistsError,
    VersionNotFoundError,
)
from turnout.core.fallback import Fallback
from turnout.core.health import (
    HealthCheck,
    HealthFacts,
    HealthReport,
    HealthStatus,
    HealthVerdict,
)
from turnout.core.hookspecs import hookimpl, hookspec
from turnout.core.manager import ModelServingManager
from turnout.core.metrics import MetricsSnapshot
from turnout.core.outcomes import ABComparison, OutcomeStatistics
from turnout.core.outputs import OutputMode
from turnout.core.rollout import RolloutEvent
from turnout.core.routing import (
    Route,
    RouteRequest,
    RoutingConfig,
    RoutingContext,
    RoutingStrategy,
    RoutingStrategyFactory,
)
from turnout.core.server import InferenceResult, ModelServer
from turnout.core.shadow import ShadowStatistics

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
    "MetricsSnapshot",
    "ModelNotFoundError",
    "ModelServer",
    "ModelServingManager",
    "OutcomeStatistics",
    "OutputMode",
    "OverloadedError",
    "PluginError",
    "RemoteError",
    "RolloutEvent",
    "Route",
    "RouteRequest",
    "RoutingConfig",
    "RoutingContext",
    "RoutingStrategy",
    "RoutingStrategyFactory",
    "ServerClosedError",
    "ServiceUnavailableError",
    "ShadowStatistics",
    "SmokeTestError",
    "StoreError",
    "TurnoutError",
    "VersionExistsError",
    "VersionNotFoundError",
    "__version__",
    "hookimpl",
    "hookspec",
]
