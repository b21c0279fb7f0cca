"""Serving the gRPC service on ``grpc.aio``, beside the HTTP listeners and on the same event loop.

The service runs on the loop the HTTP API runs on, so both share one
ModelServer, its batchers and its breakers, with no thread between them.
Message size limits are the HTTP body limit: a larger request is refused
with RESOURCE_EXHAUSTED by gRPC itself, before turnout reads it.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from turnout.core.errors import InvalidConfigError
from turnout.core.service.server import ModelServer
from turnout.web.app import DEFAULT_MAX_BODY_BYTES, check_max_body_bytes
from turnout.web.rpc.service import InferenceService, RepositoryAccess

__all__ = ["DEFAULT_GRPC_PORT", "GrpcSettings", "start_grpc"]

# Triton's gRPC port, where KServe and Triton clients look first.
DEFAULT_GRPC_PORT = 8001


@dataclass(frozen=True)
class GrpcSettings:
    """Where the gRPC service listens and the largest message it takes or sends."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_GRPC_PORT
    max_message_bytes: int = DEFAULT_MAX_BODY_BYTES

    def __post_init__(self) -> None:
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise InvalidConfigError(f"grpc port must be an integer, got {self.port!r}")
        if not 0 <= self.port <= 65535:
            raise InvalidConfigError(f"grpc port must be from 0 to 65535, got {self.port}")
        check_max_body_bytes(self.max_message_bytes)


async def start_grpc(
    server: ModelServer,
    sockets: Sequence[socket.socket],
    settings: GrpcSettings,
    *,
    access: RepositoryAccess,
    draining: asyncio.Event,
    reuse_port: bool = False,
) -> tuple[grpc.aio.Server, str]:
    """Start the gRPC service on the addresses ``sockets`` hold; return it and its address.

    The sockets were bound beforehand (:class:`turnout.web.listeners.Listeners`)
    so that a port in use failed at start; they are closed here, and gRPC
    binds their addresses at once. With ``reuse_port`` every worker of
    ``turnout serve --workers N`` binds the port, as its HTTP sockets do;
    without it a second server on the port is refused.
    """
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 1 if reuse_port else 0),
    ]
    service = InferenceService(server, access=access, draining=draining)
    grpc_server = grpc.aio.server(options=options)
    grpc_server.add_generic_rpc_handlers((service.generic_handler(),))
    addresses = [_address(sock) for sock in sockets]
    for sock in sockets:
        sock.close()
    for address in addresses:
        try:
            grpc_server.add_insecure_port(address)
        except RuntimeError as exc:
            raise OSError(f"cannot listen for gRPC on {address}: {exc}") from None
    await grpc_server.start()
    return grpc_server, addresses[0]


def _address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if sock.family == socket.AF_INET6 else f"{host}:{port}"
