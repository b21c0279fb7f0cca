"""The turnout-specific request parameters both protocols take: routing key and timeout."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from turnout.web.body import bad_request, get_seconds, get_string, require_object

__all__ = ["CallOptions", "call_options"]


@dataclass(frozen=True)
class CallOptions:
    """How to serve one request: the routing key and the timeout in seconds."""

    key: str | None = None
    timeout: float | None = None


def call_options(body: Mapping[str, Any]) -> CallOptions:
    """Read ``parameters.key`` and ``parameters.timeout`` from a request body.

    Other parameters are allowed (the Open Inference Protocol lets clients
    send any) and ignored.
    """
    raw = body.get("parameters")
    if raw is None:
        return CallOptions()
    parameters = require_object(raw, "parameters")
    key = get_string(parameters, "key", "parameters.key", required=False)
    if key is not None and not key:
        raise bad_request("parameters.key must not be empty", "parameters.key")
    timeout = get_seconds(parameters, "timeout", "parameters.timeout")
    return CallOptions(key=key, timeout=timeout)
