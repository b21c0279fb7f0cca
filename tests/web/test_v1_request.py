"""The typed V1 predict decoder reads, and refuses, exactly what the reference reader does."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from turnout.web.body import parse_json, require_object
from turnout.web.errors import RequestError
from turnout.web.v1 import read_predict, read_predict_fields

numbers = st.one_of(st.floats(allow_nan=False), st.integers(-(2**70), 2**70))
values = st.one_of(numbers, st.booleans(), st.none(), st.text(max_size=2))
rows = st.one_of(
    st.lists(numbers, max_size=4),
    st.lists(values, max_size=4),
    st.dictionaries(st.sampled_from(["a", "b"]), numbers, max_size=2),
    numbers,
)
parameters = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {},
        optional={
            "key": st.one_of(st.text(max_size=2), st.integers()),
            "timeout": st.one_of(st.floats(), st.integers(-2, 3)),
        },
    ),
    st.lists(st.integers(), max_size=2),
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """A predict body: usually rows of numbers, sometimes anything else JSON allows."""
    body: dict[str, Any] = {"instances": draw(st.lists(rows, max_size=3))}
    if draw(st.booleans()):
        body["parameters"] = draw(parameters)
    if draw(st.integers(0, 9)) == 5:
        body["instances"] = draw(values)
    text = json.dumps(body)
    if draw(st.integers(0, 19)) == 7:
        text = text[: draw(st.integers(0, len(text)))]
    return text.encode()


def outcome(read: Any, body: bytes) -> tuple[str, Any]:
    try:
        instances, options = read(body)
    except RequestError as exc:
        return "refused", (exc.status, exc.code, exc.message, exc.field)
    return "accepted", (instances, options)


def reference(body: bytes) -> tuple[list[Any], Any]:
    return read_predict_fields(require_object(parse_json(body), None))


@settings(max_examples=500, deadline=None)
@given(bodies())
def test_the_typed_decoder_agrees_with_the_reference(body: bytes) -> None:
    assert outcome(read_predict, body) == outcome(reference, body)


def test_rows_of_numbers_keep_their_values() -> None:
    body = b'{"instances": [[1, 2.5, 123456789012345678901234]], "parameters": {"key": "k"}}'
    instances, options = read_predict(body)
    assert instances == [[1, 2.5, 123456789012345678901234]]
    assert options.key == "k"
