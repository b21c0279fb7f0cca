"""Turning a V2 request's input tensors into the rows :meth:`ModelServer.infer` takes.

Two layouts are accepted. One 2-D tensor of shape ``[rows, features]``, in
the model's feature order (its name is not checked: clients name it
differently). Or one tensor per feature, named after it and shaped
``[rows]`` or ``[rows, 1]``, in any order: these become rows keyed by
feature name, so whichever version the routing picks reads each value into
its own feature, whatever its feature order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from turnout.core.registry import Deployment
from turnout.web.body import bad_request
from turnout.web.tensors import InputTensor, decode

__all__ = ["rows_from_inputs"]


def rows_from_inputs(tensors: Sequence[InputTensor], deployment: Deployment | None) -> object:
    """Return the rows the tensors hold: a 2-D array, or a list of dicts keyed by feature.

    ``deployment`` (the pinned or active version, if any) is used only to
    tell the layouts apart and to word errors; the serving version's own
    schema checks the rows again.
    """
    features = None if deployment is None else deployment.schema.feature_names
    if _is_single_tensor(tensors, features):
        return decode(tensors[0])
    if deployment is not None and features is None:
        n = deployment.schema.n_features
        raise bad_request(
            f"this model has no feature names, so it cannot take one tensor per feature:"
            f" send one 2-D tensor of shape [rows, {n}]",
            "inputs",
            code="invalid_input",
        )
    return _rows_by_feature(tensors, features)


def _is_single_tensor(tensors: Sequence[InputTensor], features: Sequence[str] | None) -> bool:
    if len(tensors) != 1:
        return False
    tensor = tensors[0]
    if len(tensor.shape) != 2:
        return False
    # A [rows, 1] tensor named after the only feature is that feature's column: the same rows.
    return not (tensor.shape[1] == 1 and features is not None and tensor.name in features)


def _rows_by_feature(
    tensors: Sequence[InputTensor], features: Sequence[str] | None
) -> list[dict[str, Any]]:
    known = None if features is None else set(features)
    names: list[str] = []
    columns: list[list[Any]] = []
    seen: dict[str, str] = {}
    for tensor in tensors:
        where = f"{tensor.where}.name"
        if tensor.name in seen:
            raise bad_request(f"{where}: feature {tensor.name!r} is sent twice", where)
        seen[tensor.name] = tensor.where
        if known is not None and tensor.name not in known:
            raise bad_request(_unknown_feature(tensor, features), where, code="invalid_input")
        if len(tensor.shape) == 2 and tensor.shape[1] != 1:
            raise bad_request(
                f"{tensor.where}.shape must be [rows] or [rows, 1] for one feature's values,"
                f" not {list(tensor.shape)}",
                f"{tensor.where}.shape",
            )
        column = decode(tensor).reshape(-1)
        if columns and len(column) != len(columns[0]):
            raise bad_request(
                f"{tensor.where} has {len(column)} rows, but {tensors[0].where} has"
                f" {len(columns[0])}: every feature needs one value per row",
                f"{tensor.where}.shape",
            )
        names.append(tensor.name)
        columns.append(_python_values(column))
    if features is not None:
        for feature in features:
            if feature not in seen:
                raise bad_request(
                    f"feature {feature!r} is missing: send one tensor per feature"
                    f" ({len(features)} in all)",
                    "inputs",
                    code="invalid_input",
                )
    return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]


def _python_values(column: np.ndarray[Any, Any]) -> list[Any]:
    values: list[Any] = column.tolist()
    return values


def _unknown_feature(tensor: InputTensor, features: Sequence[str] | None) -> str:
    assert features is not None
    shown = ", ".join(repr(name) for name in features[:10])
    more = f", ... ({len(features)} in all)" if len(features) > 10 else ""
    return (
        f"{tensor.where}: {tensor.name[:60]!r} is not a feature of this model; send one"
        f" tensor per feature (features: {shown}{more}), or one 2-D tensor of shape"
        f" [rows, {len(features)}]"
    )
