"""The circuit breaker: one state machine per deployed version; *when* it trips is a policy.

::

    CLOSED --policy trips--> OPEN --cool-down over, next request--> HALF_OPEN
    HALF_OPEN --enough probe successes--> CLOSED
    HALF_OPEN --a probe fails, or no answer in time--> OPEN (longer cool-down)

The unit the breaker counts is an *execution* (a batch), not a request: a
batch that fails is one failure however many requests it held, so one
poisoned batch cannot look like a flood of errors. Requests are admitted
one by one: while open they are refused at once with CircuitOpenError;
half-open admits at most ``half_open_permits`` requests at a time, and
every permit is given back exactly once, whatever becomes of its request
(success, failure, an ignored error, cancellation). Reading the state
(:meth:`CircuitBreaker.snapshot`) never changes it or takes a permit.

Times come from an injectable clock; tests drive a FakeClock.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from turnout.core.clock import Clock
from turnout.core.errors import CircuitOpenError, InvalidConfigError

__all__ = [
    "BreakerConfig",
    "BreakerPolicy",
    "BreakerPolicyFactory",
    "BreakerSnapshot",
    "BreakerState",
    "CircuitBreaker",
    "Permit",
]


class BreakerState(StrEnum):
    """Where a breaker is: letting requests through, refusing them, or probing."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerConfig:
    """How a version's breaker trips and recovers.

    ``policy`` names a registered breaker policy and ``params`` configure it
    (the default ``error_rate`` policy takes ``threshold``, ``window``,
    ``min_calls``). After tripping, the breaker stays open ``cool_down``
    seconds, doubled (``backoff``) on every failed probe up to
    ``max_cool_down``. Half-open admits ``half_open_permits`` requests at a
    time, closes after ``successes_to_close`` successful probe executions, and
    re-opens if no probe answers within ``half_open_timeout`` seconds.
    """

    policy: str = "error_rate"
    params: Mapping[str, Any] = field(default_factory=dict)
    cool_down: float = 5.0
    max_cool_down: float = 300.0
    backoff: float = 2.0
    half_open_permits: int = 3
    successes_to_close: int = 2
    half_open_timeout: float = 30.0

    def __post_init__(self) -> None:
        for name in ("cool_down", "max_cool_down", "half_open_timeout"):
            value = getattr(self, name)
            if not _positive(value):
                raise InvalidConfigError(f"{name} must be a positive number of seconds")
        if self.max_cool_down < self.cool_down:
            raise InvalidConfigError("max_cool_down must be at least cool_down")
        if not _positive(self.backoff) or self.backoff < 1.0:
            raise InvalidConfigError("backoff must be a number >= 1")
        for name in ("half_open_permits", "successes_to_close"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidConfigError(f"{name} must be a positive integer")
        if not isinstance(self.policy, str) or not self.policy:
            raise InvalidConfigError("policy must name a breaker policy")
        if not isinstance(self.params, Mapping):
            raise InvalidConfigError("params must be a dict")


def _positive(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        # An int too large for a float is no usable number of seconds (and
        # math.isfinite raised OverflowError on it, not InvalidConfigError).
        number = float(value)
    except OverflowError:
        return False
    return math.isfinite(number) and number > 0


class BreakerPolicy(Protocol):
    """Decides when a closed breaker trips, from the executions it is shown."""

    def record(self, failed: bool, duration: float, now: float) -> None:
        """Count one execution: whether it failed and how long it took."""
        ...

    def should_trip(self, now: float) -> str | None:
        """Return the reason to open the breaker now, or None to stay closed."""
        ...

    def reset(self) -> None:
        """Forget every execution counted (the breaker closed again)."""
        ...


class BreakerPolicyFactory(Protocol):
    """A registered policy class: a ``name`` and a constructor that validates params."""

    @property
    def name(self) -> str:
        """The name a BreakerConfig uses to pick this policy."""
        ...

    def __call__(self, params: Mapping[str, Any], error_threshold: float) -> BreakerPolicy:
        """Build the policy; raise InvalidConfigError for bad params.

        ``error_threshold`` is the deployment's (or the server's) default
        error rate, for policies that use one.
        """
        ...


@dataclass(frozen=True)
class BreakerSnapshot:
    """A breaker's state at one moment, for status, health and metrics."""

    state: BreakerState
    reason: str
    opened_at: float | None
    retry_after: float
    cool_down: float
    probes_in_flight: int
    probe_successes: int
    times_opened: int


class Permit:
    """A half-open probe's right to run; given back exactly once."""

    __slots__ = ("epoch", "returned")

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.returned = False


StateListener = Callable[[BreakerState, BreakerState, str], None]


class CircuitBreaker:
    """One version's breaker: admits requests and learns from executions."""

    def __init__(
        self,
        name: str,
        policy: BreakerPolicy,
        config: BreakerConfig,
        clock: Clock,
        *,
        on_change: StateListener | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self._policy = policy
        self._clock = clock
        self._on_change = on_change
        self._state = BreakerState.CLOSED
        self._reason = ""
        self._opened_at: float | None = None
        self._cool_down = config.cool_down
        self._half_open_since = 0.0
        self._last_probe_answer = 0.0
        self._permits_out = 0
        self._probe_successes = 0
        self._times_opened = 0
        self._epoch = 0

    @property
    def state(self) -> BreakerState:
        """The current state, as last changed; reading it changes nothing."""
        return self._state

    def admit(self) -> Permit | None:
        """Admit one request, or raise CircuitOpenError.

        Returns None when closed (no permit to give back) and a Permit when
        the request is a half-open probe: pass it to :meth:`release` when the
        request is over, however it ended.
        """
        if self._state is BreakerState.CLOSED:
            return None
        now = self._clock.now()
        if self._state is BreakerState.OPEN:
            assert self._opened_at is not None
            if now < self._opened_at + self._cool_down:
                raise self._refusal(self._opened_at + self._cool_down - now)
            self._change(BreakerState.HALF_OPEN, "cool-down over: probing")
            self._half_open_since = self._last_probe_answer = now
            self._permits_out = 0
            self._probe_successes = 0
        elif (
            self._permits_out > 0 and now - self._last_probe_answer > self.config.half_open_timeout
        ):
            # Probes went out and none came back in time: a half-open state
            # that nothing answers must not stick. Only while probes are out:
            # with none out, a lull in traffic is no unanswered probe (it used
            # to re-open the breaker and refuse the next request).
            # Like a failed probe, it re-opens for a longer cool-down (the
            # contract above; this path used to keep the old one).
            self._cool_down = min(self._cool_down * self.config.backoff, self.config.max_cool_down)
            self._trip("no probe answered within the half-open timeout", now)
            raise self._refusal(self._cool_down)
        if self._permits_out >= self.config.half_open_permits:
            raise self._refusal(0.0)
        if self._permits_out == 0:
            # Nothing was out: the wait for an answer starts with this probe.
            self._last_probe_answer = now
        self._permits_out += 1
        return Permit(self._epoch)

    def release(self, permit: Permit | None) -> None:
        """Give a probe's permit back; safe to call once per admit, whatever happened."""
        if permit is None or permit.returned:
            return
        permit.returned = True
        # A permit from an earlier half-open spell was forgotten when it ended.
        if permit.epoch == self._epoch and self._permits_out > 0:
            self._permits_out -= 1

    def record(self, failed: bool, duration: float) -> None:
        """Count one execution's outcome (once per batch, not per request)."""
        now = self._clock.now()
        if self._state is BreakerState.CLOSED:
            self._policy.record(failed, duration, now)
            reason = self._policy.should_trip(now)
            if reason is not None:
                self._trip(reason, now)
        elif self._state is BreakerState.HALF_OPEN:
            if now - duration < self._half_open_since:
                # An execution that began before probing did: not a probe's
                # answer, so it must neither close nor re-open the breaker.
                return
            self._last_probe_answer = now
            if failed:
                self._cool_down = min(
                    self._cool_down * self.config.backoff, self.config.max_cool_down
                )
                self._trip("a probe failed", now)
            else:
                self._probe_successes += 1
                if self._probe_successes >= self.config.successes_to_close:
                    self._close("probes succeeded")
        # While open, nothing runs but stragglers admitted before it opened;
        # their outcomes say nothing new.

    def reset(self) -> None:
        """Close the breaker by hand and forget its history."""
        self._cool_down = self.config.cool_down
        self._close("reset by hand")

    def snapshot(self) -> BreakerSnapshot:
        """Return the state and its numbers without changing anything."""
        retry_after = 0.0
        if self._state is BreakerState.OPEN and self._opened_at is not None:
            retry_after = max(0.0, self._opened_at + self._cool_down - self._clock.now())
        return BreakerSnapshot(
            state=self._state,
            reason=self._reason,
            opened_at=self._opened_at,
            retry_after=retry_after,
            cool_down=self._cool_down,
            probes_in_flight=self._permits_out,
            probe_successes=self._probe_successes,
            times_opened=self._times_opened,
        )

    def _trip(self, reason: str, now: float) -> None:
        self._opened_at = now
        self._times_opened += 1
        self._permits_out = 0
        self._change(BreakerState.OPEN, reason)

    def _close(self, reason: str) -> None:
        self._policy.reset()
        self._opened_at = None
        self._permits_out = 0
        self._probe_successes = 0
        if self._state is BreakerState.CLOSED:
            self._reason = reason
            return
        self._cool_down = self.config.cool_down
        self._change(BreakerState.CLOSED, reason)

    def _change(self, new: BreakerState, reason: str) -> None:
        self._epoch += 1
        old, self._state, self._reason = self._state, new, reason
        if old is not new and self._on_change is not None:
            self._on_change(old, new, reason)

    def _refusal(self, retry_after: float) -> CircuitOpenError:
        return CircuitOpenError(
            f"Circuit breaker is open for model {self.name}", retry_after=retry_after
        )
