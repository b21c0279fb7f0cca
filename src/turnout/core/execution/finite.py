"""Checking arrays for NaN and infinity, at the cost of one BLAS call rather than two ufuncs.

``np.isfinite(a).all()`` allocates a boolean array and reduces it: about
4 µs for a request's row on the machines of ``benchmarks/``, paid on every
request, twice. The sum of squares answers the same question in one pass
(any NaN or infinity makes it NaN or infinite; squares cannot cancel), and
``np.vdot`` computes it without raising numpy's overflow warning. Only when
it overflows, for values past ~1e154 (1e19 in float32), is a closer look
needed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["FLOAT32_MAX", "all_finite", "fits_float32"]

FLOAT32_MAX = float(np.finfo(np.float32).max)
_FLOAT32_MAX_SQUARED = FLOAT32_MAX * FLOAT32_MAX  # 1.16e77: a float64 still


def all_finite(values: np.ndarray[Any, Any]) -> bool:
    """True if no element of the floating-point array ``values`` is NaN or infinite."""
    if math.isfinite(float(np.vdot(values, values))):
        return True
    return bool(np.isfinite(values).all())


def fits_float32(values: np.ndarray[Any, Any]) -> bool:
    """True if every element of the float64 array ``values`` casts to a finite float32.

    False may also mean "look closer": a finite value too large to square.
    """
    # NaN compares False; every |x| is at most the root of the sum of squares.
    return float(np.vdot(values, values)) <= _FLOAT32_MAX_SQUARED
