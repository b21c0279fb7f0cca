"""Shadow statistics: how a mirrored version's answers compare with the primary's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from turnout.core.execution.metrics import LatencyHistogram

__all__ = ["ShadowRecorder", "ShadowStatistics", "compare_outputs"]


@dataclass(frozen=True)
class ShadowStatistics:
    """One shadow version's record against its primary; latencies in milliseconds."""

    primary: str
    shadow: str
    compared: int
    mean_abs_difference: float
    max_abs_difference: float
    label_agreement: float | None
    errors: int
    dropped: int
    mean_latency_ms: float
    p99_latency_ms: float


def compare_outputs(
    primary: np.ndarray[Any, Any],
    shadow: np.ndarray[Any, Any],
    primary_labels: np.ndarray[Any, Any] | None,
    shadow_labels: np.ndarray[Any, Any] | None,
) -> tuple[float, float, int | None]:
    """Return (sum of abs differences per row, max abs difference, labels agreeing or None)."""
    agreed = None
    if primary_labels is not None and shadow_labels is not None:
        agreed = int(np.sum(primary_labels == shadow_labels))
    if (
        primary.shape != shadow.shape
        or primary.dtype.kind not in "biuf"
        or shadow.dtype.kind not in "biuf"
    ):
        return 0.0, 0.0, agreed
    diff = np.abs(primary.astype(np.float64) - shadow.astype(np.float64))
    per_row = diff.reshape(len(diff), -1).mean(axis=1)
    return float(per_row.sum()), float(diff.max(initial=0.0)), agreed


class ShadowRecorder:
    """Accumulates comparisons, errors, drops and latency for one (primary, shadow) pair."""

    def __init__(self, primary: str, shadow: str) -> None:
        self.primary = primary
        self.shadow = shadow
        self.compared_rows = 0
        self.difference_sum = 0.0
        self.max_difference = 0.0
        self.labelled_rows = 0
        self.agreed_rows = 0
        self.errors = 0
        self.dropped = 0
        self.latency = LatencyHistogram()

    def record(
        self,
        rows: int,
        difference_sum: float,
        max_difference: float,
        agreed: int | None,
        latency: float,
    ) -> None:
        """Count one compared request of ``rows`` rows."""
        self.compared_rows += rows
        self.difference_sum += difference_sum
        self.max_difference = max(self.max_difference, max_difference)
        if agreed is not None:
            self.labelled_rows += rows
            self.agreed_rows += agreed
        self.latency.record((latency,))

    def statistics(self) -> ShadowStatistics:
        """Return a frozen snapshot."""
        return ShadowStatistics(
            primary=self.primary,
            shadow=self.shadow,
            compared=self.compared_rows,
            mean_abs_difference=(
                self.difference_sum / self.compared_rows if self.compared_rows else 0.0
            ),
            max_abs_difference=self.max_difference,
            label_agreement=(self.agreed_rows / self.labelled_rows if self.labelled_rows else None),
            errors=self.errors,
            dropped=self.dropped,
            mean_latency_ms=self.latency.mean() * 1e3,
            p99_latency_ms=self.latency.quantile(0.99) * 1e3,
        )
