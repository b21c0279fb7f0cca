"""``GET /metrics``: every version's serving metrics in the Prometheus text format.

A custom prometheus-client collector reads the server's own counters and
histograms when Prometheus scrapes, instead of updating client-library
metrics on every request: the request path pays nothing, and the numbers
are the same ones status, health and the benchmarks read. Latency
histogram buckets are sums of turnout's 6%-wide buckets up to each bound, so
a bound is exact to within 6%.

Every series of a worker's own counters has a ``worker`` label (its pid).
The workers of one ``turnout serve --workers N`` share a port, and a scrape
reaches one of them at random; so each answers for all its siblings (the
servers on its host that listen where it does), from the totals each
publishes in its heartbeat, and the series sum to the fleet's totals
(aggregation through the control state, not prometheus-client's
multiprocess mode, which needs every counter kept in its files). With
siblings, a worker reports itself as its last heartbeat did too: every
scrape then sees each worker at one moment, up to a second old, and a
counter never seems to go back (which Prometheus would take as a reset).
Gauges (queue, breaker) are the answering worker's own; routing weights
are the fleet's.
"""

from __future__ import annotations

import bisect
import os
import socket
from collections.abc import Iterator, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from turnout.core.errors import TurnoutError
from turnout.core.execution.metrics import BATCH_SIZE_BOUNDS, LatencyHistogram, MetricsTotals
from turnout.core.service.fleet_traffic import Traffic, traffic_of
from turnout.core.service.server import ModelServer
from turnout.web.keys import SERVER_KEY

__all__ = [
    "LATENCY_BUCKETS",
    "ServerCollector",
    "WorkerTraffic",
    "routing_weights",
    "setup_metrics",
    "worker_traffic",
]

LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0
)  # fmt: skip

_BREAKER_STATES = ("closed", "half_open", "open")
_LABELS = ["model", "version"]
_WORKER_LABELS = [*_LABELS, "worker"]

# {worker (pid): {model: {version: totals}}}
WorkerTraffic = dict[str, Traffic]


def routing_weights(
    routing: Mapping[str, Any], versions: list[str], active: str | None
) -> dict[str, float]:
    """Return each version's share of the model's traffic under a routing config, where known."""
    params = routing.get("params", {})
    strategy = routing.get("strategy")
    shares = dict.fromkeys(versions, 0.0)
    if strategy in ("weighted", "sticky"):
        total = sum(params["weights"]) or 1.0
        shares.update(
            {v: w / total for v, w in zip(params["versions"], params["weights"], strict=True)}
        )
    elif strategy == "canary":
        weight = params["steps"][params["step"]]
        shares[params["baseline"]] = 1.0 - weight
        shares[params["candidate"]] = weight
    elif strategy == "blue_green":
        shares[params["blue"] if params["live"] == "blue" else params["green"]] = 1.0
    elif strategy == "shadow":
        shares[params.get("primary", active)] = 1.0
    elif strategy == "active" and active is not None:
        shares[active] = 1.0
    else:
        return {}  # a strategy whose split is not in its config (bandit, plugins)
    return shares


def _latency_buckets(histogram: LatencyHistogram) -> list[tuple[str, float]]:
    cumulative: list[tuple[str, float]] = []
    counts, bounds = histogram.counts, histogram.bounds
    for le in LATENCY_BUCKETS:
        upto = bisect.bisect_right(bounds, le)
        cumulative.append((str(le), float(sum(counts[:upto]))))
    cumulative.append(("+Inf", float(histogram.count)))
    return cumulative


def _batch_buckets(sizes: tuple[int, ...], batches: int) -> list[tuple[str, float]]:
    cumulative: list[tuple[str, float]] = []
    seen = 0
    for bound, count in zip(BATCH_SIZE_BOUNDS, sizes, strict=False):
        seen += count
        cumulative.append((str(float(bound)), float(seen)))
    cumulative.append(("+Inf", float(batches)))
    return cumulative


async def worker_traffic(server: ModelServer) -> WorkerTraffic:
    """Return the totals of every worker a scrape of ``server`` answers for, by pid.

    Alone, the server's own live totals; with siblings (heartbeats from its
    host that name the address it listens on), what each, itself included,
    last published. An unreachable control state leaves the server's own.
    """
    own = str(os.getpid())
    traffic: WorkerTraffic = {own: {}}
    for model_id, versions in server.get_all_models_status().items():
        traffic[own][model_id] = {
            version: MetricsTotals.of(server.get_deployment(model_id, version).metrics)
            for version in versions
        }
    listen = server.announced.get("listen")
    if listen is None:
        return traffic
    try:
        beats = await server.fleet()
    except TurnoutError:
        return traffic
    host = socket.gethostname()
    published: WorkerTraffic = {}
    for facts in beats.values():
        if facts.get("host") != host or facts.get("listen") != listen:
            continue
        try:
            published[str(facts["pid"])] = traffic_of(facts)
        except (KeyError, ValueError):
            continue  # a server of another release: it is not summed, rather than summed wrong
    if set(published) - {own}:
        published.setdefault(own, traffic[own])  # not beaten yet
        return published
    return traffic


class ServerCollector(Collector):
    """Reads a ModelServer's per-version metrics at scrape time, and its siblings' (``traffic``)."""

    def __init__(self, server: ModelServer) -> None:
        self._server = server
        self.traffic: WorkerTraffic = {}  # set before each scrape: worker_traffic's answer

    def collect(self) -> Iterator[Metric]:
        """Yield every turnout metric family, one sample per model, version and worker."""
        yield from self._counted()
        yield from self._gauges()

    def _counted(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "turnout_requests", "Requests answered", labels=_WORKER_LABELS
        )
        errors = CounterMetricFamily(
            "turnout_errors", "Requests answered with a model error", labels=_WORKER_LABELS
        )
        shed = CounterMetricFamily(
            "turnout_shed", "Requests refused for overload", labels=_WORKER_LABELS
        )
        timeouts = CounterMetricFamily(
            "turnout_timeouts", "Requests whose deadline passed", labels=_WORKER_LABELS
        )
        latency = HistogramMetricFamily(
            "turnout_request_latency_seconds", "Request latency", labels=_WORKER_LABELS
        )
        batch_rows = HistogramMetricFamily(
            "turnout_batch_rows", "Rows per executed batch", labels=_WORKER_LABELS
        )
        for worker, models in sorted(self.traffic.items()):
            for model_id, versions in sorted(models.items()):
                for version, totals in sorted(versions.items()):
                    labels = [model_id, version, worker]
                    requests.add_metric(labels, totals.requests)
                    errors.add_metric(labels, totals.errors)
                    shed.add_metric(labels, totals.shed)
                    timeouts.add_metric(labels, totals.timeouts)
                    histogram = totals.histogram()
                    latency.add_metric(labels, _latency_buckets(histogram), histogram.total)
                    rows = _batch_buckets(totals.batch_sizes, totals.batches)
                    batch_rows.add_metric(labels, rows, float(totals.rows))
        yield from (requests, errors, shed, timeouts, latency, batch_rows)

    def _gauges(self) -> Iterator[Metric]:
        server = self._server
        worker = str(os.getpid())
        queue = GaugeMetricFamily(
            "turnout_queue_rows", "Rows waiting to run", labels=_WORKER_LABELS
        )
        breaker = GaugeMetricFamily(
            "turnout_circuit_breaker_state",
            "1 for the breaker's current state",
            labels=[*_WORKER_LABELS, "state"],
        )
        weight = GaugeMetricFamily(
            "turnout_routing_weight", "Share of the model's traffic routed to a version",
            labels=_LABELS,
        )  # fmt: skip
        for model_id, versions in server.get_all_models_status().items():
            active = server.active_models.get(model_id)
            shares: dict[str, float] = {}
            for version, info in versions.items():
                labels = [model_id, version, worker]
                queue.add_metric(labels, info["metrics"].queue_depth)
                state = info["circuit_breaker"]["state"]
                for name in _BREAKER_STATES:
                    breaker.add_metric([*labels, name], 1.0 if state == name else 0.0)
                shares = routing_weights(info["routing"], list(versions), active)
            for version, share in shares.items():
                weight.add_metric([model_id, version], share)
        yield from (queue, breaker, weight)


def setup_metrics(app: web.Application) -> None:
    """Add ``GET /metrics`` to ``app``, reading the app's ModelServer."""
    registry = CollectorRegistry(auto_describe=False)
    collector = ServerCollector(app[SERVER_KEY])
    registry.register(collector)

    async def metrics(request: web.Request) -> web.Response:
        # No await between setting the traffic and reading it: scrapes cannot interleave.
        collector.traffic = await worker_traffic(app[SERVER_KEY])
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/metrics", metrics)
