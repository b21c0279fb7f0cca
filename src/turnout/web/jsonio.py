"""Strict JSON in, strict JSON out: no NaN or Infinity either way, numpy arrays as lists.

orjson does the work on the request path (parsing and serialising a
single-row request with it takes a fraction of what the standard library
takes, see benchmarks/README.md); the standard library stays as the
reference: whatever orjson refuses, or might read differently, goes through
``json`` and gets exactly the answer, or the error message, it always gave.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import orjson

__all__ = ["JSONError", "array_to_json", "dumps", "dumps_bytes", "loads"]

# orjson reads an integer beyond 64 bits as a float, where json keeps it exact
# (and a model's input check then names it). A run of 20 digits is the only
# way to write one; a float printed by any JSON encoder has at most 17 in a row.
# Mapping every digit to "0" and the rest to " " finds such a run at C speed
# (a regular expression took longer than parsing the whole body).
_DIGIT_RUNS = bytes(ord("0") if chr(i) in "0123456789" else ord(" ") for i in range(256))
_LONG_RUN = b"0" * 20
# Older orjson releases parse any depth, and a million nested lists would
# then overflow the stack of whatever walks them; the standard library stops
# at its recursion limit. Fewer brackets than this cannot nest deeper.
_MAX_BRACKETS = 512
_FEW = 16


class JSONError(ValueError):
    """Raised when a request body is not valid JSON; the message says where and why."""


def _reject_constant(name: str) -> float:
    raise JSONError(f"{name} is not valid JSON: send numbers only")


def loads(body: bytes) -> Any:
    """Parse a request body as UTF-8 JSON, refusing NaN, Infinity and absurd nesting."""
    shallow = body.count(b"[") + body.count(b"{") <= _MAX_BRACKETS
    if shallow and _LONG_RUN not in body.translate(_DIGIT_RUNS):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass  # the standard library words the error (or reads what orjson will not)
    return _loads_reference(body)


def _loads_reference(body: bytes) -> Any:
    """Parse with the standard library; its errors become JSONError with a clear message."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JSONError(f"the body is not valid UTF-8 (byte {exc.start})") from None
    if not text.strip():
        raise JSONError("the body is empty: send a JSON object")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except JSONError:
        raise
    except json.JSONDecodeError as exc:
        raise JSONError(
            f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise JSONError("the JSON is nested too deeply") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise JSONError(f"malformed JSON: {exc}") from None


def dumps(value: Any) -> str:
    """Serialize a response body compactly; NaN and Infinity must already be gone."""
    return dumps_bytes(value).decode()


def dumps_bytes(value: Any) -> bytes:
    """Serialize a response body compactly to UTF-8 bytes; NaN and Infinity must be gone."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        # What orjson cannot serialise (e.g. an int beyond 64 bits), json may.
        return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


def array_to_json(array: np.ndarray[Any, Any], *, flat: bool = True) -> list[Any]:
    """Return ``array`` as JSON lists, flattened in row-major order unless ``flat`` is False.

    NaN and infinities become null; strings and bytes become strings.
    """
    values = array.reshape(-1) if flat else array
    if values.ndim == 1 and values.dtype.kind == "f" and values.size <= _FEW:
        # For a few values (one row's answer) Python's own check beats two numpy calls.
        listed: list[Any] = values.tolist()
        if all(map(math.isfinite, listed)):
            return listed
    if values.dtype.kind == "f":
        finite = np.isfinite(values)
        if not finite.all():
            boxed = values.astype(np.float64).astype(object)
            boxed[~finite] = None
            values = boxed
    elif values.dtype.kind not in "biu":
        values = np.vectorize(_scalar, otypes=[object])(values) if values.size else values
    result: list[Any] = values.tolist()
    return result


def _scalar(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str | int | bool) or value is None:
        return value
    return str(value)
