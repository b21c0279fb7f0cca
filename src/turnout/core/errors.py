"""Every error turnout raises, rooted at :class:`TurnoutError`.

::

    TurnoutError
    ├── InvalidNameError           (also ValueError)
    ├── InvalidInputError          (also ValueError)
    ├── InvalidConfigError         (also ValueError)
    ├── InvalidRoutingError        (also ValueError)
    ├── ConversionError
    ├── ModelNotFoundError         (also LookupError)
    │   └── VersionNotFoundError
    ├── VersionExistsError
    ├── PluginError
    ├── SmokeTestError
    ├── StoreError
    ├── StateConflictError
    ├── ServiceUnavailableError
    │   ├── OverloadedError
    │   ├── CircuitOpenError
    │   ├── ServerClosedError
    │   └── StateUnavailableError
    ├── DeadlineExceededError      (also TimeoutError)
    ├── InferenceError
    └── RemoteError

Domain errors carry no HTTP status: the web layer maps them. Errors a client
caused (bad names, bad input, unknown models) are never counted against a
model's health; only :class:`InferenceError` and deadline overruns are.
"""

from __future__ import annotations

__all__ = [
    "CircuitOpenError",
    "ConversionError",
    "DeadlineExceededError",
    "InferenceError",
    "InvalidConfigError",
    "InvalidInputError",
    "InvalidNameError",
    "InvalidRoutingError",
    "ModelNotFoundError",
    "OverloadedError",
    "PluginError",
    "RemoteError",
    "RepositoryInUseError",
    "ServerClosedError",
    "ServiceUnavailableError",
    "SmokeTestError",
    "StateConflictError",
    "StateUnavailableError",
    "StoreError",
    "TurnoutError",
    "VersionExistsError",
    "VersionNotFoundError",
]


class TurnoutError(Exception):
    """Base class of every error turnout raises on purpose."""


class InvalidNameError(TurnoutError, ValueError):
    """Raised when a model id or version is empty, too long or has unsafe characters."""


class InvalidConfigError(TurnoutError, ValueError):
    """Raised when a configuration value (batching, deployment option) is out of range."""


class InvalidRoutingError(TurnoutError, ValueError):
    """Raised when a routing configuration is refused; the previous routing stays."""


class InvalidInputError(TurnoutError, ValueError):
    """Raised when prediction inputs cannot be encoded for the model; no model has run.

    ``field`` names the feature (or row) at fault when one is known.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ConversionError(TurnoutError):
    """Raised when a model cannot be turned into a servable ONNX model."""


class ModelNotFoundError(TurnoutError, LookupError):
    """Raised when a model id is unknown or the model has no active version."""

    def __init__(self, message: str, *, model_id: str) -> None:
        super().__init__(message)
        self.model_id = model_id


class VersionNotFoundError(ModelNotFoundError):
    """Raised when a model exists but the requested version does not."""

    def __init__(self, message: str, *, model_id: str, version: str) -> None:
        super().__init__(message, model_id=model_id)
        self.version = version


class VersionExistsError(TurnoutError):
    """Raised when deploying a version that is already deployed, without ``replace=True``."""


class PluginError(TurnoutError):
    """Raised at start-up when plugins clash (two strategies of one name) or are malformed."""


class SmokeTestError(TurnoutError):
    """Raised when a blue-green switch is refused because the new version failed its smoke tests."""


class StoreError(TurnoutError):
    """Raised when the model repository cannot be written, or a path in it is refused."""


class RepositoryInUseError(StoreError):
    """Raised when another running server holds the model repository's lock."""


class StateConflictError(TurnoutError):
    """Raised when a control-state write was based on a revision another writer has moved past.

    Nothing was overwritten: the writer's view is stale, and is refreshed
    from the store. ``expected`` is the revision the write was based on,
    ``actual`` the one stored.
    """

    def __init__(self, message: str, *, model_id: str, expected: int, actual: int) -> None:
        super().__init__(message)
        self.model_id = model_id
        self.expected = expected
        self.actual = actual


class ServiceUnavailableError(TurnoutError):
    """Base of the errors that mean "not now": the request was refused, retry later."""


class OverloadedError(ServiceUnavailableError):
    """Raised at once when a version's queue is full or a deadline cannot be met."""


class CircuitOpenError(ServiceUnavailableError):
    """Raised when a version's circuit breaker is open and no fallback is configured.

    ``retry_after`` is the number of seconds until the breaker next lets a probe through.
    """

    def __init__(self, message: str, *, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServerClosedError(ServiceUnavailableError):
    """Raised when a request arrives at a server or version that is shutting down."""


class StateUnavailableError(ServiceUnavailableError):
    """Raised when a control-state change cannot be written: its store is unreachable.

    Inference goes on with the state last applied; the change was not made.
    """


class DeadlineExceededError(TurnoutError, TimeoutError):
    """Raised when a request's deadline passes before its result is ready."""


class InferenceError(TurnoutError):
    """Raised when the model runtime fails while executing a batch."""


class RemoteError(TurnoutError):
    """An error a remote turnout server answered with: its HTTP status and machine code."""

    def __init__(self, message: str, *, status: int, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
