"""Open Inference Protocol tensors in protobuf: request inputs to InputTensors, arrays to outputs.

An input's values come either typed, in the ``InferTensorContents`` field of
its datatype (``fp32_contents`` for FP32, ``int64_contents`` for INT64, ...),
or raw, as one ``raw_input_contents`` entry per input: row-major
little-endian elements, as tritonclient sends them. A request uses one way
for all its inputs, as the specification says. Outputs always go back raw
(``raw_output_contents``), as Triton answers and every client reads.

What the tensors become is then the HTTP side's business: the same
:class:`~turnout.web.tensors.InputTensor`, checked by the same functions,
so both protocols accept and refuse the same requests.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from turnout.web.binary import tensor_from_bytes, tensor_to_bytes
from turnout.web.body import bad_request
from turnout.web.tensors import INPUT_DATATYPES, InputTensor, check_shape, datatype_of

__all__ = ["CONTENTS_FIELDS", "input_tensors", "set_output"]

_SUPPORTED = ", ".join(INPUT_DATATYPES)

# The InferTensorContents field that holds each input datatype turnout takes.
CONTENTS_FIELDS = {
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "BYTES": "bytes_contents",
}


def input_tensors(request: Any, limit: int) -> list[InputTensor]:
    """Return a ``ModelInferRequest``'s inputs, checked, with their values in arrays.

    ``limit`` is the most inputs the request may hold (the model's feature
    count, when known: one tensor per feature at most).
    """
    inputs = request.inputs
    raw = request.raw_input_contents
    if not inputs:
        raise bad_request("inputs must hold at least one tensor", "inputs")
    if len(inputs) > limit:
        raise bad_request(
            f"inputs holds {len(inputs)} tensors; this model takes at most {limit}", "inputs"
        )
    if raw and len(raw) != len(inputs):
        raise bad_request(
            f"raw_input_contents has {len(raw)} entries for {len(inputs)} inputs: send one per"
            " input, in the order of inputs",
            "raw_input_contents",
        )
    return [
        _input_tensor(tensor, f"inputs[{i}]", raw[i] if raw else None)
        for i, tensor in enumerate(inputs)
    ]


def _input_tensor(tensor: Any, where: str, raw: bytes | None) -> InputTensor:
    if not tensor.name:
        raise bad_request(f"{where}.name must not be empty", f"{where}.name")
    datatype = tensor.datatype
    if datatype not in INPUT_DATATYPES:
        shown = datatype[:20] or "(none)"
        raise bad_request(
            f"{where}.datatype {shown!r} is not supported; use one of {_SUPPORTED}",
            f"{where}.datatype",
        )
    shape = check_shape(list(tensor.shape), f"{where}.shape")
    dtype = INPUT_DATATYPES[datatype]
    if raw is not None:
        if tensor.HasField("contents"):
            raise bad_request(
                f"{where} has contents, and the request raw_input_contents: send one or the other",
                f"{where}.contents",
            )
        array = tensor_from_bytes(raw, dtype, datatype, shape, where, sized_by=f"raw_{where}")
    else:
        array = _typed_contents(tensor, datatype, dtype, shape, where)
    # NaN is the model's to take or refuse (allow_nan): its schema checks it, as over HTTP.
    return InputTensor(tensor.name, shape, datatype, [], where, array)


def _typed_contents(
    tensor: Any, datatype: str, dtype: np.dtype[Any], shape: tuple[int, ...], where: str
) -> np.ndarray[Any, Any]:
    field = CONTENTS_FIELDS[datatype]
    contents = tensor.contents
    for other in CONTENTS_FIELDS.values():
        if other != field and len(getattr(contents, other)):
            raise bad_request(
                f"{where} is {datatype}, so its values go in contents.{field}, not {other}",
                f"{where}.contents.{other}",
            )
    values = getattr(contents, field)
    expected = math.prod(shape)
    if len(values) != expected:
        raise bad_request(
            f"{where}: shape {list(shape)} holds {expected} values, but contents.{field}"
            f" has {len(values)}",
            f"{where}.contents.{field}",
        )
    if datatype == "BYTES":
        return _texts(values, f"{where}.contents.{field}").reshape(shape)
    return np.fromiter(values, dtype=dtype, count=expected).reshape(shape)


def _texts(values: Any, where: str) -> np.ndarray[Any, Any]:
    """``bytes_contents`` as the strings a string column takes."""
    try:
        return np.array([value.decode() for value in values], dtype=object)
    except UnicodeDecodeError:
        raise bad_request(f"{where} holds an element that is not UTF-8 text", where) from None


def set_output(response: Any, name: str, array: np.ndarray[Any, Any]) -> None:
    """Append ``array`` to a ``ModelInferResponse`` as output ``name``, its data raw."""
    output = response.outputs.add()
    output.name = name
    output.datatype = datatype_of(array.dtype)
    output.shape.extend(array.shape)
    response.raw_output_contents.append(tensor_to_bytes(array))
