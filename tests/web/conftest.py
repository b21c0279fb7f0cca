"""Fixtures for the HTTP tests: a real aiohttp server on a loopback port around a ModelServer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from turnout import ModelServer
from turnout.web import create_app

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def make_client(server: ModelServer) -> AsyncIterator[ClientFactory]:
    """Start the app for ``server`` on 127.0.0.1, on a free port; kwargs go to ``create_app``."""
    clients: list[TestClient[Any, Any]] = []

    async def make(**options: Any) -> TestClient[Any, Any]:
        client: TestClient[Any, Any] = TestClient(TestServer(create_app(server, **options)))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def http(make_client: ClientFactory) -> TestClient[Any, Any]:
    """A client of the app with default settings."""
    return await make_client()


@pytest.fixture
async def cancer(server: ModelServer, binary_model: Any, binary_model_v2: Any) -> ModelServer:
    """``server`` with model "cancer": v1 (active) and v2, both fitted with feature names."""
    await server.deploy_model("cancer", "v1", binary_model)
    await server.deploy_model("cancer", "v2", binary_model_v2, set_active=False)
    return server
