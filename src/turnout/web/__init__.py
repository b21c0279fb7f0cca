"""turnout's HTTP server: KServe V1 and the Open Inference Protocol (V2) on aiohttp."""

from turnout.web.app import DEFAULT_MAX_BODY_BYTES, create_app
from turnout.web.errors import ERROR_CODES, ErrorCode
from turnout.web.keys import MAX_BODY_KEY, SERVER_KEY
from turnout.web.serve import GrpcSettings, is_loopback, serve

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "ERROR_CODES",
    "MAX_BODY_KEY",
    "SERVER_KEY",
    "ErrorCode",
    "GrpcSettings",
    "create_app",
    "is_loopback",
    "serve",
]
