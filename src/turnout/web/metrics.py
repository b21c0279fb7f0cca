"""``GET /metrics``: every version's serving metrics in the Prometheus text format.

A custom prometheus-client collector reads the server's own counters and
histograms when Prometheus scrapes, instead of updating client-library
metrics on every request: the request path pays nothing, and the numbers
are the same ones status, health and the benchmarks read. Latency
histogram buckets are sums of turnout's 6%-wide buckets up to each bound, so
a bound is exact to within 6%.
"""

from __future__ import annotations

import bisect
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

from turnout.core.execution.metrics import BATCH_SIZE_BOUNDS, LatencyHistogram
from turnout.core.service.server import ModelServer
from turnout.web.keys import SERVER_KEY

__all__ = ["LATENCY_BUCKETS", "ServerCollector", "routing_weights", "setup_metrics"]

LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0
)  # fmt: skip

_BREAKER_STATES = ("closed", "half_open", "open")
_LABELS = ["model", "version"]


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


def _batch_buckets(sizes: list[int], batches: int) -> list[tuple[str, float]]:
    cumulative: list[tuple[str, float]] = []
    seen = 0
    for bound, count in zip(BATCH_SIZE_BOUNDS, sizes, strict=False):
        seen += count
        cumulative.append((str(float(bound)), float(seen)))
    cumulative.append(("+Inf", float(batches)))
    return cumulative


class ServerCollector(Collector):
    """Reads a ModelServer's per-version metrics at scrape time."""

    def __init__(self, server: ModelServer) -> None:
        self._server = server

    def collect(self) -> Iterator[Metric]:
        """Yield every turnout metric family, one sample per model and version."""
        server = self._server
        requests = CounterMetricFamily("turnout_requests", "Requests answered", labels=_LABELS)
        errors = CounterMetricFamily(
            "turnout_errors", "Requests answered with a model error", labels=_LABELS
        )
        shed = CounterMetricFamily("turnout_shed", "Requests refused for overload", labels=_LABELS)
        timeouts = CounterMetricFamily(
            "turnout_timeouts", "Requests whose deadline passed", labels=_LABELS
        )
        latency = HistogramMetricFamily(
            "turnout_request_latency_seconds", "Request latency", labels=_LABELS
        )
        batch_rows = HistogramMetricFamily(
            "turnout_batch_rows", "Rows per executed batch", labels=_LABELS
        )
        queue = GaugeMetricFamily("turnout_queue_rows", "Rows waiting to run", labels=_LABELS)
        breaker = GaugeMetricFamily(
            "turnout_circuit_breaker_state",
            "1 for the breaker's current state",
            labels=[*_LABELS, "state"],
        )
        weight = GaugeMetricFamily(
            "turnout_routing_weight", "Share of the model's traffic routed to a version",
            labels=_LABELS,
        )  # fmt: skip
        for model_id, versions in server.get_all_models_status().items():
            active = server.active_models.get(model_id)
            shares: dict[str, float] = {}
            for version, info in versions.items():
                labels = [model_id, version]
                snapshot = info["metrics"]
                deployment = server.get_deployment(model_id, version)
                requests.add_metric(labels, snapshot.request_count)
                errors.add_metric(labels, snapshot.error_count)
                shed.add_metric(labels, snapshot.shed_count)
                timeouts.add_metric(labels, snapshot.timeout_count)
                histogram = deployment.metrics.latency
                latency.add_metric(labels, _latency_buckets(histogram), histogram.total)
                batch_rows.add_metric(
                    labels,
                    _batch_buckets(deployment.metrics.batch_sizes, snapshot.batches),
                    float(snapshot.rows),
                )
                queue.add_metric(labels, snapshot.queue_depth)
                state = info["circuit_breaker"]["state"]
                for name in _BREAKER_STATES:
                    breaker.add_metric([*labels, name], 1.0 if state == name else 0.0)
                shares = routing_weights(info["routing"], list(versions), active)
            for version, share in shares.items():
                weight.add_metric([model_id, version], share)
        yield from (requests, errors, shed, timeouts, latency, batch_rows, queue, breaker, weight)


def setup_metrics(app: web.Application) -> None:
    """Add ``GET /metrics`` to ``app``, reading the app's ModelServer."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(app[SERVER_KEY]))

    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/metrics", metrics)
