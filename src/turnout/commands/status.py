"""``turnout status``: what a server (or a repository) serves, as a table for people."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from turnout.admin_client import AdminClient
from turnout.core.service.server import ModelServer
from turnout.web.records import model_view, to_json

__all__ = ["collect_status", "format_status"]

_COLUMNS = ("MODEL", "VERSION", "ACTIVE", "ROUTING", "REQUESTS", "ERRORS", "P99 MS", "BREAKER")
_WORKER_COLUMNS = ("PID", "HOST", "LEADS", "LOADED", "REVISION", "HEARTBEAT")


async def collect_status(
    *,
    server_url: str | None = None,
    token: str | None = None,
    repository: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Return ``{"models": {...}}`` as the admin API's /admin/status answers it.

    From a server, ``"fleet"`` too: every live server sharing its control
    state (/admin/fleet). A repository is only read: it may be a running server's, which alone
    writes it; StoreError if it does not exist.
    """
    if server_url is not None:
        async with AdminClient(server_url, token) as client:
            status = await client.status()
            status["fleet"] = (await client.fleet())["processes"]
            return status
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
    table = "No models are deployed." if len(rows) == 1 else _aligned(rows)
    fleet = status.get("fleet") or {}
    if len(fleet) < 2:  # one server alone: nothing to say beyond the table
        return table
    now = time.time()
    workers = [_WORKER_COLUMNS]
    for facts in sorted(fleet.values(), key=lambda f: (f.get("host", ""), f.get("pid", 0))):
        models = facts.get("models", {})
        workers.append(
            (
                str(facts.get("pid", "")),
                str(facts.get("host", "")),
                "*" if facts.get("leads") else "",
                ", ".join(f"{m}:{'/'.join(i['loaded'])}" for m, i in sorted(models.items())),
                ", ".join(f"{m}@{i['revision']}" for m, i in sorted(models.items())),
                f"{max(0.0, now - float(facts.get('at', now))):.1f} s ago",
            )
        )
    return f"{table}\n\n{len(fleet)} servers share this control state:\n{_aligned(workers)}"


def _aligned(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
