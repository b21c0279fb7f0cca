"""The ``weighted`` strategy: each request to a version drawn at random by weight (A/B tests).

Params: ``{"versions": ["v1", "v2"], "weights": [0.9, 0.1]}``; weights are
non-negative and normalised to sum to one.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from turnout.core.errors import InvalidRoutingError
from turnout.core.hookspecs import hookimpl
from turnout.core.routing.config import (
    Route,
    RouteRequest,
    RoutingContext,
    RoutingStrategyFactory,
    check_versions,
    check_weights,
)

__all__ = ["WeightedRouting", "read_split"]


def read_split(
    params: Mapping[str, Any], context: RoutingContext, strategy: str
) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """Return the validated (versions, normalised weights) from a strategy's params."""
    unknown = set(params) - {"versions", "weights"}
    if unknown:
        raise InvalidRoutingError(f"{strategy!r} routing: unknown params {sorted(unknown)}")
    versions = check_versions(params.get("versions"), context)
    weights = check_weights(params.get("weights"), len(versions))
    return versions, weights


class WeightedRouting:
    """Picks a version per request with probability equal to its weight."""

    name: ClassVar[str] = "weighted"

    def __init__(self, params: Mapping[str, Any], context: RoutingContext) -> None:
        versions, weights = read_split(params, context, self.name)
        self._routes = [Route(version) for version in versions]
        self._cumulative = list(itertools.accumulate(weights))
        # No draw may fall past the end through rounding: the running sum can
        # stop just under 1 (0.7, 0.05 -> 0.9999999999999999), so every entry
        # from the last version with weight on is 1.0, or a draw close to 1
        # would land on a trailing zero-weight version that versions() omits.
        last = max(i for i, weight in enumerate(weights) if weight > 0)
        self._cumulative[last:] = [1.0] * (len(weights) - last)
        self._versions = frozenset(v for v, w in zip(versions, weights, strict=True) if w > 0)
        self.split = dict(zip(versions, weights, strict=True))

    def route(self, request: RouteRequest) -> Route:
        """Return the version whose weight interval holds this request's random draw."""
        return self._routes[bisect.bisect_right(self._cumulative, request.random())]

    def versions(self) -> frozenset[str]:
        """Every version with a weight above zero."""
        return self._versions


@hookimpl(trylast=True)
def register_routing_strategies() -> Sequence[RoutingStrategyFactory]:
    """Offer the ``weighted`` strategy."""
    return [WeightedRouting]
