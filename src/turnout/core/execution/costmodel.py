"""A batch cost model: duration = per_row * rows + fixed, fitted over recent batches.

BentoML's dispatcher fits the same line to decide whether waiting pays; here it
is a small object of its own, updated once per batch, read by the batcher to
refuse requests whose deadline cannot be met and to decide on an optional wait.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CostEstimate", "LinearCostModel"]


@dataclass(frozen=True)
class CostEstimate:
    """The fitted line: seconds per row and fixed seconds per batch."""

    per_row: float
    fixed: float
    samples: int

    def duration(self, rows: int) -> float:
        """Predicted seconds to run a batch of ``rows`` rows."""
        return self.fixed + self.per_row * rows


class LinearCostModel:
    """Exponentially weighted least squares of batch duration on batch rows."""

    def __init__(self, decay: float = 0.95) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self._decay = decay
        self._w = self._x = self._y = self._xx = self._xy = 0.0
        self._samples = 0

    def observe(self, rows: int, seconds: float) -> None:
        """Add one executed batch to the fit."""
        d = self._decay
        self._w = d * self._w + 1.0
        self._x = d * self._x + rows
        self._y = d * self._y + seconds
        self._xx = d * self._xx + rows * rows
        self._xy = d * self._xy + rows * seconds
        self._samples += 1

    def estimate(self) -> CostEstimate:
        """Return the current fit; with no spread in batch sizes yet, all cost is per row."""
        if self._samples == 0:
            return CostEstimate(0.0, 0.0, 0)
        mean_x = self._x / self._w
        mean_y = self._y / self._w
        var_x = self._xx / self._w - mean_x * mean_x
        if var_x > 1e-9 * max(1.0, mean_x * mean_x):
            per_row = max(0.0, (self._xy / self._w - mean_x * mean_y) / var_x)
            fixed = max(0.0, mean_y - per_row * mean_x)
        else:
            per_row, fixed = mean_y / max(mean_x, 1.0), 0.0
        return CostEstimate(per_row, fixed, self._samples)
