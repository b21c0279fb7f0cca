"""Reading a request: its JSON body (type and size checked) and typed fields out of it.

Every failure is a :class:`RequestError` naming the field at fault, e.g.
``inputs[0].shape``, so a client can tell what to fix without guessing.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from turnout.web.errors import RequestError
from turnout.web.jsonio import JSONError, loads
from turnout.web.keys import MAX_BODY_KEY

__all__ = [
    "BODY_READ_TIMEOUT",
    "JSON_CONTENT_TYPE",
    "bad_request",
    "check_json_type",
    "get_list",
    "get_object",
    "get_seconds",
    "get_string",
    "parse_json",
    "read_bytes",
    "read_json",
    "require_object",
    "type_name",
]

JSON_CONTENT_TYPE = "application/json"

# Seconds a request body may take to arrive, once its headers have.
BODY_READ_TIMEOUT = 30.0


def bad_request(
    message: str, field: str | None = None, code: str = "invalid_request"
) -> RequestError:
    """Return a 400 RequestError about ``field``."""
    return RequestError(400, code, message, field=field)


async def read_json(request: web.Request) -> Any:
    """Return the request's JSON body; 415 if it says it is not JSON, 413 if too large."""
    check_json_type(request)
    return parse_json(await read_bytes(request))


def parse_json(body: bytes) -> Any:
    """Return the JSON document in ``body``, or raise a 400 ``malformed_json``."""
    try:
        return loads(body)
    except JSONError as exc:
        raise RequestError(400, "malformed_json", str(exc)) from None


def check_json_type(request: web.Request) -> None:
    """Raise a 415 unless the request's body is declared JSON, or not declared at all.

    A body without a Content-Type is read as JSON, as Triton and MLServer read
    it: tritonclient sends its JSON requests (``infer`` with
    ``binary_data=False``, the repository extension) without one. A body that
    declares another type is refused rather than guessed at.
    """
    # aiohttp reports a missing Content-Type as application/octet-stream: ask the headers.
    sent = request.headers.get("Content-Type")
    if sent is not None and request.content_type != JSON_CONTENT_TYPE:
        raise RequestError(
            415,
            "unsupported_media_type",
            f"send the body as {JSON_CONTENT_TYPE} (or with no Content-Type), not {sent[:60]!r}",
        )


async def read_bytes(request: web.Request) -> bytes:
    """Return the request's body, whatever its type; 413 if it is too large."""
    limit = request.app[MAX_BODY_KEY]
    length = request.content_length
    if length is not None and length > limit:
        raise _too_large(length, limit)
    # aiohttp stops reading past client_max_size (a chunked body has no length to check).
    try:
        if request.content.is_eof():
            # Nearly every inference body arrives with its headers: nothing to wait
            # for, and the timeout's scheduling would cost more than the read.
            return await request.read()
        # A client that declares a body and never sends it would hold its connection
        # (and a handler) for ever: aiohttp sets no limit on reading one.
        async with asyncio.timeout(BODY_READ_TIMEOUT):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise _too_large(None, limit) from None
    except TimeoutError:
        raise RequestError(
            408,
            "request_timeout",
            f"the request body did not arrive within {BODY_READ_TIMEOUT:g} seconds",
        ) from None
    except ConnectionError:
        # The client went away mid-body: nobody will read the answer, and it is no bug.
        raise RequestError(
            400, "invalid_request", "the connection closed before the body was complete"
        ) from None


def _too_large(length: int | None, limit: int) -> RequestError:
    size = f" ({length} bytes)" if length is not None else ""
    return RequestError(
        413,
        "body_too_large",
        f"the request body{size} is larger than the server's limit of {limit} bytes;"
        " split the request into smaller ones",
    )


def type_name(value: object) -> str:
    """Name ``value``'s JSON type, for messages: "a string", "an object", "null"..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def require_object(value: object, where: str | None) -> dict[str, Any]:
    """Return ``value`` if it is a JSON object, else raise a 400 naming ``where``."""
    if not isinstance(value, dict):
        what = f"{where} must be" if where else "the request body must be"
        raise bad_request(f"{what} a JSON object, not {type_name(value)}", where)
    return value


def _missing(where: str) -> RequestError:
    return bad_request(f"{where} is missing", where)


def get_object(obj: Mapping[str, Any], key: str, where: str) -> dict[str, Any] | None:
    """Return the optional object ``obj[key]`` (None when absent or null)."""
    value = obj.get(key)
    return None if value is None else require_object(value, where)


def get_list(
    obj: Mapping[str, Any], key: str, where: str, *, required: bool = True
) -> list[Any] | None:
    """Return the list ``obj[key]``; raise a 400 if it is missing (when required) or no list."""
    value = obj.get(key)
    if value is None:
        if required:
            raise _missing(where)
        return None
    if not isinstance(value, list):
        raise bad_request(f"{where} must be a list, not {type_name(value)}", where)
    return value


def get_string(
    obj: Mapping[str, Any], key: str, where: str, *, required: bool = True
) -> str | None:
    """Return the string ``obj[key]``; raise a 400 if it is missing (when required) or no string."""
    value = obj.get(key)
    if value is None:
        if required:
            raise _missing(where)
        return None
    if not isinstance(value, str):
        raise bad_request(f"{where} must be a string, not {type_name(value)}", where)
    return value


def get_seconds(obj: Mapping[str, Any], key: str, where: str) -> float | None:
    """Return the optional positive, finite number of seconds ``obj[key]``."""
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_request(f"{where} must be a number of seconds, not {type_name(value)}", where)
    seconds = float(value) if not isinstance(value, int) or abs(value) < 2**63 else math.inf
    if not math.isfinite(seconds) or seconds <= 0:
        raise bad_request(f"{where} must be a positive, finite number of seconds", where)
    return seconds
