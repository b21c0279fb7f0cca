"""Running the HTTP server until SIGINT or SIGTERM, then shutting down without dropping requests."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import signal
from collections.abc import Callable

from aiohttp import web

from turnout.core.server import ModelServer
from turnout.web.app import DEFAULT_MAX_BODY_BYTES, create_app

__all__ = ["is_loopback", "serve"]

# How long in-flight requests get to finish once shutdown begins.
SHUTDOWN_TIMEOUT = 30.0


def is_loopback(host: str) -> bool:
    """True if ``host`` names only this machine: localhost, 127.0.0.0/8 or ::1."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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
    on_started: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve ``server`` over HTTP until SIGINT/SIGTERM (or ``stop`` is set).

    ``on_started`` gets the base URL once the socket listens (port 0 picks a
    free one). On shutdown the listening socket closes first, then requests
    already in flight are answered; closing ``server`` is left to the caller.
    """
    app = create_app(server, max_body_bytes=max_body_bytes)
    runner = web.AppRunner(app, shutdown_timeout=SHUTDOWN_TIMEOUT, access_log=None)
    await runner.setup()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        for signum in signals:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, stop.set)
        if on_started is not None:
            on_started(_url(runner.addresses[0]))
        await stop.wait()
    finally:
        for signum in signals:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signum)
        await runner.cleanup()
