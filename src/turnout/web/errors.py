"""HTTP errors: every exception becomes a JSON body ``{"error": ..., "code": ...}``.

Each :class:`~turnout.core.errors.TurnoutError` subclass has a status and a
stable machine code (:data:`ERROR_CODES`). Client mistakes are always 4xx;
5xx means the server or the model failed, never the request. Messages are
scrubbed of filesystem paths and credentials, and no traceback is ever sent:
the detail of a model failure or a bug goes to the ``turnout.web`` log.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

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
from turnout.web.jsonio import dumps

__all__ = [
    "ERROR_CODES",
    "ErrorCode",
    "ErrorReport",
    "RequestError",
    "error_middleware",
    "error_response",
    "log_error",
    "report_error",
    "scrub",
]

logger = logging.getLogger("turnout.web")


@dataclass(frozen=True)
class ErrorCode:
    """The HTTP status and machine code of one kind of error."""

    status: int
    code: str


# Most specific first is not needed: the lookup walks each error's MRO.
ERROR_CODES: Mapping[type[TurnoutError], ErrorCode] = {
    InvalidInputError: ErrorCode(400, "invalid_input"),
    InvalidNameError: ErrorCode(400, "invalid_name"),
    InvalidConfigError: ErrorCode(400, "invalid_config"),
    InvalidRoutingError: ErrorCode(400, "invalid_routing"),
    ModelNotFoundError: ErrorCode(404, "model_not_found"),
    VersionNotFoundError: ErrorCode(404, "version_not_found"),
    VersionExistsError: ErrorCode(409, "version_exists"),
    SmokeTestError: ErrorCode(409, "smoke_test_failed"),
    # Another writer changed the model first: the change was not made; retry on the new state.
    StateConflictError: ErrorCode(409, "state_conflict"),
    ConversionError: ErrorCode(422, "conversion_failed"),
    ServiceUnavailableError: ErrorCode(503, "unavailable"),
    OverloadedError: ErrorCode(503, "overloaded"),
    CircuitOpenError: ErrorCode(503, "circuit_open"),
    ServerClosedError: ErrorCode(503, "server_closed"),
    StateUnavailableError: ErrorCode(503, "state_unavailable"),
    DeadlineExceededError: ErrorCode(504, "deadline_exceeded"),
    InferenceError: ErrorCode(500, "model_failed"),
    PluginError: ErrorCode(500, "internal_error"),
    # Raised by turnout's own clients of another server, never by a handler here.
    RemoteError: ErrorCode(502, "remote_failed"),
    # Never raised by a handler: a server holds its repository from the start.
    RepositoryInUseError: ErrorCode(409, "repository_in_use"),
    StoreError: ErrorCode(500, "store_failed"),
    TurnoutError: ErrorCode(500, "internal_error"),
}

INTERNAL = ErrorCode(500, "internal_error")

# Statuses aiohttp itself raises (routing, body limits), by the code they get here.
_HTTP_CODES = {
    400: "invalid_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}

# What the client is told instead of the message, where the message is the server's business.
_GENERIC = {
    "model_failed": "the model failed while running this request; the server log has the detail",
    "internal_error": "internal server error",
}

# Seconds a client is asked to wait before retrying a 503 that names no time itself.
DEFAULT_RETRY_AFTER = 1

_PATH = re.compile(r"(?<![\w.:/])(?:/[\w.@+-]+){2,}/?|\b[A-Za-z]:\\[^\s'\"]+")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[^\s,;'\"]+")
_SECRET = re.compile(
    r"(?i)\b(token|secret|password|passwd|api[_-]?key|authorization)(\s*[=:]\s*)"
    r"(?!(?:bearer|basic)\b)[^\s,;'\"]+"
)
_MAX_MESSAGE = 1000


class RequestError(Exception):
    """An error in an HTTP request itself, found by the web layer: a status, a code, a message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = dict(headers or {})


def scrub(message: str) -> str:
    """Return ``message`` without filesystem paths and credentials, and at most 1000 chars."""
    message = _PATH.sub("<path>", message)
    message = _BEARER.sub(lambda m: f"{m.group(1)} <redacted>", message)
    message = _SECRET.sub(lambda m: f"{m.group(1)}{m.group(2)}<redacted>", message)
    if len(message) > _MAX_MESSAGE:
        message = message[: _MAX_MESSAGE - 3] + "..."
    return message


def code_for(error: TurnoutError) -> ErrorCode:
    """Return the status and code of a TurnoutError: its own class's, or its nearest base's."""
    for cls in type(error).__mro__:
        found = ERROR_CODES.get(cls)
        if found is not None:
            return found
    return INTERNAL  # unreachable: TurnoutError itself is in the table


def json_error(
    status: int,
    code: str,
    message: str,
    *,
    field: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """Return the JSON error response every failure gets."""
    body: dict[str, Any] = {"error": message, "code": code}
    if field is not None:
        body["field"] = field
    return web.json_response(body, status=status, headers=headers, dumps=dumps)


@dataclass(frozen=True)
class ErrorReport:
    """What a client is told of one failure, whatever the protocol carries it.

    ``retry_after`` is the whole seconds to wait before retrying, for a 503.
    """

    status: int
    code: str
    message: str
    field: str | None = None
    retry_after: int | None = None


def report_error(error: BaseException) -> ErrorReport:
    """Return what a client is told of ``error``; unknown exceptions are a 500 with no detail."""
    if isinstance(error, RequestError):
        return ErrorReport(error.status, error.code, scrub(error.message), error.field)
    if isinstance(error, TurnoutError):
        spec = code_for(error)
        message = _GENERIC.get(spec.code) or scrub(str(error)) or spec.code
        field = error.field if isinstance(error, InvalidInputError) else None
        retry = _retry_after(error) if spec.status == 503 else None
        return ErrorReport(spec.status, spec.code, message, field, retry)
    return ErrorReport(INTERNAL.status, INTERNAL.code, _GENERIC[INTERNAL.code])


def log_error(error: BaseException, what: str) -> None:
    """Log a failure of ``what`` (a request line or an RPC) as far as the server must know it."""
    if isinstance(error, InferenceError):
        logger.warning("%s: %s", what, error)
    elif isinstance(error, RequestError):
        return
    elif not isinstance(error, TurnoutError) or code_for(error).status in (500, 502):
        # 503 and 504 are load and deadlines doing their job, counted in the
        # metrics; a traceback for each would flood the log under overload.
        logger.error("%s failed", what, exc_info=error)


def error_response(error: BaseException) -> web.Response:
    """Return the JSON response for ``error``; unknown exceptions are a 500 with no detail."""
    if isinstance(error, web.HTTPException):
        return _http_response(error)
    report = report_error(error)
    headers = dict(error.headers) if isinstance(error, RequestError) else {}
    if report.retry_after is not None:
        headers["Retry-After"] = str(report.retry_after)
    return json_error(
        report.status, report.code, report.message, field=report.field, headers=headers or None
    )


def _retry_after(error: TurnoutError) -> int:
    """Whole seconds to wait: the breaker's own estimate when it gives one, at least 1."""
    seconds = getattr(error, "retry_after", None)
    if isinstance(seconds, int | float) and math.isfinite(seconds) and seconds > 0:
        return max(DEFAULT_RETRY_AFTER, math.ceil(seconds))
    return DEFAULT_RETRY_AFTER


def _http_response(error: web.HTTPException) -> web.Response:
    status = error.status
    code = _HTTP_CODES.get(status, "invalid_request" if status < 500 else INTERNAL.code)
    if status == 404:
        message = "no such endpoint; see docs/http.md for the API"
    elif status == 405:
        allowed = error.headers.get("Allow", "")
        message = f"method not allowed here; allowed: {allowed}" if allowed else error.reason
    elif status == 413:
        message = "the request body is too large"
    elif status >= 500:
        message = _GENERIC[INTERNAL.code]
    else:
        message = error.reason
    headers = {"Allow": error.headers["Allow"]} if "Allow" in error.headers else None
    return json_error(status, code, message, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every exception a handler raises into a JSON error response."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects and the like are not errors
        return error_response(exc)
    except Exception as exc:
        log_error(exc, f"{request.method} {request.path}")
        return error_response(exc)
