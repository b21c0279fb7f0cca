"""The one-pass finiteness checks agree with numpy's own, whatever the values."""

from __future__ import annotations

import warnings

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from turnout.core.execution.finite import FLOAT32_MAX, all_finite, fits_float32

floats = st.one_of(
    st.floats(width=64),
    st.sampled_from([FLOAT32_MAX, -FLOAT32_MAX, np.nextafter(FLOAT32_MAX, np.inf), 1e154, 1e200]),
)


@given(
    hnp.arrays(
        st.sampled_from([np.float32, np.float64]),
        hnp.array_shapes(max_dims=2),
        elements=st.floats(width=32),
    )
)
def test_all_finite_agrees_with_numpy(values: np.ndarray) -> None:
    assert all_finite(values) == bool(np.isfinite(values).all())


@given(hnp.arrays(np.float64, hnp.array_shapes(max_dims=2), elements=floats))
def test_fits_float32_never_lets_an_overflow_or_a_nan_through(values: np.ndarray) -> None:
    if fits_float32(values):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "overflow encountered in cast"
            assert np.isfinite(values.astype(np.float32)).all()


def test_fits_float32_takes_ordinary_rows() -> None:
    assert fits_float32(np.linspace(-1e6, 1e6, 20))
    assert not fits_float32(np.array([1.0, np.nan]))
    assert not fits_float32(np.array([1e39]))
