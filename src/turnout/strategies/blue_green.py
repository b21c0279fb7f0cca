"""The ``blue_green`` strategy: all traffic to the live one of two versions.

Params: ``{"blue": "v1", "green": "v2", "live": "green"}``. Switching is a
routing change (atomic between two requests); the other colour stays
deployed for an instant rollback. ``ModelServer.blue_green_switch`` runs
smoke tests against green before it switches.
"""

from __future__ import annotations

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
)

__all__ = ["BlueGreenRouting"]


class BlueGreenRouting:
    """Routes everything to the live colour; the idle colour is kept for rollback."""

    name: ClassVar[str] = "blue_green"

    def __init__(self, params: Mapping[str, Any], context: RoutingContext) -> None:
        unknown = set(params) - {"blue", "green", "live"}
        if unknown:
            raise InvalidRoutingError(f"'blue_green' routing: unknown params {sorted(unknown)}")
        blue, green = check_versions([params.get("blue"), params.get("green")], context)
        live = params.get("live", "blue")
        if live not in ("blue", "green"):
            raise InvalidRoutingError(f'"live" must be "blue" or "green", got {live!r}')
        self.blue, self.green, self.live = blue, green, live
        self._route = Route(blue if live == "blue" else green)
        self.fixed_route = self._route
        self.split = {self._route.primary: 1.0}

    def route(self, request: RouteRequest) -> Route:
        """Return the live version."""
        return self._route

    def versions(self) -> frozenset[str]:
        """Both colours: the idle one is kept ready for rollback."""
        return frozenset({self.blue, self.green})


@hookimpl(trylast=True)
def register_routing_strategies() -> Sequence[RoutingStrategyFactory]:
    """Offer the ``blue_green`` strategy."""
    return [BlueGreenRouting]
