"""The aiohttp application: the V1 and V2 routes around one ModelServer."""

from __future__ import annotations

import asyncio

from aiohttp import web

from turnout.core.errors import InvalidConfigError
from turnout.core.service.server import ModelServer
from turnout.web.errors import error_middleware
from turnout.web.keys import DRAINING_KEY, MAX_BODY_KEY, SERVER_KEY
from turnout.web.metrics import setup_metrics
from turnout.web.openapi import setup_openapi
from turnout.web.triton import setup_triton
from turnout.web.v1 import setup_v1
from turnout.web.v2 import setup_v2

__all__ = ["DEFAULT_MAX_BODY_BYTES", "check_max_body_bytes", "create_app"]

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024


def create_app(
    server: ModelServer, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
) -> web.Application:
    """Return an aiohttp Application serving ``server``: KServe V1 and V2, metrics, OpenAPI.

    The server is stored under :data:`SERVER_KEY`; its lifecycle stays the
    caller's: close it after the application's runner is cleaned up.
    """
    if not isinstance(server, ModelServer):
        raise InvalidConfigError(f"expected a ModelServer, got {type(server).__name__}")
    check_max_body_bytes(max_body_bytes)
    app = web.Application(client_max_size=max_body_bytes, middlewares=[error_middleware])
    app[SERVER_KEY] = server
    app[MAX_BODY_KEY] = max_body_bytes
    app[DRAINING_KEY] = asyncio.Event()
    setup_v2(app)
    setup_triton(app)
    setup_v1(app)
    setup_metrics(app)
    setup_openapi(app)
    return app


def check_max_body_bytes(max_body_bytes: object) -> int:
    """Return the body limit if it is a positive integer, else raise InvalidConfigError."""
    if (
        isinstance(max_body_bytes, bool)
        or not isinstance(max_body_bytes, int)
        or max_body_bytes < 1
    ):
        raise InvalidConfigError(
            f"max_body_bytes must be a positive integer, got {max_body_bytes!r}"
        )
    return max_body_bytes
