"""Running the HTTP server until SIGINT or SIGTERM, then shutting down without dropping requests.

Two listeners: the inference API, and, when configured, the admin API on a
port of its own (127.0.0.1 by default) so that one can face clients while
the other stays behind a token.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from grpc import aio as grpc_aio

from turnout.core.errors import InvalidConfigError
from turnout.core.service.server import ModelServer
from turnout.web.admin import DEFAULT_ADMIN_MAX_BODY_BYTES, create_admin_app
from turnout.web.app import DEFAULT_MAX_BODY_BYTES, check_max_body_bytes, create_app
from turnout.web.auth import check_token
from turnout.web.hosts import is_loopback
from turnout.web.keys import DRAINING_KEY
from turnout.web.listeners import Listeners
from turnout.web.rpc.server import GrpcSettings, start_grpc
from turnout.web.rpc.service import RepositoryAccess

__all__ = [
    "DEFAULT_ADMIN_PORT",
    "SHUTDOWN_TIMEOUT",
    "AdminSettings",
    "GrpcSettings",
    "Listeners",
    "bind_listeners",
    "is_loopback",
    "serve",
]

# How long in-flight requests get to finish once shutdown begins.
SHUTDOWN_TIMEOUT = 30.0
# How long connections accepted just before the listeners closed get to send their request.
ACCEPTED_GRACE_SECONDS = 0.1

DEFAULT_ADMIN_PORT = 8081


@dataclass(frozen=True)
class AdminSettings:
    """Where the admin API listens and what guards it: a bearer token, or loopback only.

    Without a token the admin API answers only loopback connections, and only
    if ``allow_unauthenticated`` says so; a non-loopback ``host`` needs a token.
    """

    token: str | None = None
    host: str = "127.0.0.1"
    port: int = DEFAULT_ADMIN_PORT
    allow_unauthenticated: bool = False
    max_body_bytes: int = DEFAULT_ADMIN_MAX_BODY_BYTES

    def __post_init__(self) -> None:
        if self.token is not None:
            check_token(self.token)
        elif not self.allow_unauthenticated:
            raise InvalidConfigError(
                "the admin API needs a token (or allow_unauthenticated=True, for loopback only)"
            )
        elif not is_loopback(self.host):
            raise InvalidConfigError(
                f"refusing an admin API without a token on {self.host!r}, reachable from other"
                " machines: configure a token"
            )
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise InvalidConfigError(f"port must be an integer, got {self.port!r}")
        if not 0 <= self.port <= 65535:
            raise InvalidConfigError(f"port must be from 0 to 65535, got {self.port}")
        check_max_body_bytes(self.max_body_bytes)

    def __repr__(self) -> str:
        # The token stays out of logs and tracebacks.
        shown = "<set>" if self.token is not None else None
        return f"AdminSettings(token={shown}, host={self.host!r}, port={self.port})"


def _url(address: object, scheme: str = "http") -> str:
    """Return the base URL of a listening socket's address (host, port[, flow, scope])."""
    assert isinstance(address, tuple)
    host, port = str(address[0]), int(address[1])
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


async def serve(
    server: ModelServer,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    admin: AdminSettings | None = None,
    on_started: Callable[[str], None] | None = None,
    on_admin_started: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
    shutdown_timeout: float = SHUTDOWN_TIMEOUT,
    listeners: Listeners | None = None,
    grpc: GrpcSettings | None = None,
    on_grpc_started: Callable[[str], None] | None = None,
    reuse_port: bool = False,
) -> None:
    """Serve ``server`` over HTTP until SIGINT/SIGTERM (or ``stop`` is set).

    ``on_started`` gets the base URL once the socket listens (port 0 picks a
    free one), ``on_admin_started`` the admin API's. ``listeners`` are
    sockets bound beforehand (:meth:`Listeners.bind`), for a caller that must
    know the ports are free before it does anything slow; without them
    ``host``, ``port`` and ``admin`` are bound here. On shutdown the listening
    sockets close first, then requests already in flight are answered (for up
    to ``shutdown_timeout`` seconds); closing ``server`` is left to the caller.
    With ``grpc`` the Open Inference Protocol's gRPC service is served too
    (docs/grpc.md), ``on_grpc_started`` gets its address, and ``reuse_port``
    says whether other processes share its port (``--workers N``).
    """
    if listeners is None:
        listeners = bind_listeners(host, port, admin, grpc, reuse_port=reuse_port)
    if (admin is not None and not listeners.admin) or (grpc is not None and not listeners.grpc):
        listeners.close()
        raise InvalidConfigError("settings were given for a listener whose socket was not bound")
    try:
        await _serve(
            server,
            listeners,
            max_body_bytes,
            admin,
            on_started,
            on_admin_started,
            stop,
            shutdown_timeout,
            _GrpcPlan(grpc, on_grpc_started, reuse_port) if grpc is not None else None,
        )
    finally:
        listeners.close()


def bind_listeners(
    host: str,
    port: int,
    admin: AdminSettings | None,
    grpc: GrpcSettings | None,
    *,
    reuse_port: bool = False,
) -> Listeners:
    """Bind the inference port and, when their settings are given, the admin and gRPC ports."""
    return Listeners.bind(
        host,
        port,
        None if admin is None else (admin.host, admin.port),
        grpc=None if grpc is None else (grpc.host, grpc.port),
        reuse_port=reuse_port,
    )


@dataclass(frozen=True)
class _GrpcPlan:
    settings: GrpcSettings
    on_started: Callable[[str], None] | None
    reuse_port: bool


async def _serve(
    server: ModelServer,
    listeners: Listeners,
    max_body_bytes: int,
    admin: AdminSettings | None,
    on_started: Callable[[str], None] | None,
    on_admin_started: Callable[[str], None] | None,
    stop: asyncio.Event | None,
    shutdown_timeout: float,
    grpc: _GrpcPlan | None,
) -> None:
    runners = [
        web.AppRunner(
            create_app(server, max_body_bytes=max_body_bytes),
            shutdown_timeout=shutdown_timeout,
            access_log=None,
        )
    ]
    if admin is not None:
        admin_app = create_admin_app(
            server,
            token=admin.token,
            allow_unauthenticated=admin.allow_unauthenticated,
            max_body_bytes=admin.max_body_bytes,
        )
        runners.append(web.AppRunner(admin_app, shutdown_timeout=shutdown_timeout))
    stop = stop or asyncio.Event()
    grpc_server: grpc_aio.Server | None = None
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    try:
        for runner in runners:
            await runner.setup()
        for sock in listeners.inference:
            await web.SockSite(runners[0], sock).start()
        if admin is not None:
            for sock in listeners.admin:
                await web.SockSite(runners[1], sock).start()
        for signum in signals:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, stop.set)
        draining = runners[0].app[DRAINING_KEY]
        if grpc is not None:
            access = RepositoryAccess(
                enabled=admin is not None, token=None if admin is None else admin.token
            )
            grpc_server, grpc_address = await start_grpc(
                server,
                listeners.grpc,
                grpc.settings,
                access=access,
                draining=draining,
                reuse_port=grpc.reuse_port,
            )
        url = _url(runners[0].addresses[0])
        server.announce(listen=url)  # its siblings of one port answer each other's scrapes
        if on_started is not None:
            on_started(url)
        if admin is not None and on_admin_started is not None:
            on_admin_started(_url(runners[1].addresses[0]))
        if grpc is not None and grpc.on_started is not None:
            grpc.on_started(grpc_address)
        await stop.wait()
    finally:
        runners[0].app[DRAINING_KEY].set()
        # gRPC refuses new calls at once and gives those in flight the same grace,
        # while the HTTP side drains beside it.
        grpc_stopped = None if grpc_server is None else grpc_server.stop(shutdown_timeout)
        for signum in signals:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signum)
        # No new connection on any port; then a moment for those just accepted to send
        # their request. aiohttp's cleanup closes a connection that has not, as idle, and
        # one whose handler had not started by then ignores its request and holds the
        # shutdown for all of shutdown_timeout (the client waits in vain meanwhile).
        for runner in runners:
            for site in list(runner.sites):
                await site.stop()
        await asyncio.sleep(ACCEPTED_GRACE_SECONDS)
        # The admin API first: no deploys or routing changes while requests drain.
        for runner in reversed(runners):
            await runner.cleanup()
        if grpc_stopped is not None:
            await grpc_stopped
