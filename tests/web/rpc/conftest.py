"""Fixtures of the gRPC tests: the service on a loopback port, and clients of it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from triton_grpc import triton_aio

from turnout import ModelServer
from turnout.web.listeners import bind
from turnout.web.rpc.server import GrpcSettings, start_grpc
from turnout.web.rpc.service import RepositoryAccess

GrpcStarter = Callable[..., Awaitable[str]]


@pytest.fixture
async def start_grpc_service(server: ModelServer) -> AsyncIterator[GrpcStarter]:
    """Start turnout's gRPC service for ``server`` on a free loopback port; return its address.

    Keywords: ``access`` (RepositoryAccess), ``max_message_bytes``, ``draining``.
    """
    started: list[Any] = []

    async def start(
        *,
        access: RepositoryAccess | None = None,
        max_message_bytes: int | None = None,
        draining: asyncio.Event | None = None,
    ) -> str:
        settings = GrpcSettings(host="127.0.0.1", port=0)
        if max_message_bytes is not None:
            settings = GrpcSettings(host="127.0.0.1", port=0, max_message_bytes=max_message_bytes)
        grpc_server, address = await start_grpc(
            server,
            bind("127.0.0.1", 0),
            settings,
            access=access or RepositoryAccess(),
            draining=draining or asyncio.Event(),
        )
        started.append(grpc_server)
        return address

    yield start
    for grpc_server in started:
        await grpc_server.stop(None)


@pytest.fixture
async def grpc_address(start_grpc_service: GrpcStarter) -> str:
    """host:port of turnout's gRPC service, with the repository RPCs off."""
    return await start_grpc_service()


@pytest.fixture
async def triton(grpc_address: str) -> AsyncIterator[Any]:
    """tritonclient's asyncio gRPC client of the service; closed after the test."""
    client = triton_aio.InferenceServerClient(url=grpc_address)
    yield client
    await client.close()


@pytest.fixture
async def channel(grpc_address: str) -> AsyncIterator[grpc.aio.Channel]:
    """A bare gRPC channel to the service, for calls no client library makes."""
    async with grpc.aio.insecure_channel(grpc_address) as channel:
        yield channel
