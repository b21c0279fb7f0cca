"""What the status page shows, in one JSON answer: ``GET /admin/snapshot``.

Per model: its versions with status, health and breaker state and how long
each has held, the routing split, the canary's plan and rollout history,
the traffic of the last 15 minutes, the A/B comparison of the two versions
with the most traffic, and shadow statistics; and the fleet's servers with
their heartbeats. One request per refresh, rather than a dozen, so that a
page left open costs the server little.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Any

from aiohttp import web

from turnout.core.errors import ModelNotFoundError, TurnoutError, VersionNotFoundError
from turnout.core.execution.metrics import MetricsTotals
from turnout.core.resilience.health import HealthReport
from turnout.core.routing.canary_plan import CANARY, DEFAULT_STEPS
from turnout.core.routing.config import RoutingConfig
from turnout.core.service.server import ModelServer
from turnout.core.service.traffic_history import TrafficHistory, TrafficSample
from turnout.core.state.pending import stop_task
from turnout.web.jsonio import dumps
from turnout.web.keys import SERVER_KEY
from turnout.web.records import fallback_json, to_json

__all__ = ["HISTORY_KEY", "SINCE_KEY", "StateClock", "setup_snapshot", "snapshot"]

logger = logging.getLogger("turnout")

# A heartbeat's traffic is its metrics' every latency bucket: the page has its own.
_HEARTBEAT_FACTS_LEFT_OUT = frozenset({"traffic"})


# (model id, version, deploy time): a version retired and deployed again is another.
_Version = tuple[str, str, float]


class StateClock:
    """When each watched thing entered the state it is in: the page's "for 3 min"."""

    def __init__(self) -> None:
        self._seen: dict[tuple[_Version, str], tuple[object, float]] = {}

    def since(
        self, key: tuple[_Version, str], state: object, *, first: float | None = None
    ) -> float:
        """Return when ``key`` entered ``state`` (Unix time).

        A change is seen when it is asked about: each refresh of a page
        asks, so the time is as fine as the page's refresh. The first time
        a key is asked, ``first`` is taken if given (a version's deploy
        time), else now.
        """
        seen = self._seen.get(key)
        if seen is None:
            seen = self._seen[key] = (state, time.time() if first is None else first)
        elif seen[0] != state:
            seen = self._seen[key] = (state, time.time())
        return seen[1]

    def retain(self, versions: set[_Version]) -> None:
        """Forget what was seen of any version but ``versions`` (those still deployed)."""
        for key in [key for key in self._seen if key[0] not in versions]:
            del self._seen[key]


HISTORY_KEY = web.AppKey("traffic_history", TrafficHistory)
SINCE_KEY = web.AppKey("state_clock", StateClock)
# Each version's last health report, taken by the sampler: a page's refresh reads it
# rather than running every health check (a plugin's may be slow) once a second.
HEALTH_KEY = web.AppKey("health_reports", dict[_Version, HealthReport])
# The rollout events a snapshot carries per model (the page lists the last 12).
ROLLOUT_EVENTS = 50


def setup_snapshot(app: web.Application, *, interval: float = 5.0, span: float = 900.0) -> None:
    """Serve ``GET /admin/snapshot`` on ``app``, sampling traffic every ``interval`` seconds."""
    server = app[SERVER_KEY]

    def read() -> dict[tuple[str, str], MetricsTotals]:
        return {
            (model_id, version): server.traffic_totals(model_id, version)
            for model_id, versions in server.get_all_models_status().items()
            for version in versions
        }

    app[HISTORY_KEY] = TrafficHistory(read, interval=interval, span=span)
    app[SINCE_KEY] = StateClock()
    app[HEALTH_KEY] = {}
    app.cleanup_ctx.append(_sampling)
    app.router.add_get("/admin/snapshot", _snapshot)


async def _sampling(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(_sample(app), name="turnout-status-sampling")
    yield
    await stop_task(task, "the status page's sampling")


async def _sample(app: web.Application) -> None:
    """Sample traffic, and look at every version's states, at the history's interval.

    Looking at the states from the start, not only when a page asks, dates a
    change to within one interval even when nobody was watching.
    """
    server, history, since, health = (
        app[SERVER_KEY],
        app[HISTORY_KEY],
        app[SINCE_KEY],
        app[HEALTH_KEY],
    )
    failing = False
    while True:
        try:
            history.sample()
            deployed: set[_Version] = set()
            for model_id, versions in server.get_all_models_status().items():
                for version, status in versions.items():
                    key = _version_key(model_id, version, status)
                    deployed.add(key)
                    with contextlib.suppress(TurnoutError):  # retired meanwhile
                        health[key] = await server.health_check(model_id, version)
                        _states(key, status, health[key], since)
            for gone in set(health) - deployed:
                del health[gone]
            since.retain(deployed)
            failing = False
        except Exception:
            # A health check plugin that raises must not end the history for good,
            # nor fill the log: said once, until a round succeeds again.
            if not failing:
                logger.exception("the status page's sampling failed; it goes on")
            failing = True
        await asyncio.sleep(history.interval)


async def _snapshot(request: web.Request) -> web.Response:
    app = request.app
    data = await snapshot(app[SERVER_KEY], app[HISTORY_KEY], app[SINCE_KEY], app[HEALTH_KEY])
    return web.json_response(data, dumps=dumps, headers={"Cache-Control": "no-store"})


async def snapshot(
    server: ModelServer,
    history: TrafficHistory,
    since: StateClock,
    health: dict[_Version, HealthReport] | None = None,
) -> dict[str, Any]:
    """Return everything the status page shows, as JSON data.

    ``health`` holds the last report of each version, by the sampler; a
    version missing from it has its health checked now.
    """
    health = {} if health is None else health
    models = []
    for model_id, versions in sorted(server.get_all_models_status().items()):
        # A model or version retired while the snapshot is taken is left out, not a 404.
        with contextlib.suppress(ModelNotFoundError):
            models.append(await _model(server, model_id, versions, history, since, health))
    try:
        beats = await server.fleet()
    except TurnoutError:  # the shared state is away: serving goes on, the fleet is unknown
        beats = {}
    fleet = [
        {
            "name": name,
            **{k: v for k, v in facts.items() if k not in _HEARTBEAT_FACTS_LEFT_OUT},
        }
        for name, facts in sorted(beats.items())
    ]
    data: dict[str, Any] = to_json(
        {"at": time.time(), "sample_seconds": history.interval, "models": models, "fleet": fleet}
    )
    return data


async def _model(
    server: ModelServer,
    model_id: str,
    statuses: Mapping[str, Mapping[str, Any]],
    history: TrafficHistory,
    since: StateClock,
    health: dict[_Version, HealthReport],
) -> dict[str, Any]:
    routing = server.get_routing(model_id)
    split = server.routing_split(model_id)
    versions = []
    for version, status in sorted(statuses.items()):
        key = _version_key(model_id, version, status)
        report = health.get(key)
        if report is None:
            try:
                report = health[key] = await server.health_check(model_id, version)
            except VersionNotFoundError:
                continue  # retired while the snapshot is taken: left out, the rest shown
        metrics = status["metrics"]
        versions.append(
            {
                "version": version,
                **_states(key, status, report, since),
                "runtime": status["runtime"],
                "requests": metrics.request_count,
                "error_rate": metrics.error_rate,
                "p50_ms": metrics.p50_latency_ms,
                "p99_ms": metrics.p99_latency_ms,
                "history": _series(history.samples(model_id, version)),
            }
        )
    return {
        "name": model_id,
        "active": server.active_models.get(model_id),
        "routing": routing.to_dict(),
        "split": {"shares": split.shares, "mirrors": split.mirrors},
        "observed": _observed(model_id, statuses, history),
        "fallback": fallback_json(server.get_fallback(model_id)),
        "canary": _canary(routing),
        "rollouts": server.rollout_history(model_id)[-ROLLOUT_EVENTS:],
        "comparison": await _comparison(server, model_id, split.shares, statuses),
        "shadows": server.shadow_statistics(model_id) if split.mirrors else [],
        "versions": versions,
    }


def _canary(routing: RoutingConfig) -> dict[str, Any] | None:
    """A canary's plan as the page draws it; params left out take the plan's defaults."""
    if routing.strategy != CANARY:
        return None
    return {"steps": list(DEFAULT_STEPS), "step": 0, **routing.params}


def _version_key(model_id: str, version: str, status: Mapping[str, Any]) -> _Version:
    deployed = datetime.fromisoformat(status["deployed_at"]).timestamp()
    return (model_id, version, deployed)


def _states(
    key: _Version, status: Mapping[str, Any], health: HealthReport, since: StateClock
) -> dict[str, Any]:
    """A version's status, health and breaker state, each with when it entered it."""
    deployed = key[2]
    breaker = status["circuit_breaker"]
    state = status["status"]
    return {
        "status": state,
        "status_since": since.since((key, "status"), state, first=deployed),
        "deployed_at": deployed,
        "health": {
            "status": health.status,
            "reasons": health.reasons,
            "since": since.since((key, "health"), health.status),
        },
        "breaker": {
            "state": breaker["state"],
            "reason": breaker["reason"],
            "times_opened": breaker["times_opened"],
            "retry_after": breaker["retry_after"],
            "since": since.since((key, "breaker"), breaker["state"], first=deployed),
        },
    }


def _series(samples: tuple[TrafficSample, ...]) -> dict[str, list[float | None]]:
    """Samples as columns, the shape a sparkline reads."""
    return {
        "at": [s.at for s in samples],
        "requests_per_second": [s.requests_per_second for s in samples],
        "error_rate": [s.error_rate for s in samples],
        "p50_ms": [s.p50_ms for s in samples],
        "p99_ms": [s.p99_ms for s in samples],
    }


# The observed split covers the last minute: what a bandit, or any strategy
# that declares no split, actually did.
_OBSERVED_SECONDS = 60.0


def _observed(
    model_id: str, statuses: Mapping[str, Any], history: TrafficHistory
) -> dict[str, float]:
    """Each version's share of the model's requests over the last minute (empty if none)."""
    count = max(1, round(_OBSERVED_SECONDS / history.interval))
    served = {
        version: sum(s.requests_per_second for s in history.samples(model_id, version)[-count:])
        for version in statuses
    }
    total = sum(served.values())
    return {version: n / total for version, n in served.items()} if total else {}


async def _comparison(
    server: ModelServer,
    model_id: str,
    shares: Mapping[str, float] | None,
    statuses: Mapping[str, Any],
) -> Any:
    """The A/B comparison of the two versions with the largest shares (None with fewer)."""
    order = list(shares or {})
    ranked = sorted(order, key=lambda version: -(shares or {})[version])
    pair = [v for v in ranked if (shares or {})[v] > 0 and v in statuses][:2]
    if len(pair) < 2:
        return None
    pair.sort(key=order.index)  # as the routing lists them: a canary's baseline first
    # Every worker's outcomes, not this one's only; with the shared state away, this one's.
    with contextlib.suppress(TurnoutError):
        await server.refresh_outcomes(model_id)
    try:
        return server.compare_versions(model_id, pair[0], pair[1])
    except VersionNotFoundError:  # one of them retired meanwhile
        return None
