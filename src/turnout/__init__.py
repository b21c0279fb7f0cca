"""turnout: an asyncio model-serving framework for scikit-learn and ONNX models.

Models run on ONNX Runtime behind an adaptive micro-batcher, one per deployed
version. ``ModelServer`` is the async API; ``ModelServingManager`` the
synchronous one.
"""

from turnout.core.batching import BatchingConfig
from turnout.core.errors import (
    CircuitOpenError,
    ConversionError,
    DeadlineExceededError,
    InferenceError,
    InvalidConfigError,
    InvalidInputError,
    InvalidNameError,
    ModelNotFoundError,
    OverloadedError,
    ServerClosedError,
    ServiceUnavailableError,
    TurnoutError,
    VersionExistsError,
    VersionNotFoundError,
)
from turnout.core.health import HealthReport, HealthStatus
from turnout.core.manager import ModelServingManager
from turnout.core.metrics import MetricsSnapshot
from turnout.core.outputs import OutputMode
from turnout.core.server import InferenceResult, ModelServer

__version__ = "0.1.0"

__all__ = [
    "BatchingConfig",
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
    "OverloadedError",
    "ServerClosedError",
    "ServiceUnavailableError",
    "TurnoutError",
    "VersionExistsError",
    "VersionNotFoundError",
    "__version__",
]
