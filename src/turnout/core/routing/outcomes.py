"""Outcome feedback and A/B statistics: ground truth joined to the version that served.

Every full result (``infer``) carries a ``request_id``. ``record_outcome``
attaches an outcome to it later; :func:`compare` then tests whether two
versions' outcomes differ: a two-proportion z-test when every outcome is 0
or 1, Welch's t-test otherwise (both from SciPy, which scikit-learn brings).
"""

from __future__ import annotations

import math
import numbers
import secrets
from dataclasses import dataclass

from turnout.core.errors import InvalidInputError
from turnout.core.names import MAX_NAME_LENGTH

__all__ = ["ABComparison", "OutcomeStatistics", "OutcomeTotals", "OutcomeTracker", "compare"]

DEFAULT_CAPACITY = 100_000
# Outcomes larger than this in magnitude are refused: squares of sums of them stay finite.
MAX_OUTCOME = 1e150
# model~version~token: two names and a token ("1a2b3c4d-<counter>") with room to spare.
MAX_REQUEST_ID_LENGTH = 2 * MAX_NAME_LENGTH + 66


@dataclass(frozen=True)
class OutcomeStatistics:
    """The outcomes recorded for one version."""

    version: str
    count: int
    mean: float
    std: float
    binary: bool


@dataclass(frozen=True)
class ABComparison:
    """Whether two versions' outcomes differ, and by how much."""

    a: OutcomeStatistics
    b: OutcomeStatistics
    difference: float
    p_value: float | None
    test: str
    significant: bool
    needed_per_version: int | None
    verdict: str


@dataclass(frozen=True)
class OutcomeTotals:
    """One version's outcomes as counters that add up: count, and shifted sums.

    Counters, so that any number of processes can add to them atomically
    (the control state's ``add_outcome``) and none can overwrite another's.
    The sums are of ``value - shift``, ``shift`` being the first value
    recorded: plain sums of values and of squares cancel catastrophically
    when the spread is small beside the mean (outcomes near 1e9 varying by 1
    came out with a standard deviation of exactly 0), shifted ones do not.
    """

    count: int = 0
    shift: float = 0.0
    total: float = 0.0  # sum of (value - shift)
    squares: float = 0.0  # sum of (value - shift) ** 2
    non_binary: int = 0  # values other than 0 and 1

    def add(self, value: float) -> OutcomeTotals:
        """Return these totals with ``value`` added."""
        shift = value if self.count == 0 else self.shift
        deviation = value - shift
        return OutcomeTotals(
            self.count + 1,
            shift,
            self.total + deviation,
            self.squares + deviation * deviation,
            self.non_binary + (value not in (0.0, 1.0)),
        )

    def statistics(self, version: str) -> OutcomeStatistics:
        """Return the count, mean and standard deviation these totals describe."""
        n = self.count
        if n == 0:
            return OutcomeStatistics(version, 0, 0.0, 0.0, False)
        mean = self.shift + self.total / n
        var = max(0.0, (self.squares - self.total * self.total / n) / (n - 1)) if n > 1 else 0.0
        return OutcomeStatistics(version, n, mean, math.sqrt(var), self.non_binary == 0)


class OutcomeTracker:
    """Remembers which version served each recent request, and this process's view of outcomes.

    The outcome totals here are a view: the server adds each outcome to the
    control state and adopts the totals it returns, which count every
    process's outcomes.
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY, *, model_id: str = "") -> None:
        self._capacity = capacity
        self._model_id = model_id
        # The version that served request number n is in slot (n - 1) % capacity, None
        # once it has an outcome; a newer request takes the slot of one `capacity` older.
        # A slot is 8 bytes, where a dict of id strings took ~180 per request: filled, it
        # was 18 MB per model, and took minutes to fill (benchmarks/README.md, "Soak").
        self._served: list[str | None] = []
        self._issued = 0
        self._outcomes: dict[str, OutcomeTotals] = {}
        self._prefix = secrets.token_hex(4)
        self._own = f"{self._prefix}-"

    def new_request(self, version: str) -> str:
        """Return a fresh request id and remember that ``version`` served it.

        The id names its model and version (``model~version~token``): another
        server sharing the control state attributes an outcome to it too.
        """
        number = self._issued = self._issued + 1
        if number <= self._capacity:
            self._served.append(version)
        else:
            self._served[(number - 1) % self._capacity] = version
        return f"{self._model_id}~{version}~{self._own}{number}"

    def version_of(self, request_id: str) -> str:
        """Return the version that served ``request_id``; raise if the id is not known."""
        if isinstance(request_id, str) and len(request_id) > MAX_REQUEST_ID_LENGTH:
            raise InvalidInputError(
                f"request id is {len(request_id)} characters long; no id turnout issues"
                f" is longer than {MAX_REQUEST_ID_LENGTH}"
            )
        named = self._named(request_id)
        if named is None:
            raise self._unknown(request_id)
        version, token = named
        # An id issued by another server sharing the control state is taken as it reads.
        if token.startswith(self._own) and self._slot(version, token) is None:
            raise self._unknown(request_id)  # answered, too old, or never issued here
        return version

    def _named(self, request_id: object) -> tuple[str, str] | None:
        """The version and token an id for this model names; None if it is no such id."""
        parts = request_id.split("~") if isinstance(request_id, str) else []
        if len(parts) != 3 or parts[0] != self._model_id or not parts[1]:
            return None
        return parts[1], parts[2]

    def _slot(self, version: str, token: str) -> int | None:
        """The slot of this tracker's own request ``token`` names, if it is still unanswered."""
        digits = token[len(self._own) :]
        # Exactly the digits issued: int() also reads a leading zero and non-ASCII digits.
        if len(digits) > 20 or not digits.isascii() or not digits.isdigit():
            return None
        number = int(digits)
        if str(number) != digits or not self._issued - self._capacity < number <= self._issued:
            return None
        slot = (number - 1) % self._capacity
        return slot if self._served[slot] == version else None

    def _unknown(self, request_id: str) -> InvalidInputError:
        return InvalidInputError(
            f"unknown request id {request_id!r}: it was never issued, already has an"
            f" outcome, or is older than the last {self._capacity} requests"
        )

    def check(self, request_id: str, outcome: object) -> tuple[str, float]:
        """Return the version that served the request and ``outcome`` as a float; raise if either
        is not one :meth:`record` takes. Nothing changes: the id may still take an outcome."""
        if isinstance(outcome, bool):
            outcome = float(outcome)
        if not isinstance(outcome, numbers.Real) or not _finite(outcome):
            raise InvalidInputError(f"outcome must be a finite number, got {outcome!r}")
        if abs(float(outcome)) > MAX_OUTCOME:
            # Its square would overflow the totals' sum of squares (in Redis, mid-update).
            raise InvalidInputError(f"outcome must be within ±{MAX_OUTCOME:g}, got {outcome!r}")
        return self.version_of(request_id), float(outcome)

    def forget(self, request_id: str) -> None:
        """Forget the request: its outcome is recorded (here or by another server)."""
        named = self._named(request_id)
        if named is not None and named[1].startswith(self._own):
            slot = self._slot(*named)
            if slot is not None:
                self._served[slot] = None

    def record(self, request_id: str, outcome: float) -> str:
        """Attach ``outcome`` to the request; return the version that served it."""
        version, value = self.check(request_id, outcome)
        self.forget(request_id)
        self._outcomes[version] = self._outcomes.get(version, OutcomeTotals()).add(value)
        return version

    def adopt(self, version: str, totals: OutcomeTotals) -> None:
        """Take ``totals`` (the control state's, after an add) as ``version``'s outcomes."""
        self._outcomes[version] = totals

    def statistics(self, version: str) -> OutcomeStatistics:
        """Return the outcomes recorded for ``version`` so far."""
        return self._outcomes.get(version, OutcomeTotals()).statistics(version)


def _finite(value: numbers.Real) -> bool:
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an int too large for a float
        return False


def compare(a: OutcomeStatistics, b: OutcomeStatistics, *, alpha: float = 0.05) -> ABComparison:
    """Test whether ``b``'s mean outcome differs from ``a``'s, and say it in plain words."""
    from scipy import stats

    difference = b.mean - a.mean
    binary = a.binary and b.binary
    test = "two-proportion z-test" if binary else "Welch's t-test"
    if a.count < 2 or b.count < 2:
        return ABComparison(
            a,
            b,
            difference,
            None,
            test,
            False,
            None,
            f"not enough outcomes yet ({a.version}: {a.count}, {b.version}: {b.count});"
            " record at least 2 per version",
        )
    if binary:
        pooled = (a.mean * a.count + b.mean * b.count) / (a.count + b.count)
        se = math.sqrt(pooled * (1 - pooled) * (1 / a.count + 1 / b.count))
        p_value = 1.0 if se == 0 else float(2 * stats.norm.sf(abs(difference) / se))
        spread = a.mean * (1 - a.mean) + b.mean * (1 - b.mean)
    else:
        if a.std == 0 and b.std == 0:
            p_value = 1.0 if difference == 0 else 0.0
        else:
            p_value = float(
                stats.ttest_ind_from_stats(
                    a.mean, a.std, a.count, b.mean, b.std, b.count, equal_var=False
                ).pvalue
            )
        spread = a.std**2 + b.std**2
    needed = _needed_per_version(difference, spread, alpha)
    significant = p_value < alpha
    if significant:
        better = b.version if difference > 0 else a.version
        verdict = (
            f"{better} has the higher mean outcome ({b.version} - {a.version} ="
            f" {difference:+.4g}, p={p_value:.3g} < {alpha})"
        )
    else:
        more = "" if needed is None else f"; about {needed} outcomes per version would detect it"
        verdict = (
            f"no significant difference yet ({difference:+.4g}, p={p_value:.3g}) with"
            f" {a.count} and {b.count} outcomes{more}"
        )
    return ABComparison(a, b, difference, p_value, test, significant, needed, verdict)


def _needed_per_version(difference: float, spread: float, alpha: float) -> int | None:
    """Outcomes per version for 80% power to detect ``difference`` at level ``alpha``."""
    from scipy import stats

    if difference == 0 or spread <= 0:
        return None
    z = float(stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(0.8))
    return math.ceil(z * z * spread / (difference * difference))
