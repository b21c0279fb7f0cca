"""Helpers shared by the HTTP tests."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from aiohttp import ClientResponse

# The admin token of the tests' admin API (tests/web/conftest.py).
ADMIN_TOKEN = "test-admin-token-0123456789"


async def expect_error(response: ClientResponse, status: int, code: str) -> dict[str, Any]:
    """Assert an error response's status, JSON body and code; return the body."""
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    body: dict[str, Any] = await response.json()
    assert body["code"] == code, body
    assert isinstance(body["error"], str)
    assert body["error"]
    assert "Traceback" not in body["error"]
    return body


def assert_close(actual: Any, expected: Any) -> None:
    """Compare predictions that went through JSON (float32 values printed as doubles)."""
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected, rtol=1e-6, atol=1e-7)


async def send_head(
    host: str, port: int, content_length: int, body: bytes = b""
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a raw connection and send a V2 infer request's headers and ``body``, maybe short."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        b"POST /v2/models/cancer/infer HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\n"
        + f"Content-Length: {content_length}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    return reader, writer


def tensor(name: str, values: Any, datatype: str = "FP32") -> dict[str, Any]:
    """Return a V2 input tensor holding ``values`` (flattened), shaped like them."""
    array = np.asarray(values)
    return {
        "name": name,
        "shape": list(array.shape),
        "datatype": datatype,
        "data": array.reshape(-1).tolist(),
    }


METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

# Codes the web layer gives itself (RequestError, aiohttp's own errors), by status.
WEB_CODES = {
    "not_found": 404,
    "malformed_json": 400,
    "invalid_request": 400,
    "body_too_large": 413,
    "unsupported_media_type": 415,
    "internal_error": 500,
}


def operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    """The (path, METHOD) pairs an OpenAPI document describes."""
    return {
        (path, method.upper())
        for path, item in document["paths"].items()
        for method in item
        if method in METHODS
    }
