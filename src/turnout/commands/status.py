"""``turnout status``: what a server (or a repository) serves, as a table for people."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from turnout.admin_client import AdminClient
from turnout.core.service.server import ModelServer
from turnout.web.records import model_view, to_json

__all__ = ["collect_status", "format_status"]

_COLUMNS = ("MODEL", "VERSION", "ACTIVE", "ROUTING", "REQUESTS", "ERRORS", "P99 MS", "BREAKER")


async def collect_status(
    *,
    server_url: str | None = None,
    token: str | None = None,
    repository: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Return ``{"models": {...}}`` as the admin API's /admin/status answers it.

    A repository is only read: it may be a running server's, which alone
    writes it; StoreError if it does not exist.
    """
    if server_url is not None:
        async with AdminClient(server_url, token) as client:
            return await client.status()
    assert repository is not None
    async with ModelServer(repository=repository, repository_read_only=True) as server:
        models = sorted(server.get_all_models_status())
        return {"models": {model: to_json(model_view(server, model)) for model in models}}


def format_status(status: Mapping[str, Any]) -> str:
    """Return the status as an aligned table, one line per version."""
    rows = [_COLUMNS]
    for name, model in sorted(status["models"].items()):
        routing = model["routing"]["strategy"]
        for version, info in sorted(model["versions"].items()):
            metrics = info["metrics"]
            rows.append(
                (
                    name,
                    version,
                    "*" if version == model["active"] else "",
                    routing,
                    str(metrics["request_count"]),
                    str(metrics["error_count"]),
                    f"{metrics['p99_latency_ms']:.2f}",
                    info["circuit_breaker"]["state"],
                )
            )
    if len(rows) == 1:
        return "No models are deployed."
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
