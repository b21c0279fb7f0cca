"""Strict JSON in, strict JSON out: no NaN or Infinity either way, numpy arrays as lists."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

__all__ = ["JSONError", "array_to_json", "dumps", "loads"]


class JSONError(ValueError):
    """Raised when a request body is not valid JSON; the message says where and why."""


def _reject_constant(name: str) -> float:
    raise JSONError(f"{name} is not valid JSON: send numbers only")


def loads(body: bytes) -> Any:
    """Parse a request body as UTF-8 JSON, refusing NaN, Infinity and absurd nesting."""
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
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def array_to_json(array: np.ndarray[Any, Any], *, flat: bool = True) -> list[Any]:
    """Return ``array`` as JSON lists, flattened in row-major order unless ``flat`` is False.

    NaN and infinities become null; strings and bytes become strings.
    """
    values = array.reshape(-1) if flat else array
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
