"""Built-in circuit-breaker policies: when a closed breaker trips.

* ``error_rate`` (the default): the share of failed executions over a
  sliding window, counted (the last ``window`` executions) or timed (the
  last ``window_seconds``), once at least ``min_calls`` are in it. Its
  ``threshold`` defaults to the deployment's ``error_threshold``.
* ``consecutive_failures``: ``failures`` failed executions in a row.
* ``slow_calls``: the share of executions slower than ``slow_seconds`` over a
  counted window, once at least ``min_calls`` are in it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from turnout.core.errors import InvalidConfigError
from turnout.core.hookspecs import hookimpl
from turnout.core.resilience.breaker import BreakerPolicyFactory

__all__ = ["ConsecutiveFailuresPolicy", "ErrorRatePolicy", "SlowCallPolicy"]


def _params(params: Mapping[str, Any], policy: str, allowed: set[str]) -> None:
    unknown = set(params) - allowed
    if unknown:
        # key=str: a key that is no string made sorted() raise TypeError instead.
        unknown_params = sorted(unknown, key=str)
        raise InvalidConfigError(f"breaker policy {policy!r}: unknown params {unknown_params}")


def _count(params: Mapping[str, Any], name: str, default: int) -> int:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


def _finite(value: object) -> float | None:
    """``value`` as a finite float, or None if it is not a number (nor a bool)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        # math.isfinite (and float) raise OverflowError on an int too large for
        # a float: that must be an InvalidConfigError like any bad value.
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _fraction(params: Mapping[str, Any], name: str, default: float) -> float:
    value = params.get(name, default)
    number = _finite(value)
    if number is None or not 0.0 <= number <= 1.0:
        raise InvalidConfigError(f"{name} must be a number in [0, 1], got {value!r}")
    return number


def _seconds(params: Mapping[str, Any], name: str, default: float | None) -> float | None:
    value = params.get(name, default)
    if value is None and default is None:
        # None is "not set" only where that is the default: an explicit
        # slow_seconds=None used to pass here and fail an assert later.
        return None
    number = _finite(value)
    if number is None or number <= 0:
        raise InvalidConfigError(f"{name} must be a positive number of seconds, got {value!r}")
    return number


def _fits(min_calls: int, window: int) -> None:
    # A counted window never holds more than ``window`` executions: with
    # min_calls above that, the policy silently never tripped.
    if min_calls > window:
        raise InvalidConfigError(
            f"min_calls ({min_calls}) exceeds window ({window}): the breaker could never trip"
        )


class ErrorRatePolicy:
    """Trips when the failed share of recent executions exceeds ``threshold``."""

    name: ClassVar[str] = "error_rate"

    def __init__(self, params: Mapping[str, Any], error_threshold: float) -> None:
        _params(params, self.name, {"threshold", "window", "window_seconds", "min_calls"})
        self.threshold = _fraction(params, "threshold", error_threshold)
        self.window = _count(params, "window", 50)
        self.window_seconds = _seconds(params, "window_seconds", None)
        self.min_calls = _count(params, "min_calls", 10)
        if self.window_seconds is None:
            _fits(self.min_calls, self.window)
        self._calls: deque[tuple[float, bool]] = deque()
        self._failures = 0

    def record(self, failed: bool, duration: float, now: float) -> None:
        """Add one execution to the window, dropping what falls out of it."""
        self._calls.append((now, failed))
        self._failures += failed
        if self.window_seconds is None:
            while len(self._calls) > self.window:
                self._failures -= self._calls.popleft()[1]
        self._expire(now)

    def _expire(self, now: float) -> None:
        if self.window_seconds is not None:
            while self._calls and self._calls[0][0] < now - self.window_seconds:
                self._failures -= self._calls.popleft()[1]

    def should_trip(self, now: float) -> str | None:
        """Trip once the window holds ``min_calls`` and its error rate is over the threshold."""
        self._expire(now)
        calls = len(self._calls)
        if calls < self.min_calls:
            return None
        rate = self._failures / calls
        if rate > self.threshold:
            return (
                f"error rate {rate:.0%} over the last {calls} executions"
                f" exceeds {self.threshold:.0%}"
            )
        return None

    def reset(self) -> None:
        """Empty the window."""
        self._calls.clear()
        self._failures = 0


class ConsecutiveFailuresPolicy:
    """Trips after ``failures`` failed executions in a row."""

    name: ClassVar[str] = "consecutive_failures"

    def __init__(self, params: Mapping[str, Any], error_threshold: float) -> None:
        _params(params, self.name, {"failures"})
        self.failures = _count(params, "failures", 5)
        self._streak = 0

    def record(self, failed: bool, duration: float, now: float) -> None:
        """Extend or break the streak."""
        self._streak = self._streak + 1 if failed else 0

    def should_trip(self, now: float) -> str | None:
        """Trip when the streak reaches ``failures``."""
        if self._streak >= self.failures:
            return f"{self._streak} executions failed in a row"
        return None

    def reset(self) -> None:
        """Forget the streak."""
        self._streak = 0


class SlowCallPolicy:
    """Trips when too many recent executions were slower than ``slow_seconds``."""

    name: ClassVar[str] = "slow_calls"

    def __init__(self, params: Mapping[str, Any], error_threshold: float) -> None:
        _params(params, self.name, {"slow_seconds", "threshold", "window", "min_calls"})
        slow = _seconds(params, "slow_seconds", 1.0)
        assert slow is not None
        self.slow_seconds = slow
        self.threshold = _fraction(params, "threshold", 0.5)
        self.window = _count(params, "window", 50)
        self.min_calls = _count(params, "min_calls", 10)
        _fits(self.min_calls, self.window)
        self._calls: deque[bool] = deque()
        self._slow = 0

    def record(self, failed: bool, duration: float, now: float) -> None:
        """Add one execution, slow or not, to the window."""
        slow = duration > self.slow_seconds
        self._calls.append(slow)
        self._slow += slow
        while len(self._calls) > self.window:
            self._slow -= self._calls.popleft()

    def should_trip(self, now: float) -> str | None:
        """Trip once the window holds ``min_calls`` and the slow share is over the threshold."""
        calls = len(self._calls)
        if calls < self.min_calls:
            return None
        share = self._slow / calls
        if share > self.threshold:
            return (
                f"{share:.0%} of the last {calls} executions took longer than"
                f" {self.slow_seconds:g} s"
            )
        return None

    def reset(self) -> None:
        """Empty the window."""
        self._calls.clear()
        self._slow = 0


@hookimpl(trylast=True)
def register_breaker_policies() -> Sequence[BreakerPolicyFactory]:
    """Offer the built-in breaker policies."""
    return [ErrorRatePolicy, ConsecutiveFailuresPolicy, SlowCallPolicy]
