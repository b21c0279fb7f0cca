"""Reading a V2 inference request's fields: a typed decoder for the common case, and the reference.

The reference reader walks the parsed JSON document field by field and
words every error (:func:`read_request`). The typed decoder
(:func:`decode_request`) hands the body to msgspec, whose compiled decoder
parses and type-checks a request of the common shape (flat numeric data, no
requested outputs, no binary data) in one pass, with no Python walking the
dicts and no safety scan of the body first: it never recurses past its
schema, and keeps an integer beyond 64 bits exact rather than reading it
as a float (what the scan in :mod:`turnout.web.jsonio` guards orjson
against). Anything else, valid or not, it hands back to the reference, so
that every request is accepted or refused, and every error worded, exactly
as the reference does; ``tests/web/test_v2_request.py`` checks that on
random bodies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import web

from turnout.web.binary import BinaryOutputs, binary_chunks, binary_outputs, read_infer_body
from turnout.web.body import bad_request, get_list, get_string, parse_json, require_object
from turnout.web.params import CallOptions, call_options
from turnout.web.tensors import INPUT_DATATYPES, InputTensor, parse_input

__all__ = ["InferRequest", "decode_request", "read_infer_request", "read_request"]


@dataclass(frozen=True)
class InferRequest:
    """A checked V2 inference request: its id, call options, inputs and the outputs it wants.

    ``requested`` is None when the request names no outputs (every default one).
    """

    id: str | None
    options: CallOptions
    tensors: list[InputTensor]
    requested: list[str] | None
    binary: BinaryOutputs


class _Input(msgspec.Struct):
    name: str
    shape: list[int]
    datatype: str
    # int | float keeps each number as JSON wrote it, as orjson and json do,
    # so numpy reads the same Python values whichever decoder ran.
    data: list[int | float]
    parameters: dict[str, Any] | None = None


class _Request(msgspec.Struct):
    inputs: list[_Input]
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[Any] | None = None


_DECODER = msgspec.json.Decoder(_Request)
_NOT_TYPED = (msgspec.DecodeError, msgspec.ValidationError, RecursionError)
# What a request without parameters asks for, made once.
_NO_OPTIONS = CallOptions()
_NO_BINARY = BinaryOutputs()


async def read_infer_request(request: web.Request, limit: int) -> InferRequest:
    """Read and check an inference request, JSON or binary; ``limit`` bounds its input count."""
    header, data = await read_infer_body(request)
    if header is None:
        return decode_request(data, limit)
    return read_request(header, data, limit)


def decode_request(body: bytes, limit: int) -> InferRequest:
    """Return the JSON inference request in ``body``, or raise the reference's 400.

    ``limit`` is the most input tensors the request may hold.
    """
    try:
        typed = _DECODER.decode(body)
    except _NOT_TYPED:
        typed = None
    if typed is not None:
        request = _from_typed(typed, limit)
        if request is not None:
            return request
    return read_request(require_object(parse_json(body), None), None, limit)


def _from_typed(typed: _Request, limit: int) -> InferRequest | None:
    """The request, if it is of the common shape and valid; None for the reference to read."""
    inputs = typed.inputs
    if not 1 <= len(inputs) <= max(limit, 1) or typed.outputs:
        return None
    tensors = []
    for i, value in enumerate(inputs):
        shape = value.shape
        if (
            value.datatype not in INPUT_DATATYPES
            or value.datatype == "BYTES"  # strings: the typed decoder holds numbers only
            or not 1 <= len(shape) <= 2
            or min(shape) < 0
            or (value.parameters is not None and "binary_data_size" in value.parameters)
        ):
            return None
        tensors.append(
            InputTensor(value.name, tuple(shape), value.datatype, value.data, f"inputs[{i}]")
        )
    parameters = typed.parameters
    if parameters is None:
        return InferRequest(typed.id, _NO_OPTIONS, tensors, None, _NO_BINARY)
    envelope: Mapping[str, Any] = {"parameters": parameters}
    return InferRequest(typed.id, call_options(envelope), tensors, None, binary_outputs(envelope))


def read_request(body: dict[str, Any], blob: bytes | None, limit: int) -> InferRequest:
    """Read a parsed inference request field by field; ``blob`` is its binary part, if any.

    Every field is checked, and a 400 names the first one at fault.
    """
    request_id = get_string(body, "id", "id", required=False)
    options = call_options(body)
    tensors = _inputs(body, blob, limit)
    return InferRequest(
        id=request_id,
        options=options,
        tensors=tensors,
        requested=_requested_outputs(body),
        binary=binary_outputs(body),
    )


def _inputs(body: dict[str, Any], blob: bytes | None, limit: int) -> list[InputTensor]:
    inputs = get_list(body, "inputs", "inputs")
    assert inputs is not None
    if not inputs:
        raise bad_request("inputs is empty: send at least one input tensor", "inputs")
    if len(inputs) > max(limit, 1):
        # Checked before any is parsed: 100,000 tiny tensors would hold the loop a second.
        raise bad_request(
            f"inputs has {len(inputs)} tensors; this model takes one 2-D tensor, or one"
            f" per feature ({limit})",
            "inputs",
        )
    chunks = binary_chunks(inputs, blob)
    return [
        parse_input(value, f"inputs[{i}]", chunk)
        for i, (value, chunk) in enumerate(zip(inputs, chunks, strict=True))
    ]


def _requested_outputs(body: dict[str, Any]) -> list[str] | None:
    outputs = get_list(body, "outputs", "outputs", required=False)
    if not outputs:
        return None  # as if absent: every default output
    names: list[str] = []
    for i, value in enumerate(outputs):
        obj = require_object(value, f"outputs[{i}]")
        name = get_string(obj, "name", f"outputs[{i}].name")
        assert name is not None
        if name not in names:
            names.append(name)
    return names
