"""Open Inference Protocol tensors in JSON: request inputs to numpy arrays, arrays to outputs.

Tensor data is row-major, flat or nested in the tensor's natural shape; the
``shape`` must account for exactly the values sent. The numeric datatypes a
turnout model can take are accepted (FP32, FP64, INT32, INT64); booleans are
read as 0 and 1, as the protocol lets a server coerce them. BYTES tensors
hold strings, one column's values for a model with string columns (see
:mod:`turnout.core.execution.columns`). An input sent as binary data (see
:mod:`turnout.web.binary`) is read from its bytes instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from turnout.core.execution.finite import all_finite, fits_float32
from turnout.web.binary import tensor_from_bytes
from turnout.web.body import bad_request, get_list, get_string, require_object, type_name
from turnout.web.jsonio import array_to_json

__all__ = [
    "INPUT_DATATYPES",
    "InputTensor",
    "check_shape",
    "datatype_of",
    "decode",
    "encode",
    "parse_input",
]

INPUT_DATATYPES: Mapping[str, np.dtype[Any]] = {
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "BYTES": np.dtype(object),
}

_SUPPORTED = ", ".join(INPUT_DATATYPES)


@dataclass(frozen=True)
class InputTensor:
    """One request input as sent: name, shape, datatype and data; ``where`` locates it.

    A binary input has its values in ``array`` (of its shape and datatype) and no ``data``.
    """

    name: str
    shape: tuple[int, ...]
    datatype: str
    data: list[Any]
    where: str
    array: np.ndarray[Any, Any] | None = None


def parse_input(value: object, where: str, raw: bytes | None = None) -> InputTensor:
    """Check one ``$request_input`` object's fields and return it as an InputTensor.

    ``raw`` is the input's binary data, for one sent with ``binary_data_size``.
    """
    obj = require_object(value, where)
    name = get_string(obj, "name", f"{where}.name")
    datatype = get_string(obj, "datatype", f"{where}.datatype")
    shape = get_list(obj, "shape", f"{where}.shape")
    if raw is not None and obj.get("data") is not None:
        raise bad_request(
            f"{where} has both data and parameters.binary_data_size: send one or the other",
            f"{where}.data",
        )
    data = [] if raw is not None else get_list(obj, "data", f"{where}.data")
    assert name is not None
    assert datatype is not None
    assert shape is not None
    assert data is not None
    if datatype not in INPUT_DATATYPES:
        raise bad_request(
            f"{where}.datatype {datatype[:20]!r} is not supported; use one of {_SUPPORTED}",
            f"{where}.datatype",
        )
    dims = check_shape(shape, f"{where}.shape")
    if raw is None:
        return InputTensor(name, dims, datatype, data, where)
    array = tensor_from_bytes(raw, INPUT_DATATYPES[datatype], datatype, dims, where)
    return InputTensor(name, dims, datatype, data, where, array)


def check_shape(shape: list[Any], where: str) -> tuple[int, ...]:
    """Return a tensor's shape as a tuple if it is [rows] or [rows, features], else raise a 400."""
    if not 1 <= len(shape) <= 2:
        raise bad_request(
            f"{where} must have 1 or 2 dimensions ([rows, features], or [rows] for one"
            f" feature), not {len(shape)}",
            where,
        )
    for dim in shape:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 0:
            raise bad_request(
                f"{where} must be a list of non-negative integers, not {shape!r:.60}", where
            )
    return tuple(shape)


def decode(tensor: InputTensor) -> np.ndarray[Any, Any]:
    """Return the tensor's data as an array of its shape and datatype, or raise a 400."""
    where = f"{tensor.where}.data"
    if tensor.datatype == "BYTES" and tensor.array is None:
        return _strings(tensor, where)
    if tensor.array is not None:
        # NaN in binary data is the model's to take or refuse: its schema checks it once,
        # naming the row and feature, and takes it when deployed with allow_nan=True.
        return tensor.array
    try:
        raw = np.asarray(tensor.data)
    except (ValueError, TypeError):
        raise bad_request(
            f"{where} must be a flat list of numbers, or lists nested to the tensor's shape"
            " with every row the same length",
            where,
        ) from None
    if raw.dtype.kind not in "biuf":
        _raise_first_bad_element(tensor.data, where)
    expected = math.prod(tensor.shape)
    if raw.ndim == 1 and raw.size == expected:
        raw = raw.reshape(tensor.shape)
    elif raw.ndim > 1 and raw.shape != tensor.shape:
        raise bad_request(
            f"{where} is nested as {list(raw.shape)}, but the shape is {list(tensor.shape)}",
            where,
        )
    elif raw.ndim == 1:
        raise bad_request(
            f"{tensor.where}: shape {list(tensor.shape)} holds {expected} values,"
            f" but data has {raw.size}",
            where,
        )
    return _convert(raw, INPUT_DATATYPES[tensor.datatype], tensor.datatype, where)


def _strings(tensor: InputTensor, where: str) -> np.ndarray[Any, Any]:
    """A BYTES tensor's JSON data: strings, flat or nested to its shape."""
    values: list[Any] = tensor.data
    if len(tensor.shape) == 2 and any(isinstance(value, list) for value in values):
        rows, width = values, tensor.shape[1]
        if len(rows) != tensor.shape[0] or not all(
            isinstance(row, list) and len(row) == width for row in rows
        ):
            raise bad_request(
                f"{where} must be a flat list of strings, or lists nested to the shape"
                f" {list(tensor.shape)}",
                where,
            )
        values = [value for row in rows for value in row]
    for i, value in enumerate(values):
        if not isinstance(value, str):
            shown = f" {value!r:.40}" if not isinstance(value, list) else ""
            raise bad_request(
                f"{where}[{i}]: a BYTES tensor holds strings, not {type_name(value)}{shown}",
                where,
            )
    expected = math.prod(tensor.shape)
    if len(values) != expected:
        raise bad_request(
            f"{tensor.where}: shape {list(tensor.shape)} holds {expected} values,"
            f" but data has {len(values)}",
            where,
        )
    return np.array(values, dtype=object).reshape(tensor.shape)


def _convert(
    raw: np.ndarray[Any, Any], target: np.dtype[Any], datatype: str, where: str
) -> np.ndarray[Any, Any]:
    if raw.dtype == np.float64 and target == np.float32 and fits_float32(raw):
        return raw.astype(target)  # what nearly every request holds: checked in one pass
    if raw.dtype == target and target.kind == "f" and all_finite(raw):
        return raw
    if target.kind == "f":
        # One cast and one check (a few µs less per request than checking first):
        # a value past the target's range becomes inf in the cast, so the check
        # after it catches that and any NaN or inf sent; words come after.
        with np.errstate(over="ignore", invalid="ignore"):
            converted = raw.astype(target, copy=False)
        if converted.size and not np.isfinite(converted).all():
            if raw.dtype.kind == "f" and not np.isfinite(raw).all():
                raise bad_request(f"{where} holds a number too large to represent", where)
            raise bad_request(f"{where} holds a value out of range for {datatype}", where)
        return converted
    if raw.dtype.kind == "f" and raw.size and not np.isfinite(raw).all():
        raise bad_request(f"{where} holds a number too large to represent", where)
    if raw.size:
        if raw.dtype.kind == "f" and not np.array_equal(raw, np.trunc(raw)):
            raise bad_request(f"{where}: a {datatype} tensor holds whole numbers only", where)
        info = np.iinfo(target)
        low, high = raw.min(), raw.max()
        if raw.dtype.kind == "f":
            out_of_range = low < float(info.min) or high >= -float(info.min)
        else:
            out_of_range = int(low) < info.min or int(high) > info.max
        if out_of_range:
            raise bad_request(f"{where} holds a value out of range for {datatype}", where)
    return raw.astype(target, copy=False)


def _raise_first_bad_element(data: list[Any], where: str) -> None:
    """Raise a 400 naming the first element of ``data`` that is not a number."""
    found = _first_bad(data, where)
    if found is None:  # pragma: no cover - numpy found something; say so plainly
        raise bad_request(f"{where} must hold numbers only", where)
    path, value = found
    if isinstance(value, int):
        raise bad_request(f"{path}: {value!r:.40} is out of range for a 64-bit integer", where)
    shown = f" {value!r:.40}" if isinstance(value, str) else ""
    raise bad_request(f"{path}: expected a number, got {type_name(value)}{shown}", where)


def _first_bad(data: list[Any], path: str) -> tuple[str, object] | None:
    for i, value in enumerate(data):
        here = f"{path}[{i}]"
        if isinstance(value, list):
            found = _first_bad(value, here)
            if found is not None:
                return found
        elif isinstance(value, bool | float):
            continue
        elif isinstance(value, int):
            if not -(2**63) <= value < 2**64:
                return here, value
        else:
            return here, value
    return None


def datatype_of(dtype: np.dtype[Any]) -> str:
    """Return the protocol's datatype name for a numpy dtype (BYTES for strings and objects)."""
    bits = dtype.itemsize * 8
    if dtype.kind == "b":
        return "BOOL"
    if dtype.kind == "f":
        return f"FP{bits}"
    if dtype.kind == "i":
        return f"INT{bits}"
    if dtype.kind == "u":
        return f"UINT{bits}"
    return "BYTES"


def encode(name: str, array: np.ndarray[Any, Any]) -> dict[str, Any]:
    """Return ``array`` as a ``$response_output`` object, its data flat in row-major order."""
    return {
        "name": name,
        "datatype": datatype_of(array.dtype),
        "shape": list(array.shape),
        "data": array_to_json(array),
    }
