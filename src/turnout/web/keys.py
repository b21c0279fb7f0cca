"""Typed keys of what a turnout web application stores: the ModelServer and the body limit."""

from __future__ import annotations

from aiohttp import web

from turnout.core.server import ModelServer

__all__ = ["MAX_BODY_KEY", "SERVER_KEY"]

SERVER_KEY = web.AppKey("server", ModelServer)
MAX_BODY_KEY = web.AppKey("max_body_bytes", int)
