"""Failures as gRPC statuses: the HTTP side's error report, carried by a status code.

Every failure gets the report the HTTP API would send (:func:`turnout.web.errors.report_error`):
its message becomes the status details, and its machine code, field and
retry wait travel as trailing metadata (``turnout-error-code``,
``turnout-error-field``, ``retry-after``), so a client can tell an
overloaded server from an open breaker as it can over HTTP.
"""

from __future__ import annotations

import grpc

from turnout.web.errors import ErrorReport, log_error, report_error

__all__ = ["abort_with", "status_code"]

_BY_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    # A model file that cannot be converted is a bad argument to the load.
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}

# Where gRPC has a closer word than the HTTP status: by the error's machine code.
_BY_CODE = {
    "version_exists": grpc.StatusCode.ALREADY_EXISTS,
    "state_conflict": grpc.StatusCode.ABORTED,
    # The server is full: retry later, as RESOURCE_EXHAUSTED tells a gRPC client.
    "overloaded": grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def status_code(report: ErrorReport) -> grpc.StatusCode:
    """Return the gRPC status code for an error report."""
    found = _BY_CODE.get(report.code) or _BY_STATUS.get(report.status)
    if found is not None:
        return found
    return grpc.StatusCode.INVALID_ARGUMENT if report.status < 500 else grpc.StatusCode.INTERNAL


async def abort_with(context: grpc.aio.ServicerContext, error: BaseException, rpc: str) -> None:
    """End the RPC with the status ``error`` maps to; log it as the HTTP side would."""
    log_error(error, rpc)
    report = report_error(error)
    trailing = [("turnout-error-code", report.code)]
    if report.field is not None:
        trailing.append(("turnout-error-field", report.field))
    if report.retry_after is not None:
        trailing.append(("retry-after", str(report.retry_after)))
    context.set_trailing_metadata(tuple(trailing))
    await context.abort(status_code(report), report.message)
