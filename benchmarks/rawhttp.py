"""A minimal HTTP/1.1 keep-alive client for load generation: pre-built requests, few allocations.

The aiohttp client costs a few hundred µs of CPU per request on a small
machine, so a Python generator built on it falls behind long before the
server does. This one writes a request prepared once as bytes and reads the
answer by its Content-Length: enough for the servers measured here, which
all answer with a length, never chunked.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

__all__ = ["Connection", "ConnectionPool", "prepare"]


def prepare(url: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
    """Return the bytes of one POST request to ``url`` + ``path``."""
    host = urlsplit(url).netloc
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Connection:
    """One keep-alive connection; one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        """Send a prepared request and return the response's status code and body."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
                break
        body = await self.reader.readexactly(length) if length else b""
        return status, body

    def close(self) -> None:
        """Close the connection."""
        self.writer.close()


class ConnectionPool:
    """Idle connections to one server, opened on demand."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self._idle: list[Connection] = []
        self._all: list[Connection] = []

    async def send(self, request: bytes) -> bool:
        """Send ``request`` on an idle connection (or a new one); True for a 2xx/3xx answer."""
        answer = await self.exchange(request)
        return answer is not None and answer[0] < 400

    async def exchange(self, request: bytes) -> tuple[int, bytes] | None:
        """Send ``request`` on an idle connection (or a new one); return (status, body).

        None if the connection failed (it is closed and dropped from the pool).
        """
        connection = self._idle.pop() if self._idle else await self._open()
        try:
            answer = await connection.exchange(request)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            connection.close()
            self._all.remove(connection)
            return None
        self._idle.append(connection)
        return answer

    async def _open(self) -> Connection:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        connection = Connection(reader, writer)
        self._all.append(connection)
        return connection

    def close(self) -> None:
        """Close every connection."""
        for connection in self._all:
            connection.close()
        self._all.clear()
        self._idle.clear()
