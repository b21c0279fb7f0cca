"""Fixtures for the HTTP tests: a real aiohttp server on a loopback port around a ModelServer."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from web_helpers import ADMIN_TOKEN

from turnout import ModelServer
from turnout.core.execution.convert import load_model
from turnout.web import create_app
from turnout.web.admin import create_admin_app

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


AppStarter = Callable[[web.Application], Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def start_app() -> AsyncIterator[AppStarter]:
    """Serve an aiohttp app on 127.0.0.1, on a free port; every one is closed after the test."""
    clients: list[TestClient[Any, Any]] = []

    async def start(app: web.Application) -> TestClient[Any, Any]:
        client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


@pytest.fixture
def make_client(server: ModelServer, start_app: AppStarter) -> ClientFactory:
    """Start the app for ``server``; kwargs go to ``create_app``."""

    async def make(**options: Any) -> TestClient[Any, Any]:
        return await start_app(create_app(server, **options))

    return make


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


@pytest.fixture
def make_admin(server: ModelServer, start_app: AppStarter) -> ClientFactory:
    """Start the admin API for ``server``; kwargs go to ``create_admin_app``."""

    async def make(**options: Any) -> TestClient[Any, Any]:
        options.setdefault("token", ADMIN_TOKEN)
        return await start_app(create_admin_app(server, **options))

    return make


@pytest.fixture
async def admin(make_admin: ClientFactory) -> TestClient[Any, Any]:
    """A client of the admin API whose requests carry the right token."""
    client = await make_admin()
    client.session.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
    return client


@pytest.fixture(scope="session")
def cancer_onnx(binary_model: Any) -> str:
    """``binary_model`` as ONNX, base64-encoded, as an upload carries it."""
    return base64.b64encode(load_model(binary_model).onnx_bytes or b"").decode("ascii")
