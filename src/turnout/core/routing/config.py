"""Routing as data: a model's RoutingConfig, and the strategy objects built from it.

A model's routing is plain, JSON-serialisable data (:class:`RoutingConfig`),
so it can be stored, sent over HTTP and shared by replicas. A registered
strategy class turns it into an object whose :meth:`~RoutingStrategy.route`
picks versions for one request. Routing is deterministic given the config,
the request key and the request's random draws, so replicas that share a
config split traffic alike.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple, Protocol

from turnout.core.errors import InvalidRoutingError

__all__ = [
    "Route",
    "RouteRequest",
    "RoutingConfig",
    "RoutingContext",
    "RoutingSplit",
    "RoutingStrategy",
    "RoutingStrategyFactory",
    "check_versions",
    "check_weights",
    "split_of",
]


@dataclass(frozen=True)
class RoutingConfig:
    """A model's routing: a strategy name and its JSON-serialisable parameters."""

    strategy: str = "active"
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.strategy, str) or not self.strategy:
            raise InvalidRoutingError(f"strategy must be a non-empty string, got {self.strategy!r}")
        if not isinstance(self.params, Mapping):
            raise InvalidRoutingError("params must be a dict")
        try:
            # A round trip both proves the params serialisable and freezes a private copy.
            params = json.loads(json.dumps(dict(self.params), allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise InvalidRoutingError(f"routing params must be plain JSON data: {exc}") from None
        object.__setattr__(self, "params", MappingProxyType(params))

    def to_dict(self) -> dict[str, Any]:
        """Return the config as plain data: ``{"strategy": ..., "params": {...}}``."""
        return {"strategy": self.strategy, "params": json.loads(json.dumps(dict(self.params)))}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RoutingConfig:
        """Build a config from :meth:`to_dict` output."""
        if not isinstance(data, Mapping) or "strategy" not in data:
            raise InvalidRoutingError('routing must be a dict with a "strategy" key')
        unknown = set(data) - {"strategy", "params"}
        if unknown:
            raise InvalidRoutingError(f"unknown routing keys: {sorted(unknown)}")
        return cls(strategy=data["strategy"], params=data.get("params") or {})


@dataclass(frozen=True, slots=True)
class Route:
    """Where one request goes: the version that answers, and versions that get a copy."""

    primary: str
    mirrors: tuple[str, ...] = ()


_NO_ATTRIBUTES: Mapping[str, Any] = MappingProxyType({})


class RouteRequest(NamedTuple):
    """What a strategy may look at to route one request.

    A named tuple rather than a dataclass: one is built per request.
    """

    key: str | None
    random: Callable[[], float]
    attributes: Mapping[str, Any] = _NO_ATTRIBUTES


@dataclass(frozen=True)
class RoutingContext:
    """The model a strategy routes for: its id, active version and deployed versions."""

    model_id: str
    active: str | None
    versions: frozenset[str]


class RoutingStrategy(Protocol):
    """Picks the version(s) for each request of one model."""

    def route(self, request: RouteRequest) -> Route:
        """Return the Route for ``request``; must be quick and must not block."""
        ...

    def versions(self) -> frozenset[str]:
        """Return every version this routing may send traffic to."""
        ...


# A strategy may also set ``fixed_route: Route | None``: when not None, every
# request goes that way and ``route`` is not called (the ``active`` and
# ``blue_green`` strategies do, which makes their routing free).
#
# It may also have a ``split`` attribute (or property): ``{version: share}``,
# the share of requests it sends each version (the shares sum to 1), and a
# ``mirrors`` one: ``{version: fraction}`` of requests copied to a shadow.
# Status displays show them (:func:`split_of`); a strategy without a split,
# such as a bandit whose shares change with every outcome, is shown by the
# traffic it sent instead.


@dataclass(frozen=True)
class RoutingSplit:
    """Where a model's requests go: each version's share, and the fractions mirrored.

    ``shares`` is None when the strategy does not say.
    """

    shares: Mapping[str, float] | None
    mirrors: Mapping[str, float]


def split_of(strategy: RoutingStrategy) -> RoutingSplit:
    """Return the split ``strategy`` declares (see above), or one with ``shares=None``."""
    shares = getattr(strategy, "split", None)
    mirrors = getattr(strategy, "mirrors", None)
    return RoutingSplit(
        None if shares is None else dict(shares), {} if mirrors is None else dict(mirrors)
    )


class RoutingStrategyFactory(Protocol):
    """A registered strategy class: a ``name`` and a constructor that validates params."""

    @property
    def name(self) -> str:
        """The name a RoutingConfig uses to pick this strategy."""
        ...

    def __call__(self, params: Mapping[str, Any], context: RoutingContext) -> RoutingStrategy:
        """Build the strategy; raise InvalidRoutingError if ``params`` don't fit ``context``."""
        ...


def check_versions(
    versions: object, context: RoutingContext, *, what: str = "versions"
) -> tuple[str, ...]:
    """Return ``versions`` as a tuple if each is deployed and none repeats, else raise."""
    if isinstance(versions, str) or not isinstance(versions, Sequence) or not versions:
        raise InvalidRoutingError(f"{what} must be a non-empty list of version names")
    result = tuple(versions)
    for version in result:
        if not isinstance(version, str) or version not in context.versions:
            known = ", ".join(sorted(context.versions)) or "none"
            raise InvalidRoutingError(
                f"version {version!r} of model '{context.model_id}' is not deployed"
                f" (deployed: {known})"
            )
    if len(set(result)) != len(result):
        raise InvalidRoutingError(f"{what} must not repeat a version")
    return result


def check_weights(weights: object, count: int) -> tuple[float, ...]:
    """Return ``weights`` normalised to sum 1 if there are ``count`` non-negative ones."""
    if isinstance(weights, str) or not isinstance(weights, Sequence):
        raise InvalidRoutingError("weights must be a list of numbers")
    if len(weights) != count:
        raise InvalidRoutingError(f"{len(weights)} weights given for {count} versions")
    values: list[float] = []
    for weight in weights:
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise InvalidRoutingError(f"weight {weight!r} is not a number")
        try:
            value = float(weight)
        except OverflowError:
            # JSON may carry an int too large for a float; math.isfinite would raise too.
            raise InvalidRoutingError(f"weight {weight!r} is too large") from None
        if not math.isfinite(value) or value < 0:
            raise InvalidRoutingError(f"weight {weight!r} must be a finite number >= 0")
        values.append(value)
    try:
        total = math.fsum(values)
    except OverflowError:
        # Finite weights can still add up past the float range ([1e308, 1e308]).
        raise InvalidRoutingError("weights are too large: scale them down") from None
    if total <= 0:
        raise InvalidRoutingError("weights must not all be zero")
    return tuple(value / total for value in values)


def default_random() -> Callable[[], float]:
    """Return a fresh, independently seeded uniform [0, 1) source."""
    return random.Random().random
