"""A model's fallback: what answers while the routed version's breaker is open."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from turnout.core.errors import InvalidConfigError
from turnout.core.execution.batching import BatchSlice
from turnout.core.execution.outputs import BatchOutput
from turnout.core.names import check_name

__all__ = ["Fallback"]


@dataclass(frozen=True)
class Fallback:
    """Another version to serve instead, or a fixed value per row (the guide's options 1 and 3).

    ``value`` is a number (one per row, e.g. 0.5 for a neutral probability)
    or a list (one such row per input row, e.g. class probabilities).
    """

    VERSION: ClassVar[str] = "version"
    VALUE: ClassVar[str] = "value"

    version: str | None = None
    value: Any = None
    _row: np.ndarray[Any, Any] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if (self.version is None) == (self.value is None):
            raise InvalidConfigError("a fallback is either a version or a value, not both")
        if self.version is not None:
            check_name("version", self.version)
            return
        try:
            row = np.asarray(self.value, dtype=np.float64)
        except (TypeError, ValueError):
            raise InvalidConfigError(f"fallback value {self.value!r} is not numeric") from None
        if row.ndim > 1 or not all(math.isfinite(v) for v in row.reshape(-1)):
            raise InvalidConfigError("a fallback value is a finite number or a list of them")
        object.__setattr__(self, "_row", row)

    def constant(self, rows: int) -> BatchSlice[BatchOutput]:
        """Return the fixed value for ``rows`` rows, shaped like a batch result."""
        assert self._row is not None
        values = np.tile(self._row, (rows, 1)) if self._row.ndim == 1 else np.full(rows, self._row)
        return BatchSlice(BatchOutput(values, None, None), 0, rows)
