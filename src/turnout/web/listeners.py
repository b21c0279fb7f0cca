"""Binding the listening sockets first, so that a port in use fails before anything slow runs.

``turnout serve`` trains the demo models, restores a repository and may
open MLflow before it serves; a port already taken must be found before
all that, and before the repository is locked and written. Sockets are
bound at once and start listening only when the server starts: until then
a connection is refused, exactly as if nothing were bound.
"""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass

__all__ = ["Listeners", "bind"]


def bind(host: str, port: int, *, reuse_port: bool = False) -> tuple[socket.socket, ...]:
    """Return sockets bound to every address of ``host`` on ``port``, not listening yet.

    Raises OSError naming the address when it is in use or not this
    machine's. With port 0 the first address picks a free port, and the
    others take the same one. With ``reuse_port`` (SO_REUSEPORT) the worker
    processes of one ``turnout serve --workers N`` each bind the port, and
    the kernel spreads connections over them evenly.
    """
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise OSError(exc.errno, f"cannot listen on {host!r}: {exc.strerror}") from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(addresses):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            # What asyncio's create_server sets: a restart may bind over connections in
            # TIME_WAIT, and an IPv6 socket leaves the IPv4 address to its own socket.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            try:
                sock.bind(address)
            except OSError as exc:
                ip, at = str(address[0]), int(address[1])
                shown = f"[{ip}]" if family == socket.AF_INET6 else ip
                raise OSError(exc.errno, f"cannot listen on {shown}:{at}: {exc.strerror}") from None
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return tuple(sockets)


@dataclass(frozen=True)
class Listeners:
    """The bound sockets of the inference API, the admin API and the gRPC service, if served.

    The gRPC sockets only hold the port until the service starts: grpc.aio
    cannot take a socket bound elsewhere, so it binds the same address as
    they close (:mod:`turnout.web.rpc.server`).
    """

    inference: tuple[socket.socket, ...]
    admin: tuple[socket.socket, ...] = ()
    grpc: tuple[socket.socket, ...] = ()

    @classmethod
    def bind(
        cls,
        host: str,
        port: int,
        admin: tuple[str, int] | None = None,
        *,
        grpc: tuple[str, int] | None = None,
        reuse_port: bool = False,
    ) -> Listeners:
        """Bind the inference API's address, the admin API's and the gRPC service's (host, port)."""
        bound: list[tuple[socket.socket, ...]] = []
        try:
            for address in ((host, port), admin, grpc):
                bound.append(() if address is None else bind(*address, reuse_port=reuse_port))
        except BaseException:
            for socks in bound:
                for sock in socks:
                    sock.close()
            raise
        return cls(*bound)

    def close(self) -> None:
        """Close every socket (those the server took are closed already; that is harmless)."""
        for sock in (*self.inference, *self.admin, *self.grpc):
            with contextlib.suppress(OSError):
                sock.close()
