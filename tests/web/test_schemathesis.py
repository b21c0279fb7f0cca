"""Property-based runs of schemathesis against both listeners' OpenAPI documents.

Each documented operation gets generated requests, valid and not; every
answer must be documented (status, content type, schema) and none a 5xx.
The server runs for real on loopback ports, in a thread with its own event
loop, since schemathesis calls it synchronously.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi import checks
from web_helpers import ADMIN_TOKEN

from turnout import ModelServer
from turnout.core.execution.convert import load_model
from turnout.web import create_app
from turnout.web.admin import create_admin_app
from turnout.web.admin_openapi import admin_openapi_document
from turnout.web.openapi import openapi_document

inference_schema = schemathesis.openapi.from_dict(openapi_document())
admin_schema = schemathesis.openapi.from_dict(admin_openapi_document())

# A schema cannot say everything the server checks (that base64 holds a working ONNX
# model, that a routing names deployed versions): schema-valid requests may still get a
# documented 4xx. Every other check holds, negative_data_rejection among them.
EXCLUDED = [checks.positive_data_acceptance]

# 30 per operation keeps the default run short; raise it for a deeper search.
EXAMPLES = settings(
    max_examples=int(os.environ.get("TURNOUT_SCHEMATHESIS_EXAMPLES", "30")),
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)


class LiveServer:
    """A ModelServer with both HTTP listeners, run by a thread's own event loop."""

    def __init__(self, onnx_bytes: bytes) -> None:
        self.onnx_bytes = onnx_bytes
        self.urls: dict[str, str] = {}
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LiveServer:
        self._thread.start()
        assert self._ready.wait(60), "the server did not start"
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with ModelServer() as server:
            for version in ("v1", "v2"):
                await server.deploy_model("cancer", version, self.onnx_bytes)
            apps = {
                "inference": create_app(server),
                "admin": create_admin_app(server, token=ADMIN_TOKEN),
            }
            runners = []
            for name, app in apps.items():
                runner = web.AppRunner(app)
                await runner.setup()
                site = web.TCPSite(runner, "127.0.0.1", 0)
                await site.start()
                host, port = runner.addresses[0][:2]
                self.urls[name] = f"http://{host}:{port}"
                runners.append(runner)
            self._ready.set()
            await self._stop.wait()
            for runner in runners:
                await runner.cleanup()


@pytest.fixture(scope="module")
def live(binary_model: Any) -> Iterator[LiveServer]:
    """Both listeners of a server holding model "cancer", v1 and v2."""
    onnx_bytes = load_model(binary_model).onnx_bytes
    assert onnx_bytes is not None
    with LiveServer(onnx_bytes) as live:
        yield live


@inference_schema.parametrize()
@EXAMPLES
def test_the_inference_api_answers_as_documented(case: Any, live: LiveServer) -> None:
    case.call_and_validate(base_url=live.urls["inference"], excluded_checks=EXCLUDED)


@admin_schema.parametrize()
@settings(EXAMPLES, max_examples=5)
def test_the_admin_api_refuses_without_the_token(case: Any, live: LiveServer) -> None:
    # Schemathesis may send a made-up bearer token of its own: wrong, so 403.
    response = case.call(base_url=live.urls["admin"])
    if case.path != "/openapi.json":
        assert response.status_code in (401, 403), response.text


def test_nothing_changed_without_the_token(live: LiveServer) -> None:
    status = requests.get(
        f"{live.urls['admin']}/admin/status",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=10,
    ).json()
    assert list(status["models"]) == ["cancer"]
    assert sorted(status["models"]["cancer"]["versions"]) == ["v1", "v2"]


@admin_schema.parametrize()
@EXAMPLES
def test_the_admin_api_answers_as_documented_with_the_token(case: Any, live: LiveServer) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    case.call_and_validate(base_url=live.urls["admin"], headers=headers, excluded_checks=EXCLUDED)
