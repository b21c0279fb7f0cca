"""The ``sticky`` strategy: weighted, but a request key always lands on the same version.

Params as for ``weighted``. Keys are placed by weighted rendezvous hashing
(highest random weight): each (key, version) pair gets a hash-derived score
``-weight / ln(u)`` and the highest score wins. A key stays put while the
weights stand; when one version's weight grows, only keys that move *to*
it move, the fewest that must. The hash is BLAKE2b, not Python's salted
``hash()``, so every replica places a key the same way. Requests with no key
are routed at random by weight.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from turnout.core.hookspecs import hookimpl
from turnout.core.routing.config import Route, RouteRequest, RoutingContext, RoutingStrategyFactory
from turnout.strategies.weighted import WeightedRouting, read_split

__all__ = ["StickyRouting", "key_score"]

_TWO_64 = float(2**64)
_BELOW_ONE = math.nextafter(1.0, 0.0)


def key_score(key: str, version: str, weight: float) -> float:
    """Return the rendezvous score of ``key`` for ``version`` at ``weight``."""
    digest = hashlib.blake2b(f"{version}\x00{key}".encode(), digest_size=8).digest()
    u = (int.from_bytes(digest, "big") + 0.5) / _TWO_64  # uniform in (0, 1)
    # The top ~1024 digests round to exactly 1.0 as floats, and log(1.0) == 0
    # would divide by zero: keep u below 1 (every other u is unchanged).
    u = min(u, _BELOW_ONE)
    return -weight / math.log(u)


class StickyRouting:
    """Routes each key to one version, in proportion to the weights over many keys."""

    name: ClassVar[str] = "sticky"

    def __init__(self, params: Mapping[str, Any], context: RoutingContext) -> None:
        versions, weights = read_split(params, context, self.name)
        self._candidates = [
            (version, weight, Route(version))
            for version, weight in zip(versions, weights, strict=True)
            if weight > 0
        ]
        self._fallback = WeightedRouting(params, context)
        # Over many keys, rendezvous hashing gives each version its weight's share.
        self.split = self._fallback.split

    def route(self, request: RouteRequest) -> Route:
        """Return the version with the highest rendezvous score for the request's key."""
        key = request.key
        if key is None:
            return self._fallback.route(request)
        best = max(self._candidates, key=lambda c: key_score(key, c[0], c[1]))
        return best[2]

    def versions(self) -> frozenset[str]:
        """Every version with a weight above zero."""
        return frozenset(version for version, _, _ in self._candidates)


@hookimpl(trylast=True)
def register_routing_strategies() -> Sequence[RoutingStrategyFactory]:
    """Offer the ``sticky`` strategy."""
    return [StickyRouting]
