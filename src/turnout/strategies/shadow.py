"""The ``shadow`` strategy: the primary answers; mirrors get a copy of some requests.

Params: ``{"primary": "v1", "mirrors": {"v2": 1.0, "v3": 0.1}}``: each mirror
receives that fraction of requests. ``primary`` defaults to the active
version. The caller always gets the primary's result: mirrors run beside it,
are compared with it, and never delay or fail it.
"""

from __future__ import annotations

import math
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

__all__ = ["ShadowRouting"]


class ShadowRouting:
    """Routes to one primary version and mirrors a fraction of requests to others."""

    name: ClassVar[str] = "shadow"

    def __init__(self, params: Mapping[str, Any], context: RoutingContext) -> None:
        unknown = set(params) - {"primary", "mirrors"}
        if unknown:
            raise InvalidRoutingError(f"'shadow' routing: unknown params {sorted(unknown)}")
        primary = params.get("primary", context.active)
        if primary is None:
            raise InvalidRoutingError(
                "'shadow' routing needs a primary: the model has no active version"
            )
        (primary,) = check_versions([primary], context, what="primary")
        mirrors = params.get("mirrors")
        if not isinstance(mirrors, Mapping) or not mirrors:
            raise InvalidRoutingError('"mirrors" must map mirror versions to fractions in [0, 1]')
        check_versions(list(mirrors), context, what="mirrors")
        if primary in mirrors:
            raise InvalidRoutingError(f"version {primary!r} cannot mirror itself")
        for version, fraction in mirrors.items():
            if (
                isinstance(fraction, bool)
                or not isinstance(fraction, int | float)
                # Range first: isfinite raises OverflowError on a huge JSON int.
                or not (0.0 <= fraction <= 1.0 and math.isfinite(fraction))
            ):
                raise InvalidRoutingError(
                    f"mirror fraction of {version!r} must be in [0, 1], got {fraction!r}"
                )
        self._primary = primary
        self._mirrors = tuple((v, float(f)) for v, f in mirrors.items() if f > 0)
        self._everything = Route(primary, tuple(v for v, f in self._mirrors if f >= 1.0))
        self._all_full = all(f >= 1.0 for _, f in self._mirrors)
        self.split = {primary: 1.0}
        self.mirrors = dict(self._mirrors)

    def route(self, request: RouteRequest) -> Route:
        """Return the primary, with each mirror drawn by its fraction."""
        if self._all_full:
            return self._everything
        mirrors = tuple(v for v, f in self._mirrors if f >= 1.0 or request.random() < f)
        return Route(self._primary, mirrors)

    def versions(self) -> frozenset[str]:
        """The primary and every mirror."""
        return frozenset({self._primary, *(v for v, _ in self._mirrors)})


@hookimpl(trylast=True)
def register_routing_strategies() -> Sequence[RoutingStrategyFactory]:
    """Offer the ``shadow`` strategy."""
    return [ShadowRouting]
