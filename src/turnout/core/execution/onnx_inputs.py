"""ONNX models that take one input per feature, served through one merged input.

skl2onnx converts a pipeline trained on a DataFrame with one ``[N, 1]``
input per column when asked to. turnout encodes every request into one
2-D array, so such a model gets a single ``[N, k]`` input in front of its
graph, split back into the original columns by Gather nodes; the original
input names become its feature names.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["servable_onnx"]


def servable_onnx(onnx_file: bytes) -> tuple[bytes, tuple[str, ...] | None]:
    """Return ONNX bytes with one 2-D input, and the feature names when there were several.

    A model with one ``[N, 1]`` numeric input per feature (as skl2onnx
    converts a DataFrame pipeline) is served through one ``[N, k]`` input,
    split back into the original columns by Gather nodes in front of the
    graph; its features are the original input names, in order. Anything
    else is returned unchanged (deploying it says what is wrong, if anything).
    """
    import onnx

    try:
        proto = onnx.load_model_from_string(onnx_file)
    except Exception:  # not ONNX: deploying it reports that properly
        return onnx_file, None
    columns = _feature_inputs(proto)
    if columns is None:
        return onnx_file, None
    _merge_inputs(proto, columns)
    return proto.SerializeToString(), tuple(column.name for column in columns)


_NUMERIC_TYPES = (1, 6, 7, 11)  # FLOAT, INT32, INT64, DOUBLE: what InputSchema encodes


def _feature_inputs(proto: Any) -> list[Any] | None:
    initializers = {init.name for init in proto.graph.initializer}
    inputs = [value for value in proto.graph.input if value.name not in initializers]
    if len(inputs) < 2:
        return None
    for value in inputs:
        tensor = value.type.tensor_type
        dims = list(tensor.shape.dim)
        if tensor.elem_type not in _NUMERIC_TYPES or len(dims) != 2 or dims[1].dim_value != 1:
            return None
    return inputs


def _merge_inputs(proto: Any, columns: list[Any]) -> None:
    """Replace ``columns`` (the graph's [N, 1] inputs) by one [N, k] input, in place."""
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    taken = _graph_names(graph)
    types = {column.type.tensor_type.elem_type for column in columns}
    # Mixed column types meet in double, which holds every float32 and int32 exactly.
    elem_type = types.pop() if len(types) == 1 else TensorProto.DOUBLE
    merged = _fresh("input", taken)
    nodes = []
    for index, column in enumerate(columns):
        indices = _fresh(f"{merged}_column_{index}", taken)
        column_index = np.array([index], dtype=np.int64)
        graph.initializer.append(numpy_helper.from_array(column_index, indices))
        target = column.type.tensor_type.elem_type
        if target == elem_type:
            nodes.append(helper.make_node("Gather", [merged, indices], [column.name], axis=1))
            continue
        gathered = _fresh(f"{column.name}_gathered", taken)
        nodes.append(helper.make_node("Gather", [merged, indices], [gathered], axis=1))
        nodes.append(helper.make_node("Cast", [gathered], [column.name], to=target))
    for column in columns:
        graph.input.remove(column)
    graph.input.insert(0, helper.make_tensor_value_info(merged, elem_type, [None, len(columns)]))
    existing = list(graph.node)
    del graph.node[:]
    graph.node.extend([*nodes, *existing])


def _graph_names(graph: Any) -> set[str]:
    names = {value.name for value in (*graph.input, *graph.output, *graph.value_info)}
    names.update(init.name for init in graph.initializer)
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
    return names


def _fresh(name: str, taken: set[str]) -> str:
    candidate, n = name, 0
    while candidate in taken:
        n += 1
        candidate = f"{name}_{n}"
    taken.add(candidate)
    return candidate
