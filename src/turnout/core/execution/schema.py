"""Input schemas: turn a request's rows into the one array a model takes, or say why not.

Encoding happens once per request, before the request is queued, so a bad
request fails alone with :class:`InvalidInputError` and never reaches a model.
The fast path is a handful of numpy calls; the diagnosis that names the
offending row and feature runs only once something is known to be wrong.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Real
from typing import Any

import numpy as np

from turnout.core.errors import InvalidConfigError, InvalidInputError
from turnout.core.execution.columns import InputColumn, record_dtype
from turnout.core.execution.finite import all_finite

__all__ = ["DEFAULT_MAX_REQUEST_ROWS", "InputSchema"]

DEFAULT_MAX_REQUEST_ROWS = 4096

_NUMERIC_KINDS = frozenset("biuf")


@dataclass(frozen=True)
class InputSchema:
    """What a model accepts: feature count and order, element type, limits.

    With ``columns`` (a model with one typed input per column, strings among
    them) rows are encoded into records, one field per column, and
    ``dtype`` and ``feature_names`` follow from the columns.
    """

    n_features: int
    dtype: np.dtype[Any] = field(default_factory=lambda: np.dtype(np.float32))
    feature_names: tuple[str, ...] | None = None
    allow_nan: bool = False
    max_rows: int = DEFAULT_MAX_REQUEST_ROWS
    columns: tuple[InputColumn, ...] | None = None
    _name_index: Mapping[str, int] = field(init=False, repr=False, compare=False)
    _strings: Mapping[str, InputColumn] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.n_features < 1:
            raise InvalidConfigError(f"n_features must be >= 1, got {self.n_features}")
        if self.max_rows < 1:
            raise InvalidConfigError(f"max_rows must be >= 1, got {self.max_rows}")
        columns = self.columns
        if columns is not None:
            # The columns name the features: the checks of names below hold for them.
            columns = tuple(columns)
            object.__setattr__(self, "columns", columns)
            object.__setattr__(self, "dtype", record_dtype(columns))
            object.__setattr__(self, "feature_names", tuple(c.name for c in columns))
        object.__setattr__(self, "dtype", np.dtype(self.dtype))
        if columns is None and self.dtype.kind not in _NUMERIC_KINDS:
            raise InvalidConfigError(f"unsupported input element type {self.dtype}")
        strings = {c.name: c for c in columns or () if c.is_string}
        object.__setattr__(self, "_strings", strings)
        names = self.feature_names
        if names is not None:
            names = tuple(names)
            if len(names) != self.n_features:
                raise InvalidConfigError(
                    f"{len(names)} feature names given for a model of {self.n_features} features"
                )
            if len(set(names)) != len(names):
                raise InvalidConfigError("feature names must be unique")
            if not all(isinstance(name, str) and name for name in names):
                raise InvalidConfigError("feature names must be non-empty strings")
            object.__setattr__(self, "feature_names", names)
        index = {} if names is None else {name: i for i, name in enumerate(names)}
        object.__setattr__(self, "_name_index", index)

    def encode(self, inputs: object) -> np.ndarray[Any, Any]:
        """Return ``inputs`` as a C-contiguous (rows, n_features) array of ``dtype``.

        Accepts a list of dicts keyed by feature name, a list of rows, a 2-D
        numpy array or a pandas DataFrame; raises InvalidInputError otherwise.
        A schema with ``columns`` returns records (a 1-D structured array).
        """
        if self.columns is not None:
            return self._encode_records(inputs)
        if isinstance(inputs, np.ndarray):
            return self._finish(self._check_array(inputs))
        if _is_dataframe(inputs):
            return self._encode_dataframe(inputs)
        inputs = _rows_of(inputs, "a 2-D array")
        self._check_row_count(len(inputs))
        values = self._values_from_mappings(inputs) if isinstance(inputs[0], Mapping) else inputs
        try:
            array = np.asarray(values)
        except (ValueError, TypeError):
            # Ragged rows or values numpy cannot hold: find the exact culprit.
            self._diagnose(inputs)
            raise InvalidInputError("inputs could not be read as a table of numbers") from None
        if array.dtype.kind not in _NUMERIC_KINDS or array.ndim != 2:
            self._diagnose(inputs)
            raise InvalidInputError("inputs could not be read as a table of numbers")
        if array.shape[1] != self.n_features:
            self._diagnose(inputs)
            raise InvalidInputError(f"expected {self.n_features} values per row")
        return self._finish(array)

    # -- the fast path -------------------------------------------------------

    def _values_from_mappings(self, rows: Sequence[Any]) -> list[list[Any]]:
        names = self.feature_names
        if names is None:
            raise InvalidInputError(
                "this model has no feature names, so rows cannot be dicts: send lists of"
                f" {self.n_features} values, or deploy it with features=[...]"
            )
        width = self.n_features
        try:
            values = [[row[name] for name in names] for row in rows]
        except (KeyError, TypeError, IndexError):
            self._diagnose(rows)
            raise InvalidInputError("rows do not match the model's features") from None
        for row in rows:
            if len(row) != width:
                self._diagnose(rows)
                raise InvalidInputError("rows do not match the model's features")
        return values

    def _check_row_count(self, n_rows: int) -> None:
        if n_rows == 0:
            raise InvalidInputError("inputs are empty: send at least one row")
        if n_rows > self.max_rows:
            raise InvalidInputError(
                f"{n_rows} rows in one request; the limit is {self.max_rows}:"
                " split the request into smaller ones"
            )

    def _check_array(self, array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        if array.ndim != 2:
            hint = " (use array.reshape(1, -1) for a single row)" if array.ndim == 1 else ""
            raise InvalidInputError(
                f"expected a 2-D array of shape (rows, {self.n_features}), got {array.ndim}-D{hint}"
            )
        self._check_row_count(array.shape[0])
        if array.shape[1] != self.n_features:
            raise InvalidInputError(
                f"expected {self.n_features} columns, got {array.shape[1]}", field="columns"
            )
        if array.dtype.kind not in _NUMERIC_KINDS:
            if array.dtype.kind == "O":
                self._diagnose(array.tolist())
            raise InvalidInputError(f"expected numbers, got an array of {array.dtype}")
        return array

    def _encode_dataframe(self, frame: Any) -> np.ndarray[Any, Any]:
        columns = [str(column) for column in frame.columns]
        if self.feature_names is not None and set(columns) != set(self.feature_names):
            missing = [name for name in self.feature_names if name not in set(columns)]
            unknown = [name for name in columns if name not in self._name_index]
            if missing:
                raise InvalidInputError(f"missing feature {missing[0]!r}", field=missing[0])
            raise InvalidInputError(
                f"unknown feature {unknown[0]!r}; expected {self._expected_names()}",
                field=unknown[0],
            )
        if self.feature_names is not None:
            frame = frame[list(self.feature_names)]
        array = frame.to_numpy()
        if array.dtype.kind == "O" and all(
            getattr(dtype, "kind", "O") in _NUMERIC_KINDS for dtype in frame.dtypes
        ):
            # pandas makes an object array of numeric columns of mixed kinds (bool
            # and float, nullable Int64 with <NA>): read them as numbers, NA as NaN.
            array = frame.to_numpy(dtype=np.float64, na_value=np.nan)
        return self._finish(self._check_array(array))

    def _finish(self, array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        if (
            self.dtype.kind in "iu"
            and array.dtype.kind == "f"
            and not np.array_equal(array, np.trunc(array))
        ):
            raise InvalidInputError(f"this model takes whole numbers ({self.dtype})")
        if array.dtype == self.dtype and array.flags.c_contiguous:
            encoded = array  # the common case of a ready-made array: no copy, no cast
        else:
            # A value beyond the dtype's range becomes inf (float) or wraps (int)
            # in the cast: both are caught just below, so numpy need not warn.
            with np.errstate(over="ignore", invalid="ignore"):
                encoded = np.ascontiguousarray(array, dtype=self.dtype)
        if encoded.dtype.kind == "f" and not self.allow_nan and not all_finite(encoded):
            self._raise_non_finite(encoded)
        if encoded.dtype.kind in "iu" and not np.array_equal(encoded, array):
            i, j = (int(k) for k in np.argwhere(encoded != array)[0])
            name = self._column_name(j)
            raise InvalidInputError(
                f"row {i}, feature {name!r}: {array[i, j]} is out of range for {self.dtype}",
                field=name,
            )
        return encoded

    # -- records: a typed field per column ---------------------------------------

    def _encode_records(self, inputs: object) -> np.ndarray[Any, Any]:
        assert self.columns is not None
        assert self.feature_names is not None
        names = self.feature_names
        values: Sequence[Sequence[Any]]
        if isinstance(inputs, np.ndarray) and inputs.dtype.names is not None:
            self._check_columns(list(inputs.dtype.names))
            self._check_row_count(len(inputs))
            values = [inputs[name].tolist() for name in names]
        elif _is_dataframe(inputs):
            frame: Any = inputs
            self._check_columns([str(column) for column in frame.columns])
            self._check_row_count(len(frame))
            values = [frame[name].tolist() for name in names]
        elif isinstance(inputs, np.ndarray):
            if inputs.ndim != 2:
                raise InvalidInputError(
                    f"expected a 2-D array of shape (rows, {self.n_features}), got {inputs.ndim}-D"
                )
            return self._encode_records(inputs.tolist())
        else:
            inputs = _rows_of(inputs, "a DataFrame")
            self._check_row_count(len(inputs))
            rows: Sequence[Any]
            if isinstance(inputs[0], Mapping):
                rows = self._values_from_mappings(inputs)
            else:
                for i, row in enumerate(inputs):
                    if (
                        isinstance(row, Mapping | str)
                        or not isinstance(row, Sequence)
                        or len(row) != self.n_features
                    ):
                        self._diagnose_sequence(i, row)
                rows = inputs
            values = [[row[j] for row in rows] for j in range(self.n_features)]
        records = np.empty(len(values[0]), dtype=self.dtype)
        for column, column_values in zip(self.columns, values, strict=True):
            records[column.name] = self._column(column, column_values)
        return records

    def _check_columns(self, given: list[str]) -> None:
        expected = set(self._name_index)
        if set(given) == expected:
            return
        missing = [name for name in self._name_index if name not in set(given)]
        if missing:
            raise InvalidInputError(f"missing feature {missing[0]!r}", field=missing[0])
        unknown = next(name for name in given if name not in expected)
        raise InvalidInputError(
            f"unknown feature {unknown!r}; expected {self._expected_names()}", field=unknown
        )

    def _column(self, column: InputColumn, values: Sequence[Any]) -> np.ndarray[Any, Any]:
        """One column's values as an array of its type, or an error naming the row at fault."""
        name = column.name
        if column.is_string:
            known, ascii_only = column.categories, column.ascii_only
            for i, value in enumerate(values):
                if (
                    not isinstance(value, str)
                    or (known is not None and value not in known)
                    or (ascii_only and not value.isascii())
                ):
                    self._check_string(i, column, value)
            return np.array(values, dtype=object)
        array = np.asarray(values)
        if array.dtype.kind not in _NUMERIC_KINDS or array.ndim != 1:
            for i, value in enumerate(values):
                self._check_value(i, name, value)
            raise InvalidInputError(f"feature {name!r}: expected numbers", field=name)
        target = column.dtype
        if target.kind in "iu" and array.dtype.kind == "f":
            fractional = np.flatnonzero(array != np.trunc(array))
            if fractional.size:
                i = int(fractional[0])
                raise InvalidInputError(
                    f"row {i}, feature {name!r}: {array[i]} is not a whole number ({target})",
                    field=name,
                )
        with np.errstate(over="ignore", invalid="ignore"):
            encoded = array.astype(target)
        if target.kind == "f" and not self.allow_nan and not all_finite(encoded):
            i = int(np.flatnonzero(~np.isfinite(encoded))[0])
            raise InvalidInputError(
                f"row {i}, feature {name!r}: {array[i]} is not allowed (or out of range for"
                f" {target}); deploy with allow_nan=True if the model handles missing values",
                field=name,
            )
        if target.kind in "iu" and not np.array_equal(encoded, array):
            i = int(np.flatnonzero(encoded != array)[0])
            raise InvalidInputError(
                f"row {i}, feature {name!r}: {array[i]} is out of range for {target}", field=name
            )
        return encoded

    # -- the slow path: name the row and field at fault ------------------------

    def _diagnose(self, rows: Sequence[Any]) -> None:
        """Raise an InvalidInputError that names the first bad row and field, if any."""
        first_is_mapping = isinstance(rows[0], Mapping)
        for i, row in enumerate(rows):
            if first_is_mapping:
                self._diagnose_mapping(i, row)
            else:
                self._diagnose_sequence(i, row)

    def _diagnose_mapping(self, i: int, row: object) -> None:
        if not isinstance(row, Mapping):
            raise InvalidInputError(
                f"row {i}: expected a dict like the rows before it, got {type(row).__name__}",
                field=f"row[{i}]",
            )
        assert self.feature_names is not None
        for name in self.feature_names:
            if name not in row:
                raise InvalidInputError(f"row {i}: missing feature {name!r}", field=name)
        for key in row:
            if key not in self._name_index:
                raise InvalidInputError(
                    f"row {i}: unknown feature {key!r}; expected {self._expected_names()}",
                    field=str(key),
                )
        for name in self.feature_names:
            self._check_value(i, name, row[name])

    def _diagnose_sequence(self, i: int, row: object) -> None:
        if isinstance(row, Mapping) or not isinstance(row, Sequence) or isinstance(row, str):
            raise InvalidInputError(
                f"row {i}: expected a list of {self.n_features} numbers, got {type(row).__name__}",
                field=f"row[{i}]",
            )
        if len(row) != self.n_features:
            raise InvalidInputError(
                f"row {i}: expected {self.n_features} values, got {len(row)}",
                field=f"row[{i}]",
            )
        for j, value in enumerate(row):
            self._check_value(i, self._column_name(j), value)

    def _check_value(self, i: int, name: str, value: object) -> None:
        string_column = self._strings.get(name)
        if string_column is not None:
            self._check_string(i, string_column, value)
            return
        if isinstance(value, bool | np.bool_):
            return
        if not isinstance(value, Real | np.number) or isinstance(value, np.complexfloating):
            raise InvalidInputError(
                f"row {i}, feature {name!r}: expected a number, got"
                f" {type(value).__name__} {_short_repr(value)}",
                field=name,
            )
        try:
            number = float(value)
        except OverflowError:  # an int with hundreds of digits
            raise InvalidInputError(
                f"row {i}, feature {name!r}: {_short_repr(value)} is out of range for {self.dtype}",
                field=name,
            ) from None
        if not self.allow_nan and not math.isfinite(number):
            raise InvalidInputError(
                f"row {i}, feature {name!r}: {value} is not allowed; deploy with"
                " allow_nan=True if the model handles missing values",
                field=name,
            )

    def _check_string(self, i: int, column: InputColumn, value: object) -> None:
        name = column.name
        if not isinstance(value, str):
            raise InvalidInputError(
                f"row {i}, feature {name!r}: expected a string, got"
                f" {type(value).__name__} {_short_repr(value)}",
                field=name,
            )
        if column.ascii_only and not value.isascii():
            raise InvalidInputError(
                f"row {i}, feature {name!r}: text beyond ASCII ({_short_repr(value)}), which the"
                " ONNX graph cannot split into words as scikit-learn does; deploy the model"
                " with runtime='python' to serve such text",
                field=name,
            )
        known = column.categories
        if known is not None and value not in known:
            shown = ", ".join(repr(category) for category in sorted(known)[:10])
            more = f", ... ({len(known)} in all)" if len(known) > 10 else ""
            raise InvalidInputError(
                f"row {i}, feature {name!r}: unknown category {_short_repr(value)}; the model"
                f" takes {shown}{more}",
                field=name,
            )

    def _raise_non_finite(self, encoded: np.ndarray[Any, Any]) -> None:
        i, j = (int(k) for k in np.argwhere(~np.isfinite(encoded))[0])
        name = self._column_name(j)
        raise InvalidInputError(
            f"row {i}, feature {name!r}: {encoded[i, j]} is not allowed (or out of range for"
            f" {self.dtype}); deploy with allow_nan=True if the model handles missing values",
            field=name,
        )

    def _column_name(self, j: int) -> str:
        return self.feature_names[j] if self.feature_names is not None else f"column {j}"

    def _expected_names(self) -> str:
        assert self.feature_names is not None
        shown = ", ".join(self.feature_names[:10])
        more = f", ... ({self.n_features} in all)" if self.n_features > 10 else ""
        return shown + more


def _rows_of(inputs: object, other_form: str) -> Sequence[Any]:
    """``inputs`` if it is a list of rows, else the InvalidInputError that says what to send."""
    if isinstance(inputs, Mapping):
        raise InvalidInputError("inputs must be a list of rows; wrap a single row in a list")
    if not isinstance(inputs, Sequence) or isinstance(inputs, str | bytes):
        raise InvalidInputError(
            f"inputs must be a list of dicts, a list of rows or {other_form},"
            f" not {type(inputs).__name__}"
        )
    return inputs


def _is_dataframe(value: object) -> bool:
    # Duck-typed so pandas stays an optional dependency.
    return hasattr(value, "columns") and hasattr(value, "to_numpy") and hasattr(value, "iloc")


def _short_repr(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
