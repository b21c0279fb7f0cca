"""The admin API's gate: a bearer token compared in constant time, or loopback peers only.

Without a token the admin API is off, unless its user opts in to an
unauthenticated API, which then answers only connections from this machine.
"""

from __future__ import annotations

import hmac
import string

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from yarl import URL

from turnout.core.errors import InvalidConfigError
from turnout.web.errors import RequestError
from turnout.web.hosts import is_loopback
from turnout.web.status_page import UI_PATHS

__all__ = [
    "MIN_TOKEN_LENGTH",
    "TOKEN_ENV",
    "check_bearer",
    "check_token",
    "loopback_only",
    "require_token",
]

# Where `turnout serve`, `deploy` and `status` read the admin token from by default.
TOKEN_ENV = "TURNOUT_ADMIN_TOKEN"

# 16 characters from a password generator (e.g. `python -c "import secrets;
# print(secrets.token_urlsafe())"`) is beyond guessing over HTTP.
MIN_TOKEN_LENGTH = 16
_TOKEN_CHARACTERS = frozenset(string.ascii_letters + string.digits + string.punctuation)

# Paths anyone may read: the API's description and the status page's files hold no
# secret (the page asks for the token before it reads anything).
PUBLIC_PATHS = frozenset({"/openapi.json", *UI_PATHS})


def check_token(token: object) -> str:
    """Return ``token`` if it can serve as the admin token, else raise InvalidConfigError."""
    if not isinstance(token, str):
        raise InvalidConfigError(f"the admin token must be a string, not {type(token).__name__}")
    if len(token) < MIN_TOKEN_LENGTH:
        raise InvalidConfigError(
            f"the admin token must be at least {MIN_TOKEN_LENGTH} characters long;"
            ' make one with: python -c "import secrets; print(secrets.token_urlsafe())"'
        )
    if not set(token) <= _TOKEN_CHARACTERS:
        # Anything else could not travel in an Authorization header as the same bytes.
        raise InvalidConfigError(
            "the admin token may hold only printable ASCII letters, digits and punctuation"
        )
    return token


def _unauthorized(message: str) -> RequestError:
    return RequestError(
        401, "unauthorized", message, headers={"WWW-Authenticate": 'Bearer realm="turnout-admin"'}
    )


def require_token(token: str) -> Middleware:
    """Return a middleware that admits only requests bearing ``token`` (401 without, 403 wrong)."""
    expected = check_token(token).encode("ascii")

    @web.middleware
    async def bearer_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in PUBLIC_PATHS:
            check_bearer(request.headers.get("Authorization"), expected)
        return await handler(request)

    return bearer_token


def check_bearer(header: str | None, expected: bytes) -> None:
    """Raise 401 unless ``header`` is ``Bearer <token>``, 403 unless the token is ``expected``."""
    if header is None:
        raise _unauthorized(
            "send the admin token in an Authorization header: the word Bearer, a space,"
            " then the token"
        )
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise _unauthorized(
            "the Authorization header must be the word Bearer, a space, then the token"
        )
    given = credentials.strip().encode("utf-8", errors="surrogateescape")
    # compare_digest takes time independent of where the first difference is.
    if not hmac.compare_digest(given, expected):
        raise RequestError(403, "forbidden", "the admin token is wrong")


@web.middleware
async def loopback_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Admit only connections from this machine: the unauthenticated admin API's guard.

    A connection from this machine may still be a browser's, made for a page
    of another site: a cross-site form posting to the API, or a name of the
    attacker's resolved to 127.0.0.1 (DNS rebinding) so that its script reads
    the answers. So the request must also name a loopback host (``Host``),
    and come from no other site (``Origin``, when a browser sends one).
    """
    if request.remote is None or not is_loopback(request.remote):
        raise RequestError(
            403, "forbidden", "the admin API has no token configured and answers only loopback"
        )
    if not is_loopback(_host_of(f"//{request.host}")):
        raise RequestError(
            403, "forbidden", "the admin API without a token answers requests for localhost only"
        )
    origin = request.headers.get("Origin")
    if origin is not None and not is_loopback(_host_of(origin)):
        raise RequestError(
            403, "forbidden", "the admin API without a token refuses requests from other sites"
        )
    return await handler(request)


def _host_of(url: str) -> str:
    """The host a URL (or ``//authority``) names; "" for one that does not parse."""
    try:
        return URL(url).host or ""
    except ValueError:
        return ""
