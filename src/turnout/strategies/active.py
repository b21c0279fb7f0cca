"""The ``active`` strategy: every request to the model's active version (the default)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from turnout.core.errors import InvalidRoutingError, ModelNotFoundError
from turnout.core.hookspecs import hookimpl
from turnout.core.routing.config import Route, RouteRequest, RoutingContext, RoutingStrategyFactory

__all__ = ["ActiveRouting"]


class ActiveRouting:
    """Routes everything to the active version; takes no params."""

    name: ClassVar[str] = "active"

    def __init__(self, params: Mapping[str, Any], context: RoutingContext) -> None:
        if params:
            raise InvalidRoutingError(f"'active' routing takes no params, got {sorted(params)}")
        self._model_id = context.model_id
        self._route = None if context.active is None else Route(context.active)
        self.fixed_route = self._route
        self.split = {} if context.active is None else {context.active: 1.0}

    def route(self, request: RouteRequest) -> Route:
        """Return the active version, or raise ModelNotFoundError if there is none."""
        if self._route is None:
            raise ModelNotFoundError(
                f"Model '{self._model_id}' not found or no active version set",
                model_id=self._model_id,
            )
        return self._route

    def versions(self) -> frozenset[str]:
        """The active version, if any."""
        return frozenset() if self._route is None else frozenset({self._route.primary})


@hookimpl(trylast=True)
def register_routing_strategies() -> Sequence[RoutingStrategyFactory]:
    """Offer the ``active`` strategy."""
    return [ActiveRouting]
