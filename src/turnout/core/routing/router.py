"""Per-model traffic state: the routing config, the strategy built from it, shadows, outcomes.

:class:`Router` owns that state for every model and is the one place that
turns a :class:`RoutingConfig` into a strategy through the registered
strategy classes. It never changes the registry; the server does, then
asks the router to rebuild the affected model's strategy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from turnout.core.errors import InvalidRoutingError, ModelNotFoundError
from turnout.core.routing.config import (
    Route,
    RouteRequest,
    RoutingConfig,
    RoutingContext,
    RoutingStrategy,
    RoutingStrategyFactory,
)
from turnout.core.routing.outcomes import OutcomeTracker
from turnout.core.routing.shadow_stats import ShadowRecorder

__all__ = ["ACTIVE", "ModelTraffic", "Router"]

ACTIVE = RoutingConfig("active")


class ModelTraffic:
    """One model's routing config and strategy, with its shadow and outcome records."""

    @property
    def strategy(self) -> RoutingStrategy:
        """The strategy built from :attr:`config`."""
        return self._strategy

    @strategy.setter
    def strategy(self, strategy: RoutingStrategy) -> None:
        self._strategy = strategy
        # A strategy that sends every request the same way says so with a
        # ``fixed_route`` attribute; routing then skips building a request.
        self.fixed_route: Route | None = getattr(strategy, "fixed_route", None)

    def __init__(
        self, config: RoutingConfig, strategy: RoutingStrategy, context: RoutingContext
    ) -> None:
        self.config = config
        self.context = context
        self.strategy = strategy
        self.shadows: dict[tuple[str, str], ShadowRecorder] = {}
        self.outcomes = OutcomeTracker(model_id=context.model_id)

    def shadow(self, primary: str, shadow: str) -> ShadowRecorder:
        """Return the recorder for (primary, shadow), creating it on first use."""
        recorder = self.shadows.get((primary, shadow))
        if recorder is None:
            recorder = self.shadows[(primary, shadow)] = ShadowRecorder(primary, shadow)
        return recorder


class Router:
    """Builds strategies from configs and routes each model's requests."""

    def __init__(
        self, strategies: Mapping[str, RoutingStrategyFactory], random: Callable[[], float]
    ) -> None:
        self._strategies = strategies
        self._random = random
        self._traffic: dict[str, ModelTraffic] = {}

    @property
    def strategy_names(self) -> list[str]:
        """Every strategy name a config may use."""
        return sorted(self._strategies)

    def build(self, config: RoutingConfig, context: RoutingContext) -> RoutingStrategy:
        """Return the strategy for ``config``; raise InvalidRoutingError if it is refused."""
        factory = self._strategies.get(config.strategy)
        if factory is None:
            raise InvalidRoutingError(
                f"unknown routing strategy {config.strategy!r};"
                f" known: {', '.join(self.strategy_names)}"
            )
        try:
            return factory(config.params, context)
        except InvalidRoutingError:
            raise
        except Exception as exc:
            # A plugin's constructor that breaks its contract must not leave
            # a deploy or a retire half done: treat it as a refused config.
            raise InvalidRoutingError(
                f"routing strategy {config.strategy!r} refused its params:"
                f" {type(exc).__name__}: {exc}"
            ) from exc

    def traffic(self, model_id: str) -> ModelTraffic:
        """Return the model's traffic state; raise ModelNotFoundError if it has none."""
        traffic = self._traffic.get(model_id)
        if traffic is None:
            raise ModelNotFoundError(
                f"Model '{model_id}' not found or no active version set", model_id=model_id
            )
        return traffic

    def config(self, model_id: str) -> RoutingConfig:
        """Return the model's routing config (``active`` for a model never routed)."""
        traffic = self._traffic.get(model_id)
        return ACTIVE if traffic is None else traffic.config

    def set(self, model_id: str, config: RoutingConfig, context: RoutingContext) -> RoutingConfig:
        """Replace the model's routing; return the old config. On error the old one stays."""
        strategy = self.build(config, context)
        traffic = self._traffic.get(model_id)
        if traffic is None:
            self._traffic[model_id] = ModelTraffic(config, strategy, context)
            return ACTIVE
        old = traffic.config
        traffic.config, traffic.strategy, traffic.context = config, strategy, context
        return old

    def refresh(
        self, model_id: str, context: RoutingContext, *, keep_unaffected: bool = True
    ) -> RoutingConfig | None:
        """Rebuild the model's strategy after its versions changed.

        If the config no longer fits (a version it names is gone), the model
        falls back to ``active`` routing and the dropped config is returned.
        With ``keep_unaffected`` (after a deployment), a strategy whose
        versions and active version are unchanged is kept as it is.
        """
        config = self.config(model_id)
        traffic = self._traffic.get(model_id)
        if (
            keep_unaffected
            and traffic is not None
            and traffic.context.active == context.active
            and traffic.strategy.versions() <= context.versions
        ):
            # Nothing the strategy routes to changed: keep it, and what it has
            # learned (a bandit's posteriors), across unrelated deployments.
            traffic.context = context
            return None
        try:
            self.set(model_id, config, context)
        except InvalidRoutingError:
            self.set(model_id, ACTIVE, context)
            return config
        return None

    def drop(self, model_id: str) -> None:
        """Forget a model that has no versions left."""
        self._traffic.pop(model_id, None)

    def route(self, model_id: str, key: str | None, attributes: Mapping[str, Any]) -> Route:
        """Return the Route for one request to ``model_id``."""
        traffic = self.traffic(model_id)
        if traffic.fixed_route is not None:
            return traffic.fixed_route
        return traffic.strategy.route(RouteRequest(key, self._random, attributes))
