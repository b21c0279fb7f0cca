"""Typed keys of what a turnout web application stores: the server, body limit, draining flag."""

from __future__ import annotations

import asyncio

from aiohttp import web

from turnout.core.service.server import ModelServer

__all__ = ["DRAINING_KEY", "MAX_BODY_KEY", "SERVER_KEY"]

SERVER_KEY = web.AppKey("server", ModelServer)
MAX_BODY_KEY = web.AppKey("max_body_bytes", int)
# Set once shutdown begins: readiness turns false while requests in flight are answered.
DRAINING_KEY = web.AppKey("draining", asyncio.Event)
