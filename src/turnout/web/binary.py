"""The binary tensor data extension of the Open Inference Protocol: the byte-level work.

Specification: Triton's "Binary Tensor Data Extension",
triton-inference-server/server, ``docs/protocol/extension_binary_data.md``
(KServe publishes the same text as the V2 protocol's binary tensor data
extension).

A request with the header ``Inference-Header-Content-Length: N`` carries its
JSON inference request in the first N bytes of the body; the rest is the
binary data of the inputs that have ``"parameters": {"binary_data_size": k}``,
concatenated in input order, each little-endian, row-major, without padding.
Outputs are returned in binary when the request says so
(``parameters.binary_data_output`` for all of them, ``outputs[].parameters.binary_data``
for one): the response is then the JSON header followed by the outputs' bytes,
each output naming its ``binary_data_size``.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import web

from turnout.web.body import (
    bad_request,
    check_json_type,
    get_object,
    read_bytes,
    require_object,
    type_name,
)
from turnout.web.errors import RequestError
from turnout.web.jsonio import JSONError, dumps, loads

__all__ = [
    "BINARY_CONTENT_TYPE",
    "HEADER_LENGTH",
    "BinaryOutputs",
    "binary_chunks",
    "binary_outputs",
    "binary_response",
    "read_infer_body",
    "strings_from_bytes",
    "tensor_from_bytes",
    "tensor_to_bytes",
]

HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_CONTENT_TYPE = "application/octet-stream"

_DIGITS = re.compile(r"-?[0-9]+")


async def read_infer_body(request: web.Request) -> tuple[dict[str, Any] | None, bytes]:
    """Return an inference request's JSON header and binary part, or (None, its JSON body).

    With the ``Inference-Header-Content-Length`` header any content type is
    taken, as Triton does, and the header is parsed here; without it the body
    must be ``application/json``, and is returned unparsed.
    """
    value = request.headers.get(HEADER_LENGTH)
    if value is None:
        # aiohttp calls a request without Content-Type octet-stream: that one gets the 415.
        if request.content_type == BINARY_CONTENT_TYPE and "Content-Type" in request.headers:
            raise bad_request(
                f"an {BINARY_CONTENT_TYPE} inference request needs the {HEADER_LENGTH} header:"
                " the length in bytes of the JSON header at the start of the body",
                HEADER_LENGTH,
            )
        check_json_type(request)
        return None, await read_bytes(request)
    body = await read_bytes(request)
    length = _header_length(value, len(body))
    try:
        header = loads(body[:length])
    except JSONError as exc:
        raise RequestError(
            400, "malformed_json", f"the JSON header (the first {length} bytes): {exc}"
        ) from None
    if not isinstance(header, dict):
        raise bad_request(
            f"the JSON header (the first {length} bytes of the body) must be a JSON object,"
            f" not {type_name(header)}"
        )
    return header, body[length:]


def _header_length(value: str, body_size: int) -> int:
    text = value.strip()
    sign, digits = ("-", text[1:]) if text.startswith("-") else ("", text)
    digits = digits.lstrip("0") or "0"
    # No body is 21 digits of bytes long; and int() refuses text past 4300 digits
    # with a ValueError, which must not become a 500.
    if not _DIGITS.fullmatch(text) or len(digits) > 20:
        raise bad_request(
            f"{HEADER_LENGTH} must be a whole number of bytes, not {value[:40]!r}", HEADER_LENGTH
        )
    length = int(sign + digits)
    if length < 0:
        raise bad_request(f"{HEADER_LENGTH} must not be negative, not {length}", HEADER_LENGTH)
    if length > body_size:
        raise bad_request(
            f"{HEADER_LENGTH} is {length}, but the body has only {body_size} bytes",
            HEADER_LENGTH,
        )
    return length


def binary_chunks(inputs: Sequence[Any], blob: bytes | None) -> list[bytes | None]:
    """Split the binary part among the inputs: each one's bytes, or None for a JSON input."""
    chunks: list[bytes | None] = []
    offset = 0
    for i, value in enumerate(inputs):
        where = f"inputs[{i}].parameters.binary_data_size"
        size = _binary_data_size(value, f"inputs[{i}]")
        if size is None:
            chunks.append(None)
            continue
        if blob is None:
            raise bad_request(
                f"{where} is set, but the request has no {HEADER_LENGTH} header: send the JSON"
                " header's length in it and the binary data after the JSON",
                where,
            )
        if offset + size > len(blob):
            raise bad_request(
                f"{where} is {size}, but only {len(blob) - offset} bytes of binary data are left"
                " after the JSON header and the inputs before it",
                where,
            )
        chunks.append(blob[offset : offset + size])
        offset += size
    if blob is not None and offset != len(blob):
        raise bad_request(
            f"the body has {len(blob)} bytes after the JSON header, but the inputs'"
            f" binary_data_size add up to {offset}",
            "inputs",
        )
    return chunks


def _binary_data_size(value: object, where: str) -> int | None:
    if not isinstance(value, dict):
        return None  # parse_input says what is wrong with it
    parameters = get_object(value, "parameters", f"{where}.parameters")
    if parameters is None or parameters.get("binary_data_size") is None:
        return None
    size = parameters["binary_data_size"]
    where = f"{where}.parameters.binary_data_size"
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise bad_request(
            f"{where} must be a non-negative whole number of bytes, not {size!r:.40}", where
        )
    return size


def tensor_from_bytes(
    raw: bytes,
    dtype: np.dtype[Any],
    datatype: str,
    shape: tuple[int, ...],
    where: str,
    *,
    sized_by: str | None = None,
) -> np.ndarray[Any, Any]:
    """Read a little-endian, row-major tensor of ``shape`` from exactly ``len(raw)`` bytes.

    ``sized_by`` names the field that said how many bytes there are, for the
    error (by default the input's ``parameters.binary_data_size``).
    """
    if dtype.kind == "O":
        return strings_from_bytes(raw, shape, sized_by or f"{where}.parameters.binary_data_size")
    expected = math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        field = sized_by or f"{where}.parameters.binary_data_size"
        raise bad_request(
            f"{field} is {len(raw)} bytes, but a {datatype} tensor of shape"
            f" {list(shape)} takes {expected} bytes ({dtype.itemsize} per value)",
            field,
        )
    array = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype)
    return array.reshape(shape)


def strings_from_bytes(raw: bytes, shape: tuple[int, ...], field: str) -> np.ndarray[Any, Any]:
    """Read a BYTES tensor's elements: each a 4-byte little-endian length, then UTF-8 bytes."""
    count = math.prod(shape)
    values: list[str] = []
    offset = 0
    while offset < len(raw) and len(values) < count:
        if offset + 4 > len(raw):
            break
        (length,) = struct.unpack_from("<I", raw, offset)
        start = offset + 4
        if start + length > len(raw):
            break
        try:
            values.append(raw[start : start + length].decode())
        except UnicodeDecodeError:
            raise bad_request(
                f"{field}: element {len(values)} of the BYTES tensor is not UTF-8 text", field
            ) from None
        offset = start + length
    if len(values) != count or offset != len(raw):
        raise bad_request(
            f"{field}: {len(raw)} bytes do not hold {count} BYTES elements of shape"
            f" {list(shape)} (each a 4-byte little-endian length, then its bytes)",
            field,
        )
    return np.array(values, dtype=object).reshape(shape)


def tensor_to_bytes(array: np.ndarray[Any, Any]) -> bytes:
    """Return an output's binary data: little-endian row-major values, or BYTES elements."""
    if array.dtype.kind in "biuf":
        little = array.dtype.newbyteorder("<")
        return np.ascontiguousarray(array, dtype=little).tobytes()
    # BYTES: each element as a 4-byte little-endian length, then its UTF-8 bytes.
    parts = []
    for value in array.reshape(-1).tolist():
        data = value if isinstance(value, bytes) else str(value).encode()
        parts.append(struct.pack("<I", len(data)) + data)
    return b"".join(parts)


@dataclass(frozen=True)
class BinaryOutputs:
    """Which outputs a request wants in binary: a default, and per-output choices."""

    default: bool = False
    chosen: Mapping[str, bool] = field(default_factory=dict)

    def among(self, names: Sequence[str]) -> set[str]:
        """Return the names among ``names`` to send in binary."""
        return {name for name in names if self.chosen.get(name, self.default)}


def binary_outputs(body: Mapping[str, Any]) -> BinaryOutputs:
    """Read which outputs the request wants in binary (checked before the model runs).

    ``parameters.binary_data_output`` sets the default for every output;
    ``outputs[i].parameters.binary_data`` overrides it for that output.
    """
    default = _flag(body.get("parameters"), "binary_data_output", "parameters")
    chosen: dict[str, bool] = {}
    outputs = body.get("outputs")
    for i, value in enumerate(outputs if isinstance(outputs, list) else []):
        obj = require_object(value, f"outputs[{i}]")
        flag = _flag(obj.get("parameters"), "binary_data", f"outputs[{i}].parameters")
        if flag is not None and isinstance(obj.get("name"), str):
            chosen[obj["name"]] = flag
    return BinaryOutputs(bool(default), chosen)


def _flag(parameters: object, key: str, where: str) -> bool | None:
    if parameters is None:
        return None
    value = require_object(parameters, where).get(key)
    if value is not None and not isinstance(value, bool):
        raise bad_request(
            f"{where}.{key} must be true or false, not {type_name(value)}", f"{where}.{key}"
        )
    return value


def binary_response(
    header: dict[str, Any], arrays: Mapping[str, np.ndarray[Any, Any]], binary: set[str]
) -> web.Response:
    """Return ``header`` with the ``binary`` outputs' data moved after it, as raw bytes.

    ``header["outputs"]`` are the JSON outputs; each binary one loses its
    ``data`` and gains ``parameters.binary_data_size``.
    """
    blobs: list[bytes] = []
    for output in header["outputs"]:
        name = output["name"]
        if name in binary:
            data = tensor_to_bytes(arrays[name])
            del output["data"]
            output["parameters"] = {**output.get("parameters", {}), "binary_data_size": len(data)}
            blobs.append(data)
    head = dumps(header).encode()
    return web.Response(
        body=head + b"".join(blobs),
        content_type=BINARY_CONTENT_TYPE,
        headers={HEADER_LENGTH: str(len(head))},
    )
