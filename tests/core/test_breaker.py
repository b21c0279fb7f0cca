"""The circuit breaker, driven directly: a FakeClock, a real policy, no server.

::

    CLOSED --policy trips--> OPEN --cool-down over, next request--> HALF_OPEN
    HALF_OPEN --enough probe successes--> CLOSED
    HALF_OPEN --a probe fails, or no answer in time--> OPEN (longer cool-down)

Closed admits every request with no permit (None); open refuses at once
with CircuitOpenError; half-open hands out at most ``half_open_permits``
permits, each given back exactly once. ``snapshot()`` only reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from turnout import (
    BreakerConfig,
    BreakerState,
    CircuitOpenError,
    InvalidConfigError,
    ServiceUnavailableError,
)
from turnout.core.clock import FakeClock
from turnout.core.resilience.breaker import CircuitBreaker, Permit
from turnout.plugins.breaker_policies import ConsecutiveFailuresPolicy, ErrorRatePolicy

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN

# Cool-down 10 s, doubled on each failed probe up to 60 s; two probes at a
# time; two probe successes close it; probes must answer within 30 s.
CONFIG = BreakerConfig(
    policy="consecutive_failures",
    params={"failures": 3},
    cool_down=10.0,
    max_cool_down=60.0,
    backoff=2.0,
    half_open_permits=2,
    successes_to_close=2,
    half_open_timeout=30.0,
)
REFUSED = r"^Circuit breaker is open for model m:v$"


@dataclass
class Changes:
    """A state-change listener that remembers every (old, new, reason)."""

    seen: list[tuple[BreakerState, BreakerState, str]] = field(default_factory=list)

    def __call__(self, old: BreakerState, new: BreakerState, reason: str) -> None:
        self.seen.append((old, new, reason))

    @property
    def states(self) -> list[tuple[BreakerState, BreakerState]]:
        return [(old, new) for old, new, _ in self.seen]


def make_breaker(
    clock: FakeClock, config: BreakerConfig = CONFIG, changes: Changes | None = None
) -> CircuitBreaker:
    """A breaker named m:v that trips after three failed executions in a row."""
    policy = ConsecutiveFailuresPolicy(config.params, 0.5)
    return CircuitBreaker("m:v", policy, config, clock, on_change=changes)


def trip(breaker: CircuitBreaker) -> None:
    for _ in range(3):
        breaker.record(True, 0.0)
    assert breaker.state is OPEN


def half_open(breaker: CircuitBreaker, clock: FakeClock) -> Permit:
    """Trip the breaker, wait out the cool-down and take the first probe's permit."""
    trip(breaker)
    clock.advance(breaker.snapshot().retry_after)
    permit = breaker.admit()
    assert permit is not None
    assert breaker.state is HALF_OPEN
    return permit


# -- closed -----------------------------------------------------------------------------------


def test_a_closed_breaker_admits_every_request_without_a_permit(fake_clock):
    breaker = make_breaker(fake_clock)
    for _ in range(100):
        assert breaker.admit() is None
    breaker.release(None)  # what the server does with a closed breaker's "permit"
    snapshot = breaker.snapshot()
    assert snapshot.state is CLOSED
    assert (snapshot.opened_at, snapshot.retry_after, snapshot.cool_down) == (None, 0.0, 10.0)
    assert (snapshot.probes_in_flight, snapshot.probe_successes, snapshot.times_opened) == (0, 0, 0)


def test_it_trips_when_its_policy_says_so(fake_clock):
    changes = Changes()
    breaker = make_breaker(fake_clock, changes=changes)
    breaker.record(True, 0.0)
    breaker.record(True, 0.0)
    breaker.record(False, 0.0)  # breaks the streak
    breaker.record(True, 0.0)
    breaker.record(True, 0.0)
    assert breaker.state is CLOSED

    breaker.record(True, 0.0)

    snapshot = breaker.snapshot()
    assert snapshot.state is OPEN
    assert snapshot.reason == "3 executions failed in a row"
    assert snapshot.opened_at == fake_clock.now()
    assert snapshot.retry_after == 10.0
    assert snapshot.times_opened == 1
    assert changes.seen == [(CLOSED, OPEN, "3 executions failed in a row")]


def test_it_trips_on_the_error_rate_policy_too(fake_clock):
    policy = ErrorRatePolicy({"window": 10, "min_calls": 4}, 0.5)
    breaker = CircuitBreaker("m:v", policy, BreakerConfig(), fake_clock)
    for failed in (True, False, True):  # three calls: below min_calls
        breaker.record(failed, 0.0)
    assert breaker.state is CLOSED
    breaker.record(False, 0.0)  # 2 of 4 failed: 50% does not exceed 50%
    assert breaker.state is CLOSED
    breaker.record(True, 0.0)  # 3 of 5: 60%
    assert breaker.state is OPEN
    assert breaker.snapshot().reason == "error rate 60% over the last 5 executions exceeds 50%"


# -- open -------------------------------------------------------------------------------------


def test_an_open_breaker_refuses_at_once_and_says_when_to_retry(fake_clock):
    breaker = make_breaker(fake_clock)
    trip(breaker)
    fake_clock.advance(4.0)

    with pytest.raises(CircuitOpenError, match=REFUSED) as refused:
        breaker.admit()

    assert refused.value.retry_after == pytest.approx(6.0)
    assert isinstance(refused.value, ServiceUnavailableError)
    assert breaker.state is OPEN
    assert breaker.snapshot().retry_after == pytest.approx(6.0)


def test_outcomes_of_stragglers_while_open_change_nothing(fake_clock):
    # Requests admitted while closed may still finish after the breaker opened.
    changes = Changes()
    breaker = make_breaker(fake_clock, changes=changes)
    trip(breaker)
    fake_clock.advance(1.0)
    before = breaker.snapshot()

    for _ in range(5):
        breaker.record(False, 0.0)
        breaker.record(True, 0.0)

    assert breaker.snapshot() == before
    assert changes.states == [(CLOSED, OPEN)]
    fake_clock.advance(9.0)  # the cool-down is neither lengthened nor cut short
    assert isinstance(breaker.admit(), Permit)


# -- half-open --------------------------------------------------------------------------------


def test_after_the_cool_down_the_next_request_is_a_probe(fake_clock):
    changes = Changes()
    breaker = make_breaker(fake_clock, changes=changes)
    trip(breaker)
    fake_clock.advance(10.0)
    assert breaker.state is OPEN  # nothing happens until a request comes
    assert breaker.snapshot().retry_after == 0.0

    permit = breaker.admit()

    assert isinstance(permit, Permit)
    snapshot = breaker.snapshot()
    assert snapshot.state is HALF_OPEN
    assert snapshot.reason == "cool-down over: probing"
    assert snapshot.probes_in_flight == 1
    assert changes.seen[-1] == (OPEN, HALF_OPEN, "cool-down over: probing")


def test_half_open_lets_at_most_half_open_permits_probes_through(fake_clock):
    breaker = make_breaker(fake_clock)
    first = half_open(breaker, fake_clock)
    second = breaker.admit()
    assert isinstance(second, Permit)
    assert breaker.snapshot().probes_in_flight == 2

    with pytest.raises(CircuitOpenError, match=REFUSED) as refused:
        breaker.admit()
    assert refused.value.retry_after == 0.0  # a slot frees as soon as a probe ends

    breaker.release(first)
    assert breaker.snapshot().probes_in_flight == 1
    assert isinstance(breaker.admit(), Permit)
    with pytest.raises(CircuitOpenError):
        breaker.admit()
    assert breaker.state is HALF_OPEN


def test_a_permit_is_given_back_once_however_often_it_is_released(fake_clock):
    breaker = make_breaker(fake_clock)
    first = half_open(breaker, fake_clock)
    second = breaker.admit()

    breaker.release(first)
    breaker.release(first)  # harmless: does not free the slot second holds
    breaker.release(first)

    assert breaker.snapshot().probes_in_flight == 1
    assert isinstance(breaker.admit(), Permit)
    with pytest.raises(CircuitOpenError):
        breaker.admit()
    breaker.release(second)
    breaker.release(second)
    assert breaker.snapshot().probes_in_flight == 1


def test_a_permit_from_an_earlier_half_open_spell_frees_no_slot_in_a_new_one(fake_clock):
    breaker = make_breaker(fake_clock)
    old = half_open(breaker, fake_clock)
    breaker.record(True, 0.0)  # the probe failed: open for 20 s
    fake_clock.advance(20.0)
    new = breaker.admit()
    assert isinstance(new, Permit)

    breaker.release(old)  # the old probe's request only ends now

    assert breaker.snapshot().probes_in_flight == 1
    assert isinstance(breaker.admit(), Permit)
    with pytest.raises(CircuitOpenError):
        breaker.admit()


def test_enough_probe_successes_close_it(fake_clock):
    changes = Changes()
    breaker = make_breaker(fake_clock, changes=changes)
    permit = half_open(breaker, fake_clock)
    breaker.record(False, 0.0)
    assert breaker.state is HALF_OPEN
    assert breaker.snapshot().probe_successes == 1

    breaker.record(False, 0.0)

    snapshot = breaker.snapshot()
    assert snapshot.state is CLOSED
    assert snapshot.reason == "probes succeeded"
    assert (snapshot.opened_at, snapshot.probes_in_flight, snapshot.probe_successes) == (None, 0, 0)
    assert changes.seen[-1] == (HALF_OPEN, CLOSED, "probes succeeded")
    breaker.release(permit)  # the probe's request ends after the breaker closed
    assert breaker.admit() is None
    # The policy forgot the failures that tripped it: it takes three new ones.
    breaker.record(True, 0.0)
    breaker.record(True, 0.0)
    assert breaker.state is CLOSED


def test_a_failed_probe_reopens_it_for_longer_up_to_max_cool_down(fake_clock):
    breaker = make_breaker(fake_clock)
    half_open(breaker, fake_clock)
    for expected in (20.0, 40.0, 60.0, 60.0):
        breaker.record(True, 0.0)  # the probe failed
        snapshot = breaker.snapshot()
        assert snapshot.state is OPEN
        assert snapshot.reason == "a probe failed"
        assert snapshot.cool_down == expected
        assert snapshot.retry_after == expected
        fake_clock.advance(expected - 1.0)
        with pytest.raises(CircuitOpenError) as refused:
            breaker.admit()
        assert refused.value.retry_after == pytest.approx(1.0)
        fake_clock.advance(1.0)
        assert isinstance(breaker.admit(), Permit)
    assert breaker.snapshot().times_opened == 5


def test_closing_restores_the_initial_cool_down(fake_clock):
    breaker = make_breaker(fake_clock)
    half_open(breaker, fake_clock)
    breaker.record(True, 0.0)  # open for 20 s
    fake_clock.advance(20.0)
    breaker.admit()
    breaker.record(False, 0.0)
    breaker.record(False, 0.0)
    assert breaker.state is CLOSED
    assert breaker.snapshot().cool_down == 10.0
    trip(breaker)
    assert breaker.snapshot().retry_after == 10.0


def test_a_half_open_breaker_that_no_probe_answers_reopens_on_the_next_request(fake_clock):
    changes = Changes()
    breaker = make_breaker(fake_clock, changes=changes)
    half_open(breaker, fake_clock)
    breaker.admit()  # both probes hang: every slot is taken
    fake_clock.advance(30.0)
    with pytest.raises(CircuitOpenError):
        breaker.admit()  # no slot, but 30 s is not yet too long
    assert breaker.state is HALF_OPEN

    fake_clock.advance(0.5)
    with pytest.raises(CircuitOpenError, match=REFUSED) as refused:
        breaker.admit()

    snapshot = breaker.snapshot()
    assert snapshot.state is OPEN
    assert snapshot.reason == "no probe answered within the half-open timeout"
    assert snapshot.probes_in_flight == 0
    # Like a failed probe, it re-opens for a longer cool-down.
    assert snapshot.cool_down == 20.0
    assert refused.value.retry_after == 20.0
    assert changes.seen[-1] == (HALF_OPEN, OPEN, "no probe answered within the half-open timeout")
    fake_clock.advance(20.0)
    assert isinstance(breaker.admit(), Permit)  # probing again: it never sticks
    assert breaker.snapshot().probes_in_flight == 1


def test_the_half_open_timeout_counts_from_the_last_probe_answer(fake_clock):
    breaker = make_breaker(fake_clock)
    first = half_open(breaker, fake_clock)
    breaker.admit()
    fake_clock.advance(25.0)
    breaker.record(False, 0.0)  # one probe answers; the other still hangs
    breaker.release(first)
    fake_clock.advance(25.0)
    assert isinstance(breaker.admit(), Permit)
    fake_clock.advance(5.5)
    with pytest.raises(CircuitOpenError):
        breaker.admit()
    assert breaker.state is OPEN


def test_a_quiet_half_open_breaker_does_not_time_out(fake_clock):
    # Its probe answered and nothing is in flight: a lull in traffic is no
    # unanswered probe, and the next request is simply the next probe.
    breaker = make_breaker(fake_clock)
    permit = half_open(breaker, fake_clock)
    breaker.record(False, 0.0)
    breaker.release(permit)
    fake_clock.advance(100.0)

    permit = breaker.admit()

    assert isinstance(permit, Permit)
    assert breaker.state is HALF_OPEN
    fake_clock.advance(29.0)  # the timeout counts from when this probe went out
    assert isinstance(breaker.admit(), Permit)
    breaker.record(False, 0.0)
    assert breaker.state is CLOSED


# -- reset, snapshot, listener ----------------------------------------------------------------


@pytest.mark.parametrize("where", ["open", "half_open", "open_after_backoff"])
def test_reset_closes_it_and_restores_the_initial_cool_down(fake_clock, where):
    changes = Changes()
    breaker = make_breaker(fake_clock, changes=changes)
    permit = half_open(breaker, fake_clock)
    if where == "open":
        breaker.record(True, 0.0)
        fake_clock.advance(20.0)
        breaker.admit()
        breaker.record(True, 0.0)  # cool-down now 40 s
    elif where == "open_after_backoff":
        breaker.record(True, 0.0)
    state = breaker.state

    breaker.reset()

    snapshot = breaker.snapshot()
    assert snapshot.state is CLOSED
    assert snapshot.reason == "reset by hand"
    assert (snapshot.cool_down, snapshot.opened_at, snapshot.probes_in_flight) == (10.0, None, 0)
    assert changes.seen[-1] == (state, CLOSED, "reset by hand")
    breaker.release(permit)
    assert breaker.snapshot().probes_in_flight == 0
    assert breaker.admit() is None
    trip(breaker)
    assert breaker.snapshot().retry_after == 10.0


def test_reset_of_a_closed_breaker_forgets_its_failures(fake_clock):
    changes = Changes()
    breaker = make_breaker(fake_clock, changes=changes)
    breaker.record(True, 0.0)
    breaker.record(True, 0.0)
    breaker.reset()
    breaker.record(True, 0.0)
    breaker.record(True, 0.0)
    assert breaker.state is CLOSED
    assert changes.seen == []  # nothing changed state


def read_many(breaker: CircuitBreaker) -> None:
    """Read the breaker over and over; every read must agree with the first."""
    first = breaker.snapshot()
    for _ in range(50):
        assert breaker.snapshot() == first
        assert breaker.state is first.state


def test_snapshot_never_changes_state_nor_takes_a_permit(fake_clock):
    changes = Changes()
    breaker = make_breaker(fake_clock, changes=changes)
    read_many(breaker)
    trip(breaker)
    read_many(breaker)
    fake_clock.advance(10.0)
    read_many(breaker)  # cool-down over: still open until a request comes
    assert breaker.snapshot().state is OPEN
    first = breaker.admit()
    read_many(breaker)
    second = breaker.admit()
    read_many(breaker)  # every slot taken
    assert breaker.snapshot().probes_in_flight == 2
    fake_clock.advance(60.0)
    read_many(breaker)  # past the half-open timeout: only admit re-opens it
    assert breaker.snapshot().state is HALF_OPEN
    breaker.release(first)
    breaker.release(second)
    read_many(breaker)
    assert breaker.snapshot().probes_in_flight == 0
    assert changes.states == [(CLOSED, OPEN), (OPEN, HALF_OPEN)]


def test_the_listener_hears_every_change_with_its_reason(fake_clock):
    changes = Changes()
    breaker = make_breaker(fake_clock, changes=changes)
    half_open(breaker, fake_clock)
    breaker.record(True, 0.0)
    fake_clock.advance(20.0)
    breaker.admit()
    breaker.record(False, 0.0)
    breaker.record(False, 0.0)

    assert changes.seen == [
        (CLOSED, OPEN, "3 executions failed in a row"),
        (OPEN, HALF_OPEN, "cool-down over: probing"),
        (HALF_OPEN, OPEN, "a probe failed"),
        (OPEN, HALF_OPEN, "cool-down over: probing"),
        (HALF_OPEN, CLOSED, "probes succeeded"),
    ]


# -- BreakerConfig ----------------------------------------------------------------------------


def test_the_default_config():
    config = BreakerConfig()
    assert (config.policy, dict(config.params)) == ("error_rate", {})
    assert (config.cool_down, config.max_cool_down, config.backoff) == (5.0, 300.0, 2.0)
    assert (config.half_open_permits, config.successes_to_close) == (3, 2)
    assert config.half_open_timeout == 30.0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"cool_down": 0}, "cool_down must be a positive number of seconds"),
        ({"cool_down": -1.0}, "cool_down must be a positive number"),
        ({"cool_down": math.nan}, "cool_down must be a positive number"),
        ({"cool_down": math.inf}, "cool_down must be a positive number"),
        ({"cool_down": True}, "cool_down must be a positive number"),
        ({"cool_down": "5"}, "cool_down must be a positive number"),
        ({"cool_down": None}, "cool_down must be a positive number"),
        ({"cool_down": 10**400}, "cool_down must be a positive number"),
        ({"max_cool_down": 0.0}, "max_cool_down must be a positive number"),
        ({"max_cool_down": 10**400}, "max_cool_down must be a positive number"),
        ({"cool_down": 10.0, "max_cool_down": 5.0}, "max_cool_down must be at least cool_down"),
        ({"half_open_timeout": 0}, "half_open_timeout must be a positive number"),
        ({"half_open_timeout": math.inf}, "half_open_timeout must be a positive number"),
        ({"backoff": 0.5}, "backoff must be a number >= 1"),
        ({"backoff": 0}, "backoff must be a number >= 1"),
        ({"backoff": math.nan}, "backoff must be a number >= 1"),
        ({"backoff": True}, "backoff must be a number >= 1"),
        ({"backoff": 10**400}, "backoff must be a number >= 1"),
        ({"half_open_permits": 0}, "half_open_permits must be a positive integer"),
        ({"half_open_permits": 1.0}, "half_open_permits must be a positive integer"),
        ({"half_open_permits": True}, "half_open_permits must be a positive integer"),
        ({"successes_to_close": -1}, "successes_to_close must be a positive integer"),
        ({"successes_to_close": "2"}, "successes_to_close must be a positive integer"),
        ({"policy": ""}, "policy must name a breaker policy"),
        ({"policy": None}, "policy must name a breaker policy"),
        ({"params": [("failures", 3)]}, "params must be a dict"),
        ({"params": None}, "params must be a dict"),
    ],
)
def test_a_bad_config_is_refused(options: dict[str, Any], message: str):
    with pytest.raises(InvalidConfigError, match=message):
        BreakerConfig(**options)


def test_backoff_of_one_keeps_the_cool_down(fake_clock):
    config = BreakerConfig(
        policy="consecutive_failures", params={"failures": 3}, cool_down=10.0, backoff=1
    )
    breaker = make_breaker(fake_clock, config)
    half_open(breaker, fake_clock)
    breaker.record(True, 0.0)
    assert breaker.snapshot().cool_down == 10.0


# -- every sequence of operations, against a reference model ----------------------------------


class ReferenceBreaker:
    """What the breaker should do, written as plainly as possible.

    Tracks a consecutive-failures policy, the state (closed; open until
    ``opened_at + cool_down``; half-open with ``out`` permits out and
    ``successes``), the current cool-down, and the spell each permit belongs to.
    """

    def __init__(self, config: BreakerConfig, failures: int, now: float) -> None:
        self.config = config
        self.failures = failures
        self.state = CLOSED
        self.streak = 0
        self.opened_at = 0.0
        self.cool_down = config.cool_down
        self.out = 0
        self.successes = 0
        self.waiting_since = now  # when the probes out last had news
        self.spell = 0  # bumped at every change of state
        self.times_opened = 0
        self.changes: list[tuple[BreakerState, BreakerState]] = []

    def _change(self, new: BreakerState) -> None:
        self.changes.append((self.state, new))
        self.state = new
        self.spell += 1

    def _open(self, now: float) -> None:
        self.opened_at = now
        self.times_opened += 1
        self.out = 0
        self._change(OPEN)

    def _close(self) -> None:
        self.streak = 0
        self.cool_down = self.config.cool_down
        self.out = 0
        self.successes = 0
        if self.state is not CLOSED:
            self._change(CLOSED)

    def admit(self, now: float) -> tuple[str, float]:
        """("closed", 0), ("permit", its spell) or ("refused", retry_after)."""
        if self.state is CLOSED:
            return "closed", 0
        if self.state is OPEN:
            if now < self.opened_at + self.cool_down:
                return "refused", self.opened_at + self.cool_down - now
            self._change(HALF_OPEN)
            self.out = self.successes = 0
        elif self.out > 0 and now - self.waiting_since > self.config.half_open_timeout:
            self.cool_down = min(self.cool_down * self.config.backoff, self.config.max_cool_down)
            self._open(now)
            return "refused", self.cool_down
        if self.out >= self.config.half_open_permits:
            return "refused", 0.0
        if self.out == 0:
            self.waiting_since = now
        self.out += 1
        return "permit", self.spell

    def release(self, spell: int) -> None:
        if spell == self.spell and self.state is HALF_OPEN:
            self.out -= 1

    def record(self, failed: bool, now: float) -> None:
        if self.state is CLOSED:
            self.streak = self.streak + 1 if failed else 0
            if self.streak >= self.failures:
                self._open(now)
        elif self.state is HALF_OPEN:
            self.waiting_since = now
            if failed:
                self.cool_down = min(
                    self.cool_down * self.config.backoff, self.config.max_cool_down
                )
                self._open(now)
            else:
                self.successes += 1
                if self.successes >= self.config.successes_to_close:
                    self._close()

    def reset(self) -> None:
        self._close()


@dataclass
class Held:
    """A permit the test was given, and the spell the reference says it is from."""

    permit: Permit
    spell: int
    released: bool = False


# Multiples of 1/4: exactly representable, so the clock lands on the
# boundaries (cool-down over, timeout reached) as often as near them.
STEPS = st.one_of(
    st.integers(0, 160).map(lambda quarters: quarters / 4),
    st.floats(0.0, 100.0, allow_nan=False, allow_infinity=False),
)


class BreakerMachine(RuleBasedStateMachine):
    """Admit, release, record, wait, reset and read, in any order."""

    @initialize(
        failures=st.integers(1, 3),
        cool_down=st.sampled_from([1.0, 2.5, 10.0]),
        backoff=st.sampled_from([1.0, 1.5, 2.0]),
        ceiling=st.sampled_from([1.0, 2.0, 4.0, 100.0]),
        permits=st.integers(1, 3),
        successes=st.integers(1, 3),
        timeout=st.sampled_from([0.25, 5.0, 30.0]),
    )
    def build(
        self,
        failures: int,
        cool_down: float,
        backoff: float,
        ceiling: float,
        permits: int,
        successes: int,
        timeout: float,
    ) -> None:
        self.clock = FakeClock()
        self.config = BreakerConfig(
            policy="consecutive_failures",
            params={"failures": failures},
            cool_down=cool_down,
            max_cool_down=cool_down * ceiling,
            backoff=backoff,
            half_open_permits=permits,
            successes_to_close=successes,
            half_open_timeout=timeout,
        )
        self.changes = Changes()
        self.breaker = make_breaker(self.clock, self.config, self.changes)
        self.model = ReferenceBreaker(self.config, failures, self.clock.now())
        self.permits: list[Held] = []

    @rule()
    def admit(self) -> None:
        expected, detail = self.model.admit(self.clock.now())
        if expected == "refused":
            with pytest.raises(CircuitOpenError, match=REFUSED) as refused:
                self.breaker.admit()
            assert refused.value.retry_after == pytest.approx(detail)
            return
        permit = self.breaker.admit()
        if expected == "closed":
            assert permit is None
            return
        assert isinstance(permit, Permit)
        self.permits.append(Held(permit, int(detail)))

    @rule(seconds=STEPS)
    def wait_then_admit(self, seconds: float) -> None:
        self.wait(seconds)
        self.admit()

    @precondition(lambda self: self.permits)
    @rule(back=st.integers(0, 3))
    def release(self, back: int) -> None:
        # One of the last permits given: one still out, one from an earlier
        # spell, or one already released (a second release must be harmless).
        held = self.permits[-1 - back % len(self.permits)]
        self.breaker.release(held.permit)
        if not held.released:
            held.released = True
            self.model.release(held.spell)

    @precondition(lambda self: self.permits)
    @rule()
    def release_twice(self) -> None:
        self.release(0)
        self.release(0)

    @rule(failed=st.booleans())
    def record(self, failed: bool) -> None:
        # Executions here start when they are recorded; one that began before
        # probing did is ignored (test_an_execution_older_than_probing_is_no_probe).
        self.breaker.record(failed, 0.0)
        self.model.record(failed, self.clock.now())

    @precondition(lambda self: self.model.state is CLOSED)
    @rule()
    def fail_in_a_row(self) -> None:
        # Straight to open, or the machine would spend most steps closed.
        for _ in range(self.model.failures):
            self.record(True)

    @rule(seconds=STEPS)
    def wait(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(now=st.integers(0, 4))
    def reset(self, now: int) -> None:
        if now == 0:  # rarely, or the breaker would seldom get far from closed
            self.breaker.reset()
            self.model.reset()

    @rule()
    def read(self) -> None:
        first = self.breaker.snapshot()
        assert self.breaker.snapshot() == first

    @invariant()
    def agrees_with_the_reference(self) -> None:
        snapshot = self.breaker.snapshot()
        assert snapshot.state is self.model.state
        assert self.breaker.state is self.model.state
        assert snapshot.cool_down == self.model.cool_down
        assert snapshot.times_opened == self.model.times_opened
        assert snapshot.probes_in_flight == (self.model.out if self.model.state is HALF_OPEN else 0)
        assert 0 <= snapshot.probes_in_flight <= self.config.half_open_permits
        if snapshot.state is HALF_OPEN:
            assert snapshot.probe_successes == self.model.successes
        if snapshot.state is OPEN:
            remaining = self.model.opened_at + self.model.cool_down - self.clock.now()
            assert snapshot.retry_after == pytest.approx(max(0.0, remaining))
        assert self.config.cool_down <= snapshot.cool_down <= self.config.max_cool_down
        assert self.changes.states == self.model.changes


TestBreakerMachine = BreakerMachine.TestCase
TestBreakerMachine.settings = settings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_an_execution_older_than_probing_is_no_probe(fake_clock):
    policy = ConsecutiveFailuresPolicy({"failures": 1}, 0.5)
    config = BreakerConfig(cool_down=10.0, successes_to_close=1)
    breaker = CircuitBreaker("m:v", policy, config, fake_clock)
    breaker.record(True, 0.0)
    fake_clock.advance(10.0)
    assert isinstance(breaker.admit(), Permit)  # half-open from now

    fake_clock.advance(1.0)
    breaker.record(False, 5.0)  # began 4 s before probing: a straggler
    breaker.record(True, 5.0)
    assert breaker.state is HALF_OPEN

    breaker.record(False, 0.5)  # the probe itself
    assert breaker.state is CLOSED
