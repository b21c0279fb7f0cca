"""InputSchema.encode: every accepted input form, and an error that names the fault for the rest."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from turnout import InvalidConfigError, InvalidInputError
from turnout.core.execution.schema import InputSchema

NAMES = ("age", "income", "score")


@pytest.fixture
def schema() -> InputSchema:
    """Three named float32 features, at most 100 rows a request."""
    return InputSchema(n_features=3, feature_names=NAMES, max_rows=100)


@pytest.fixture
def unnamed() -> InputSchema:
    """Three float32 features without names: rows must be lists or arrays."""
    return InputSchema(n_features=3)


def assert_encoded(actual: np.ndarray[Any, Any], expected: Any, dtype: Any = np.float32) -> None:
    assert actual.dtype == dtype
    assert actual.flags.c_contiguous
    np.testing.assert_array_equal(actual, np.asarray(expected, dtype=dtype))


# -- accepted inputs -------------------------------------------------------------------


def test_dicts_come_out_in_model_order_whatever_the_key_order(schema: InputSchema) -> None:
    rows = [
        {"age": 30, "income": 52_000.5, "score": 0.7},
        {"score": 0.1, "age": 41, "income": 61_000.0},
        {"income": 0, "score": -1, "age": 18},
    ]
    encoded = schema.encode(rows)
    assert_encoded(encoded, [[30, 52_000.5, 0.7], [41, 61_000.0, 0.1], [18, 0, -1]])


def test_lists_of_rows_and_tuples_are_read_in_order(unnamed: InputSchema) -> None:
    assert_encoded(unnamed.encode([[1, 2, 3], [4.5, 5, 6]]), [[1, 2, 3], [4.5, 5, 6]])
    assert_encoded(unnamed.encode(((1, 2, 3),)), [[1, 2, 3]])


def test_numpy_and_bool_values_are_numbers(schema: InputSchema) -> None:
    row = {"age": np.int64(7), "income": np.float32(1.5), "score": True}
    assert_encoded(schema.encode([row]), [[7, 1.5, 1]])


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64, np.bool_])
def test_2d_arrays_of_any_numeric_dtype_are_cast(unnamed: InputSchema, dtype: Any) -> None:
    array = np.arange(6).reshape(2, 3).astype(dtype)
    assert_encoded(unnamed.encode(array), array)


def test_non_contiguous_arrays_come_out_c_contiguous(unnamed: InputSchema) -> None:
    fortran = np.asfortranarray(np.arange(6.0).reshape(2, 3))
    strided = np.arange(12.0).reshape(2, 6)[:, ::2]
    assert_encoded(unnamed.encode(fortran), fortran)
    assert_encoded(unnamed.encode(strided), strided)


def test_output_has_the_schemas_dtype() -> None:
    schema = InputSchema(n_features=2, dtype=np.float64)
    assert_encoded(schema.encode([[1, 2.5]]), [[1, 2.5]], dtype=np.float64)
    # A float64 model keeps values that float32 could not hold.
    assert schema.encode([[1e300, 0]])[0, 0] == 1e300


def test_dataframe_columns_are_reordered_by_name(schema: InputSchema) -> None:
    frame = pd.DataFrame({"score": [0.5, 0.25], "age": [20, 30], "income": [1.0, 2.0]})
    assert_encoded(schema.encode(frame), [[20, 1.0, 0.5], [30, 2.0, 0.25]])


def test_dataframe_with_bool_and_float_columns(schema: InputSchema) -> None:
    # pandas turns such a frame into an object array; it is still all numbers.
    frame = pd.DataFrame({"age": [20.0], "income": [3], "score": [True]})
    assert_encoded(schema.encode(frame), [[20, 3, 1]])


def test_dataframe_missing_values_are_nan(schema: InputSchema) -> None:
    frame = pd.DataFrame(
        {"age": pd.array([1, None], dtype="Int64"), "income": [1.0, 2.0], "score": [0, 1]}
    )
    with pytest.raises(InvalidInputError, match="row 1, feature 'age': nan") as info:
        schema.encode(frame)
    assert info.value.field == "age"
    lenient = InputSchema(n_features=3, feature_names=NAMES, allow_nan=True)
    assert np.isnan(lenient.encode(frame)[1, 0])


def test_dataframe_without_model_names_is_read_by_position(unnamed: InputSchema) -> None:
    frame = pd.DataFrame({"z": [1.0], "y": [2.0], "x": [3.0]})
    assert_encoded(unnamed.encode(frame), [[1, 2, 3]])


def test_allow_nan_lets_missing_values_through() -> None:
    schema = InputSchema(n_features=2, feature_names=("a", "b"), allow_nan=True)
    encoded = schema.encode([{"a": float("nan"), "b": float("inf")}])
    assert math.isnan(encoded[0, 0])
    assert encoded[0, 1] == np.inf


def test_max_rows_is_allowed(schema: InputSchema) -> None:
    assert schema.encode(np.zeros((100, 3))).shape == (100, 3)


# -- rejected inputs: each error names the fault -----------------------------------------


def test_missing_feature(schema: InputSchema) -> None:
    rows = [{"age": 1, "income": 2, "score": 3}, {"age": 1, "score": 3}]
    with pytest.raises(InvalidInputError, match=r"row 1: missing feature 'income'") as info:
        schema.encode(rows)
    assert info.value.field == "income"


def test_unknown_feature(schema: InputSchema) -> None:
    with pytest.raises(
        InvalidInputError, match=r"unknown feature 'height'; expected age, income, score"
    ) as info:
        schema.encode([{"age": 1, "income": 2, "score": 3, "height": 180}])
    assert info.value.field == "height"


def test_dataframe_missing_and_unknown_columns(schema: InputSchema) -> None:
    with pytest.raises(InvalidInputError, match="missing feature 'score'") as info:
        schema.encode(pd.DataFrame({"age": [1], "income": [2]}))
    assert info.value.field == "score"
    with pytest.raises(InvalidInputError, match="unknown feature 'height'") as info:
        schema.encode(pd.DataFrame({"age": [1], "income": [2], "score": [3], "height": [4]}))
    assert info.value.field == "height"


@pytest.mark.parametrize(
    ("rows", "bad_row", "length"),
    [([[1, 2]], 0, 2), ([[1, 2, 3], [1, 2, 3, 4]], 1, 4), ([[1, 2, 3], [1, 2, 3], []], 2, 0)],
)
def test_wrong_row_length(unnamed: InputSchema, rows: Any, bad_row: int, length: int) -> None:
    with pytest.raises(
        InvalidInputError, match=rf"row {bad_row}: expected 3 values, got {length}"
    ) as info:
        unnamed.encode(rows)
    assert info.value.field == f"row[{bad_row}]"


def test_wrong_column_count_in_an_array(unnamed: InputSchema) -> None:
    with pytest.raises(InvalidInputError, match="expected 3 columns, got 4") as info:
        unnamed.encode(np.zeros((2, 4)))
    assert info.value.field == "columns"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("12", "str '12'"),
        (None, "NoneType None"),
        ([1.0], r"list \[1.0\]"),
        ([1.0, 2.0], r"list \[1.0, 2.0\]"),
        (2j, "complex 2j"),
        (np.complex64(1), "complex64"),
        (b"1", "bytes b'1'"),
        ({"x": 1}, "dict"),
    ],
)
def test_non_numeric_values(schema: InputSchema, value: object, shown: str) -> None:
    good = {"age": 1, "income": 2, "score": 3}
    rows = [good, {**good, "income": value}]
    with pytest.raises(
        InvalidInputError, match=rf"row 1, feature 'income': expected a number, got {shown}"
    ) as info:
        schema.encode(rows)
    assert info.value.field == "income"
    # The same value in a list of rows is named by the model's feature name too.
    with pytest.raises(
        InvalidInputError, match=r"row 1, feature 'income': expected a number"
    ) as info:
        schema.encode([[1, 2, 3], [1, value, 3]])
    assert info.value.field == "income"


def test_non_numeric_values_without_names_are_named_by_column(unnamed: InputSchema) -> None:
    with pytest.raises(
        InvalidInputError, match=r"row 0, feature 'column 2': expected a number, got str"
    ) as info:
        unnamed.encode([[1, 2, "x"]])
    assert info.value.field == "column 2"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), 1e300, -1e39])
def test_non_finite_values_are_rejected(schema: InputSchema, value: float) -> None:
    # 1e300 and -1e39 are finite, but float32 cannot hold them.
    good = {"age": 1, "income": 2, "score": 3}
    for inputs in (
        [good, {**good, "score": value}],
        [[1, 2, 3], [1, 2, value]],
        np.array([[1, 2, 3], [1, 2, value]]),
        pd.DataFrame({"score": [3, value], "age": [1, 1], "income": [2, 2]}),
    ):
        with pytest.raises(
            InvalidInputError, match=r"row 1, feature 'score': .*allow_nan=True"
        ) as info:
            schema.encode(inputs)
        assert info.value.field == "score"


def test_integer_too_large_for_any_float(unnamed: InputSchema) -> None:
    with pytest.raises(
        InvalidInputError, match=r"row 0, feature 'column 1': 1000000.* is out of range"
    ) as info:
        unnamed.encode([[1, 10**400, 3]])
    assert info.value.field == "column 1"


def test_integer_schema_rejects_fractions_and_out_of_range_values() -> None:
    schema = InputSchema(n_features=2, dtype=np.int32, feature_names=("a", "b"))
    assert_encoded(schema.encode([[1, 2.0]]), [[1, 2]], dtype=np.int32)
    with pytest.raises(InvalidInputError, match="whole numbers"):
        schema.encode([[1, 2.5]])
    # 2**40 would wrap around to 0 in int32.
    with pytest.raises(
        InvalidInputError, match=r"row 0, feature 'b': 1099511627776 is out of range for int32"
    ) as info:
        schema.encode([[1, 2**40]])
    assert info.value.field == "b"


@pytest.mark.parametrize("empty", [[], (), np.zeros((0, 3))])
def test_empty_input(unnamed: InputSchema, empty: Any) -> None:
    with pytest.raises(InvalidInputError, match="inputs are empty: send at least one row"):
        unnamed.encode(empty)


@pytest.mark.parametrize(
    "inputs",
    [[[0, 0, 0]] * 101, np.zeros((101, 3)), pd.DataFrame(np.zeros((101, 3)), columns=NAMES)],
)
def test_more_rows_than_max_rows(schema: InputSchema, inputs: Any) -> None:
    with pytest.raises(InvalidInputError, match="101 rows in one request; the limit is 100"):
        schema.encode(inputs)


def test_single_dict_must_be_wrapped_in_a_list(schema: InputSchema) -> None:
    with pytest.raises(InvalidInputError, match="wrap a single row in a list"):
        schema.encode({"age": 1, "income": 2, "score": 3})


def test_one_dimensional_array_gets_a_reshape_hint(unnamed: InputSchema) -> None:
    with pytest.raises(
        InvalidInputError, match=r"got 1-D \(use array.reshape\(1, -1\) for a single row\)"
    ):
        unnamed.encode(np.array([1.0, 2.0, 3.0]))


def test_flat_list_is_not_a_list_of_rows(unnamed: InputSchema) -> None:
    with pytest.raises(
        InvalidInputError, match="row 0: expected a list of 3 numbers, got float"
    ) as info:
        unnamed.encode([1.0, 2.0, 3.0])
    assert info.value.field == "row[0]"


def test_three_dimensional_input(unnamed: InputSchema) -> None:
    with pytest.raises(InvalidInputError, match="got 3-D"):
        unnamed.encode(np.zeros((2, 1, 3)))
    with pytest.raises(
        InvalidInputError, match=r"row 0, feature 'column 0': expected a number, got list"
    ):
        unnamed.encode([[[1, 2, 3], [1, 2, 3], [1, 2, 3]]])


def test_object_arrays(unnamed: InputSchema) -> None:
    with pytest.raises(
        InvalidInputError, match=r"row 1, feature 'column 0': expected a number, got str 'x'"
    ) as info:
        unnamed.encode(np.array([[1, 2, 3], ["x", 2, 3]], dtype=object))
    assert info.value.field == "column 0"
    with pytest.raises(InvalidInputError, match="expected numbers, got an array of object"):
        unnamed.encode(np.array([[1, 2, 3]], dtype=object))


def test_rows_mixing_dicts_and_lists(schema: InputSchema) -> None:
    with pytest.raises(
        InvalidInputError, match="row 1: expected a dict like the rows before it, got list"
    ) as info:
        schema.encode([{"age": 1, "income": 2, "score": 3}, [1, 2, 3]])
    assert info.value.field == "row[1]"
    with pytest.raises(
        InvalidInputError, match="row 1: expected a list of 3 numbers, got dict"
    ) as info:
        schema.encode([[1, 2, 3], {"age": 1, "income": 2, "score": 3}])
    assert info.value.field == "row[1]"


def test_dicts_need_feature_names(unnamed: InputSchema) -> None:
    with pytest.raises(
        InvalidInputError, match=r"no feature names.*deploy it with features=\[\.\.\.\]"
    ):
        unnamed.encode([{"a": 1, "b": 2, "c": 3}])


@pytest.mark.parametrize("inputs", ["1,2,3", b"123", None, 42, (row for row in [[1, 2, 3]])])
def test_inputs_that_are_not_tables(unnamed: InputSchema, inputs: object) -> None:
    with pytest.raises(InvalidInputError, match=f"not {type(inputs).__name__}"):
        unnamed.encode(inputs)


# -- construction ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_features": 0}, "n_features must be >= 1"),
        ({"n_features": -3}, "n_features must be >= 1"),
        ({"n_features": 2, "feature_names": ("a", "a")}, "feature names must be unique"),
        ({"n_features": 3, "feature_names": ("a", "b")}, "2 feature names given for a model of 3"),
        ({"n_features": 1, "feature_names": ("",)}, "non-empty strings"),
        ({"n_features": 1, "feature_names": (1,)}, "non-empty strings"),
        ({"n_features": 1, "max_rows": 0}, "max_rows must be >= 1"),
        ({"n_features": 1, "dtype": np.str_}, "unsupported input element type"),
    ],
)
def test_bad_schema_is_a_config_error(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidConfigError, match=message):
        InputSchema(**kwargs)


# -- properties ------------------------------------------------------------------------

# Feature names are any distinct non-empty strings; values any float32 number.
feature_names = st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=6, unique=True)
finite32 = st.floats(allow_nan=False, allow_infinity=False, width=32)


@st.composite
def named_tables(draw: st.DrawFn) -> tuple[tuple[str, ...], np.ndarray[Any, Any]]:
    names = tuple(draw(feature_names))
    n_rows = draw(st.integers(1, 12))
    table = draw(arrays(np.float32, (n_rows, len(names)), elements=finite32))
    return names, table


@settings(max_examples=150, deadline=None)
@given(case=named_tables(), data=st.data())
def test_every_input_form_encodes_to_the_same_table(
    case: tuple[tuple[str, ...], np.ndarray[Any, Any]], data: st.DataObject
) -> None:
    names, table = case
    schema = InputSchema(n_features=len(names), feature_names=names)
    rows = table.tolist()
    # Each dict lists its keys in its own random order.
    dicts = []
    for row in rows:
        order = data.draw(st.permutations(range(len(names))))
        dicts.append({names[j]: row[j] for j in order})
    columns = list(data.draw(st.permutations(names)))
    frame = pd.DataFrame(table, columns=list(names))[columns]

    for inputs in (dicts, rows, table, table.astype(np.float64), frame):
        encoded = schema.encode(inputs)
        assert encoded.dtype == np.float32
        assert encoded.flags.c_contiguous
        np.testing.assert_array_equal(encoded, table)


BAD_VALUES = st.one_of(
    st.sampled_from([float("nan"), float("inf"), -float("inf"), None]), st.text(max_size=5)
)


@settings(max_examples=150, deadline=None)
@given(case=named_tables(), data=st.data())
def test_a_bad_cell_is_named_by_feature_and_row(
    case: tuple[tuple[str, ...], np.ndarray[Any, Any]], data: st.DataObject
) -> None:
    names, table = case
    schema = InputSchema(n_features=len(names), feature_names=names)
    i = data.draw(st.integers(0, table.shape[0] - 1), label="row")
    j = data.draw(st.integers(0, table.shape[1] - 1), label="column")
    bad = data.draw(BAD_VALUES, label="bad value")
    rows: list[list[Any]] = table.tolist()
    rows[i][j] = bad
    dicts = [dict(zip(names, row, strict=True)) for row in rows]

    for inputs in (dicts, rows, np.array(rows, dtype=object)):
        with pytest.raises(InvalidInputError) as info:
            schema.encode(inputs)
        assert info.value.field == names[j]
        message = str(info.value)
        assert re.search(rf"\brow {i}\b", message), message
        assert repr(names[j]) in message
