"""The ``bandit`` strategy: traffic shifts toward the version with the best outcomes.

Params: ``{"versions": ["v1", "v2"], "algorithm": "thompson", "epsilon": 0.1,
"seed": null}``. Rewards come from ``record_outcome`` and must lie in [0, 1]
(1 a success, 0 a failure, fractions in between). Thompson sampling draws
from each version's Beta posterior and routes to the best draw; epsilon-greedy
explores at random with probability ``epsilon`` and otherwise exploits the
best mean. A posterior counts every outcome recorded for its version by any
server sharing the control state: the server hands the bandit each version's
shared totals (``adopt_outcomes``) after each outcome and once a second, so
all processes route on one posterior, and a rebuilt bandit (a new config, a
restart) resumes where the fleet's outcomes stand.
"""

from __future__ import annotations

import logging
import math
import random
import threading
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from turnout.core.errors import InvalidInputError, InvalidRoutingError
from turnout.core.hookspecs import hookimpl
from turnout.core.routing.config import (
    Route,
    RouteRequest,
    RoutingContext,
    RoutingStrategyFactory,
    check_versions,
)
from turnout.core.routing.outcomes import OutcomeTotals

__all__ = ["BanditRouting"]

logger = logging.getLogger("turnout")

ALGORITHMS = ("thompson", "epsilon_greedy")


class BanditRouting:
    """Thompson sampling or epsilon-greedy over versions, learning from outcome feedback."""

    name: ClassVar[str] = "bandit"

    def __init__(self, params: Mapping[str, Any], context: RoutingContext) -> None:
        unknown = set(params) - {"versions", "algorithm", "epsilon", "seed"}
        if unknown:
            raise InvalidRoutingError(f"'bandit' routing: unknown params {sorted(unknown)}")
        versions = check_versions(params.get("versions"), context)
        algorithm = params.get("algorithm", "thompson")
        if algorithm not in ALGORITHMS:
            raise InvalidRoutingError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
        epsilon = params.get("epsilon", 0.1)
        if isinstance(epsilon, bool) or not isinstance(epsilon, int | float):
            raise InvalidRoutingError(f"epsilon must be a number in [0, 1], got {epsilon!r}")
        if not 0.0 <= epsilon <= 1.0:
            raise InvalidRoutingError(f"epsilon must be in [0, 1], got {epsilon!r}")
        seed = params.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise InvalidRoutingError(f"seed must be an integer or null, got {seed!r}")
        self._versions = versions
        self._routes = {version: Route(version) for version in versions}
        self._algorithm = algorithm
        self._epsilon = float(epsilon)
        self._random = random.Random(seed)
        # Beta(1, 1) priors: [successes + 1, failures + 1] per version.
        self._posterior = {version: [1.0, 1.0] for version in versions}
        self._lock = threading.Lock()
        self._foreign: set[str] = set()  # versions whose shared outcomes are not rewards

    def route(self, request: RouteRequest) -> Route:
        """Return the version chosen by the configured algorithm."""
        with self._lock:
            if self._algorithm == "thompson":
                draws = {v: self._random.betavariate(a, b) for v, (a, b) in self._posterior.items()}
                return self._routes[max(draws, key=draws.__getitem__)]
            if self._random.random() < self._epsilon:
                return self._routes[self._random.choice(self._versions)]
            means = {v: a / (a + b) for v, (a, b) in self._posterior.items()}
            return self._routes[max(means, key=means.__getitem__)]

    def record_outcome(self, version: str, reward: float) -> None:
        """Update ``version``'s posterior with a reward in [0, 1] (a bool counts as 0 or 1)."""
        if isinstance(reward, bool):
            # As OutcomeTracker.record takes it: without this, record_outcome(..., True)
            # worked under every routing but the bandit, the one that learns from it.
            reward = float(reward)
        if (
            not isinstance(reward, int | float)
            # Range before isfinite, which raises OverflowError on a huge int.
            or not 0.0 <= reward <= 1.0
            or not math.isfinite(reward)
        ):
            raise InvalidInputError(f"a bandit reward must be in [0, 1], got {reward!r}")
        posterior = self._posterior.get(version)
        if posterior is None:
            return
        with self._lock:
            posterior[0] += reward
            posterior[1] += 1.0 - reward

    def adopt_outcomes(self, version: str, totals: OutcomeTotals) -> None:
        """Set ``version``'s posterior to the prior plus ``totals``: every reward it was given.

        Totals no set of rewards in [0, 1] adds up to (outcomes of another
        kind, recorded for the version before it was in a bandit) are
        ignored: the posterior stays as it is.
        """
        posterior = self._posterior.get(version)
        if posterior is None or totals.count == 0:
            return
        successes = totals.count * totals.shift + totals.total
        # A little slack for the rounding in sums of many fractions.
        slack = 1e-9 * totals.count
        if not -slack <= successes <= totals.count + slack:
            if version not in self._foreign:  # said once, not at every refresh
                self._foreign.add(version)
                logger.warning(
                    "bandit: the outcomes of %s are not all rewards in [0, 1];"
                    " not learning from them",
                    version,
                )
            return
        successes = min(max(successes, 0.0), float(totals.count))
        with self._lock:
            posterior[0] = 1.0 + successes
            posterior[1] = 1.0 + totals.count - successes

    def posteriors(self) -> dict[str, tuple[float, float]]:
        """Return each version's Beta posterior parameters (alpha, beta)."""
        with self._lock:
            return {v: (a, b) for v, (a, b) in self._posterior.items()}

    def versions(self) -> frozenset[str]:
        """Every version in the bandit."""
        return frozenset(self._versions)


@hookimpl(trylast=True)
def register_routing_strategies() -> Sequence[RoutingStrategyFactory]:
    """Offer the ``bandit`` strategy."""
    return [BanditRouting]
