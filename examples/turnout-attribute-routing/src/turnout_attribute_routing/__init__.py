"""Route each request to a version chosen by one of its attributes (an example turnout plugin)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from turnout import (
    InvalidRoutingError,
    Route,
    RouteRequest,
    RoutingContext,
    RoutingStrategyFactory,
    hookimpl,
)

__all__ = ["AttributeRouting", "register_routing_strategies"]


class AttributeRouting:
    """Sends a request to ``routes[request.attributes[attribute]]``, else to ``default``.

    Params: ``{"attribute": "region", "routes": {"eu": "v2"}, "default": "v1"}``.
    """

    name: ClassVar[str] = "attribute"

    def __init__(self, params: Mapping[str, Any], context: RoutingContext) -> None:
        attribute = params.get("attribute")
        routes = params.get("routes")
        default = params.get("default", context.active)
        if not isinstance(attribute, str) or not attribute:
            raise InvalidRoutingError('"attribute" must name a request attribute')
        if not isinstance(routes, Mapping):
            raise InvalidRoutingError('"routes" must map attribute values to versions')
        for version in [*routes.values(), default]:
            if version not in context.versions:
                raise InvalidRoutingError(f"version {version!r} is not deployed")
        self._attribute = attribute
        self._routes = {str(value): Route(version) for value, version in routes.items()}
        self._default = Route(default)

    def route(self, request: RouteRequest) -> Route:
        """Return the version mapped to the request's attribute value, or the default."""
        value = request.attributes.get(self._attribute)
        return self._routes.get(str(value), self._default)

    def versions(self) -> frozenset[str]:
        """Every version this routing can send a request to."""
        return frozenset({self._default.primary, *(r.primary for r in self._routes.values())})


@hookimpl
def register_routing_strategies() -> Sequence[RoutingStrategyFactory]:
    """Offer the ``attribute`` strategy to every turnout server."""
    return [AttributeRouting]
