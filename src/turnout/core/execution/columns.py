"""Models with one typed input per column: which columns take strings, and which categories.

A scikit-learn Pipeline whose ColumnTransformer one-hot encodes string
columns converts, with skl2onnx, to a graph with one ``[N, 1]`` input per
column: a string tensor for each categorical column, a number tensor for
each other one. Such a model is served with a record per row (a numpy
structured array with one field per column), which the batcher
concatenates and slices like any other array; the runtime hands each
field to its own graph input.

Unknown categories follow the encoder's own ``handle_unknown``: a graph's
``ai.onnx.ml`` OneHotEncoder says ``zeros=0`` when the estimator refused
them (``handle_unknown="error"``), and then its ``cats_strings`` are the
only values the column takes. The schema refuses any other value before
the request is queued, so a client's unknown category is a 400 naming the
row and column, never a model failure that trips the breaker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from turnout.core.errors import ConversionError, InvalidConfigError

__all__ = [
    "ONNX_NUMBER_TYPES",
    "InputColumn",
    "estimator_columns",
    "graph_columns",
    "parts_of",
    "record_dtype",
    "string_columns",
    "text_vectorizers",
]

_STRING = np.dtype(object)
# The numeric ONNX element types turnout encodes requests into, by TensorProto number.
ONNX_NUMBER_TYPES = {1: np.float32, 11: np.float64, 7: np.int64, 6: np.int32}
_STRING_TYPE = 8  # TensorProto.STRING


@dataclass(frozen=True)
class InputColumn:
    """One column a model takes: its name, element type, and the categories it is limited to.

    ``dtype`` is a numeric dtype, or ``object`` for a string column.
    ``categories`` is None when any value of the type is taken (numbers, or
    strings whose unknown categories the encoder ignores). ``ascii_only``
    marks text an ONNX graph tokenizes: ONNX Runtime's Tokenizer splits
    only ASCII text as scikit-learn does, so other text is refused rather
    than answered wrongly.
    """

    name: str
    dtype: np.dtype[Any]
    categories: frozenset[str] | None = None
    ascii_only: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", np.dtype(self.dtype))
        if not isinstance(self.name, str) or not self.name:
            raise InvalidConfigError("a column's name must be a non-empty string")
        if self.dtype != _STRING and self.dtype.kind not in "iuf":
            raise InvalidConfigError(f"column {self.name!r}: unsupported type {self.dtype}")
        if (self.categories is not None or self.ascii_only) and not self.is_string:
            raise InvalidConfigError(f"column {self.name!r}: only string columns have categories")

    @property
    def is_string(self) -> bool:
        """True for a column of strings (V2 datatype BYTES)."""
        return self.dtype == _STRING

    def example(self) -> Any:
        """Return a value the column takes: a known category, the empty string, or zero."""
        if not self.is_string:
            return self.dtype.type(0)
        return min(self.categories) if self.categories else ""


def record_dtype(columns: Sequence[InputColumn]) -> np.dtype[Any]:
    """Return the structured dtype of one row: a field per column, in order."""
    return np.dtype([(column.name, column.dtype) for column in columns])


def graph_columns(proto: Any) -> tuple[InputColumn, ...] | None:
    """Return the columns of a graph with one ``[N, 1]`` input per column and a string among them.

    None for any other graph (one 2-D input, or numbers only): those are
    served through one 2-D array, as before.
    """
    initializers = {init.name for init in proto.graph.initializer}
    inputs = [value for value in proto.graph.input if value.name not in initializers]
    types = [value.type.tensor_type.elem_type for value in inputs]
    if len(inputs) < 2 or _STRING_TYPE not in types:
        return None
    limits = _strict_categories(proto)
    texts = _tokenized_inputs(proto)
    columns = []
    for value, elem_type in zip(inputs, types, strict=True):
        dims = list(value.type.tensor_type.shape.dim)
        if len(dims) != 2 or dims[1].dim_value != 1:
            raise ConversionError(
                f"input {value.name!r} is not [rows, 1]: a model with string inputs is served"
                " with one [rows, 1] input per column"
            )
        if elem_type == _STRING_TYPE:
            text = value.name in texts
            columns.append(InputColumn(value.name, _STRING, limits.get(value.name), text))
        elif elem_type in ONNX_NUMBER_TYPES:
            columns.append(InputColumn(value.name, np.dtype(ONNX_NUMBER_TYPES[elem_type])))
        else:
            raise ConversionError(
                f"input {value.name!r} has an element type turnout does not encode"
                " (string, float, double, int32 and int64 are supported)"
            )
    return tuple(columns)


def _tokenized_inputs(proto: Any) -> set[str]:
    """The graph inputs from which a Tokenizer node reads text, through any nodes between."""
    producers = {output: node for node in proto.graph.node for output in node.output}
    found: set[str] = set()
    graph_inputs = {value.name for value in proto.graph.input}
    for node in proto.graph.node:
        if node.op_type != "Tokenizer":
            continue
        pending, seen = list(node.input), set()
        while pending:
            name = pending.pop()
            if name in seen:
                continue
            seen.add(name)
            if name in graph_inputs:
                found.add(name)
            elif name in producers:
                pending.extend(producers[name].input)
    return found


def _strict_categories(proto: Any) -> dict[str, frozenset[str]]:
    """The categories of each input read by a OneHotEncoder that refuses unknown ones."""
    limits: dict[str, frozenset[str]] = {}
    for node in proto.graph.node:
        if node.op_type != "OneHotEncoder" or node.domain != "ai.onnx.ml":
            continue
        attributes = {attribute.name: attribute for attribute in node.attribute}
        zeros = attributes["zeros"].i if "zeros" in attributes else 1
        strings = attributes.get("cats_strings")
        if zeros or strings is None:
            continue
        categories = frozenset(value.decode() for value in strings.strings)
        name = node.input[0]
        # Read by two strict encoders, a value must be known to both.
        limits[name] = limits[name] & categories if name in limits else categories
    return limits


def string_columns(estimator: Any, n_features: int) -> frozenset[int]:
    """Return the positions of the columns a fitted estimator reads as strings.

    These are the columns a ColumnTransformer routes to an encoder fitted on
    strings (its ``categories_``, or a string imputer's ``statistics_``,
    first in a Pipeline) or to a text vectorizer, or every column when such
    a transformer comes first.
    """
    first = _first_step(estimator)
    if _takes_strings(first):
        return frozenset(range(n_features))
    indices = getattr(first, "_transformer_to_input_indices", None)
    if not hasattr(first, "transformers_") or not isinstance(indices, dict):
        return frozenset()
    found: set[int] = set()
    for name, transformer, _ in first.transformers_:
        if _takes_strings(transformer):
            found.update(int(i) for i in indices.get(name, ()))
    return frozenset(found)


def estimator_columns(estimator: Any, names: Sequence[str]) -> tuple[InputColumn, ...] | None:
    """Return the columns of a fitted estimator that reads strings; None if it reads numbers only.

    What the python runtime serves such an estimator with: the same columns
    a converted graph would take, strings as objects and numbers as float64,
    and the categories of each encoder that refuses unknown ones
    (``handle_unknown="error"``), so that a client's unknown category is
    refused before the request is queued, as on ONNX.
    """
    strings = string_columns(estimator, len(names))
    if not strings:
        return None
    limits = _estimator_categories(estimator, names)
    return tuple(
        InputColumn(name, _STRING, limits.get(name))
        if j in strings
        else InputColumn(name, np.dtype(np.float64))
        for j, name in enumerate(names)
    )


def _estimator_categories(estimator: Any, names: Sequence[str]) -> dict[str, frozenset[str]]:
    """The categories of each column read by an encoder that refuses unknown ones."""
    first = _first_step(estimator)
    indices = getattr(first, "_transformer_to_input_indices", None)
    if _takes_strings(first) or not isinstance(indices, dict):
        parts = [(first, range(len(names)))]
    else:
        parts = [(part, indices.get(name, ())) for name, part, _ in first.transformers_]
    limits: dict[str, frozenset[str]] = {}
    for part, positions in parts:
        encoder = _encoder_in(part)
        if encoder is None or getattr(encoder, "handle_unknown", None) != "error":
            continue
        for position, known in zip(positions, encoder.categories_, strict=False):
            name = names[int(position)]
            categories = frozenset(value for value in known if isinstance(value, str))
            limits[name] = limits[name] & categories if name in limits else categories
    return limits


def _encoder_in(transformer: Any) -> Any:
    """The first step with categories in ``transformer`` (a Pipeline's, or itself), or None."""
    steps = [step for _, step in getattr(transformer, "steps", ())] or [transformer]
    return next((step for step in steps if hasattr(step, "categories_")), None)


def text_vectorizers(estimator: Any) -> list[Any]:
    """Return every text vectorizer in a fitted estimator, searched through its parts."""
    if hasattr(estimator, "build_analyzer"):
        return [estimator]
    return [found for part in parts_of(estimator) for found in text_vectorizers(part)]


def parts_of(estimator: Any) -> list[Any]:
    """Return the estimators a Pipeline, ColumnTransformer or FeatureUnion is made of (or [])."""
    parts = [step for _, step in getattr(estimator, "steps", ())]
    parts += [part for _, part, _ in getattr(estimator, "transformers_", ())]
    parts += [part for _, part in getattr(estimator, "transformer_list", ())]
    return parts


def _first_step(estimator: Any) -> Any:
    while hasattr(estimator, "steps") and estimator.steps:
        estimator = estimator.steps[0][1]
    return estimator


def _takes_strings(transformer: Any) -> bool:
    transformer = _first_step(transformer)
    if hasattr(transformer, "build_analyzer"):
        return True  # a text vectorizer (CountVectorizer, TfidfVectorizer, HashingVectorizer)
    categories = getattr(transformer, "categories_", None)
    if categories is not None and any(np.asarray(kind).dtype.kind in "OUS" for kind in categories):
        return True
    statistics = getattr(transformer, "statistics_", None)
    return statistics is not None and np.asarray(statistics).dtype.kind in "OUS"
