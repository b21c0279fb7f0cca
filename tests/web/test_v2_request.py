"""The typed V2 request decoder decides, reads and words errors exactly as the reference reader."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from turnout.web import v2_request
from turnout.web.body import parse_json, require_object
from turnout.web.errors import RequestError
from turnout.web.tensors import decode
from turnout.web.v2_request import InferRequest, decode_request, read_request

LIMIT = 20


def reference(body: bytes, limit: int = LIMIT) -> InferRequest:
    """What the field-by-field reader makes of ``body``."""
    return read_request(require_object(parse_json(body), None), None, limit)


def outcome(read: Any, body: bytes) -> tuple[str, Any]:
    """Run ``read`` on ``body``: the request and its decoded arrays, or the error it gave."""
    try:
        request = read(body)
    except RequestError as exc:
        return "refused", (exc.status, exc.code, exc.message, exc.field)
    arrays = []
    for tensor in request.tensors:
        try:
            arrays.append(decode(tensor))
        except RequestError as exc:
            arrays.append((exc.status, exc.code, exc.message, exc.field))
    return "accepted", (request, arrays)


def same(left: tuple[str, Any], right: tuple[str, Any]) -> None:
    assert left[0] == right[0]
    if left[0] == "refused":
        assert left[1] == right[1]
        return
    (request, arrays), (expected, expected_arrays) = left[1], right[1]
    assert request == expected
    for got, want in zip(arrays, expected_arrays, strict=True):
        if isinstance(want, np.ndarray):
            assert isinstance(got, np.ndarray)
            assert got.dtype == want.dtype
            assert got.shape == want.shape
            np.testing.assert_array_equal(got, want)
        else:
            assert got == want


numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(min_value=-1e6, max_value=1e6),
)
odd_values = st.one_of(st.booleans(), st.none(), st.text(max_size=3), st.just([1.0, 2.0]))
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=4))
anything = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)


def rarely(draw: st.DrawFn, odds: int = 6) -> bool:
    """True once in ``odds`` draws: most bodies stay valid, so both readers accept them."""
    # Not 0 nor the top: hypothesis draws the ends of a range far more often.
    return draw(st.integers(0, odds - 1)) == odds // 2


@st.composite
def tensors(draw: st.DrawFn) -> dict[str, Any]:
    """One input tensor, usually well formed, sometimes broken in one or more fields."""
    rows = draw(st.integers(0, 3))
    width = draw(st.integers(1, 4))
    values = draw(st.lists(numbers, min_size=rows * width, max_size=rows * width))
    if rarely(draw) and values:
        values[draw(st.integers(0, len(values) - 1))] = draw(odd_values)
    shape: Any = [rows, width]
    if rarely(draw):
        shape = draw(st.sampled_from([[rows * width], [rows, width, 1], [-1, width], []]))
    if rarely(draw, 10):
        shape = draw(anything)
    data: Any = values
    if rarely(draw) and width:
        data = [values[i : i + width] for i in range(0, len(values), width)]
    tensor: dict[str, Any] = {
        "name": draw(st.sampled_from(["input", "f0", "x", ""])),
        "shape": shape,
        "datatype": draw(st.sampled_from(["FP32", "FP64", "INT32", "INT64", "BYTES", "fp32"])),
        "data": data,
    }
    if rarely(draw, 10):
        tensor["datatype"] = draw(st.sampled_from(["BYTES", "fp32", "UINT8"]))
    if rarely(draw):
        tensor["parameters"] = draw(
            st.one_of(
                anything,
                st.fixed_dictionaries({"binary_data_size": st.integers(-1, 8)}),
                st.just({"content_type": "np"}),
            )
        )
    broken = st.sets(st.sampled_from(["name", "shape", "datatype", "data"]), max_size=1)
    for key in draw(broken) if rarely(draw) else ():
        if draw(st.booleans()):
            del tensor[key]
        else:
            tensor[key] = draw(anything)
    return tensor


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """A V2 inference request body: mostly valid JSON of the protocol's shape, some not."""
    request: dict[str, Any] = {"inputs": draw(st.lists(tensors(), min_size=1, max_size=3))}
    if rarely(draw, 20):
        request["inputs"] = []
    if draw(st.booleans()):
        request["id"] = draw(st.one_of(st.text(max_size=5), st.none()))
        if rarely(draw):
            request["id"] = draw(anything)
    if rarely(draw, 3):
        request["parameters"] = draw(
            st.one_of(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "key": st.one_of(st.text(max_size=3), st.integers()),
                        "timeout": st.one_of(
                            st.floats(), st.integers(-5, 2**70), st.text(max_size=2)
                        ),
                        "binary_data_output": st.one_of(st.booleans(), st.integers(0, 1)),
                    },
                ),
                anything if rarely(draw) else st.nothing(),
            )
        )
    if rarely(draw, 4):
        request["outputs"] = draw(
            st.one_of(
                st.lists(
                    st.fixed_dictionaries(
                        {"name": st.sampled_from(["label", "probabilities", "x"])},
                        optional={"parameters": st.just({"binary_data": True})},
                    ),
                    max_size=2,
                ),
                anything if rarely(draw) else st.nothing(),
            )
        )
    if rarely(draw, 20):
        request["inputs"] = draw(anything)
    if rarely(draw, 20):
        del request["inputs"]
    text = json.dumps(request)
    choice = draw(st.integers(0, 39))
    if choice == 10:
        text = text.replace("1", "NaN", 1)
    elif choice == 11:
        text = text[: draw(st.integers(0, len(text)))]
    elif choice == 12:
        text = json.dumps(draw(anything))
    elif choice == 13:
        text = text.replace("0", "1e400", 1)
    return text.encode()


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies())
def test_the_typed_decoder_agrees_with_the_reference(body: bytes) -> None:
    same(
        outcome(lambda b: decode_request(b, LIMIT), body),
        outcome(reference, body),
    )


def test_the_typed_path_reads_most_generated_bodies() -> None:
    typed = 0
    examples = 0

    @settings(max_examples=200, deadline=None, database=None)
    @given(bodies())
    def count(body: bytes) -> None:
        nonlocal typed, examples
        examples += 1
        try:
            request = v2_request._from_typed(v2_request._DECODER.decode(body), LIMIT)
        except (*v2_request._NOT_TYPED, RequestError):
            return
        typed += request is not None

    count()
    assert typed >= examples // 10


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=40))
def test_it_agrees_on_arbitrary_bytes(body: bytes) -> None:
    same(
        outcome(lambda b: decode_request(b, LIMIT), body),
        outcome(reference, body),
    )


@pytest.mark.parametrize(
    "body",
    [
        b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32",'
        b' "data": [123456789012345678901234]}]}',
        b'{"inputs": [{"name": "x", "shape": [1], "datatype": "INT64",'
        b' "data": [9007199254740993]}]}',
        b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],'
        b' "inputs": [{"name": "y", "shape": [1], "datatype": "FP64", "data": [2]}]}',
        b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],'
        b' "parameters": {"x": ' + b"[" * 3000 + b"]" * 3000 + b"}}",
        b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1e39, 1]}]}',
        b"[" * 100_000,
    ],
    ids=[
        "int-beyond-64-bits",
        "int64-exact",
        "duplicate-key",
        "deep-parameters",
        "fp32-range",
        "deep-list",
    ],
)
def test_it_agrees_where_orjson_needed_guarding(body: bytes) -> None:
    same(outcome(lambda b: decode_request(b, LIMIT), body), outcome(reference, body))


def test_a_common_request_is_read_by_the_typed_decoder() -> None:
    body = json.dumps(
        {
            "id": "r1",
            "inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2.5, 3]}],
            "parameters": {"key": "user-7", "timeout": 0.5},
        }
    ).encode()

    request = decode_request(body, LIMIT)

    assert request.id == "r1"
    assert request.options.key == "user-7"
    assert request.options.timeout == 0.5
    assert request.tensors[0].data == [1, 2.5, 3]
    np.testing.assert_array_equal(decode(request.tensors[0]), [[1.0, 2.5, 3.0]])
