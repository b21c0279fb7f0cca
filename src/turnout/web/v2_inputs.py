"""Turning a V2 request's input tensors into the rows :meth:`ModelServer.infer` takes.

Two layouts are accepted, and input names are checked as Triton checks
them: a name the model does not take is refused, not guessed at.

- One 2-D tensor of shape ``[rows, features]``, in the model's feature order,
  named as the model's metadata names its input (``inputs[0].name`` of
  ``GET /v2/models/{model}``; ``input`` for a model turnout converted).
- One tensor per feature, named after it and shaped ``[rows]`` or
  ``[rows, 1]``, in any order: these become rows keyed by feature name, so
  whichever version the routing picks reads each value into its own
  feature, whatever its feature order. A model with string columns takes
  only this layout: a BYTES tensor per string column, a numeric one per
  other column.

A name sent twice is refused either way. The names are those of the pinned
version, else of the active one; a model with no active version (its
routing picks among several) cannot say, and the names are not checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from turnout.core.deployments.registry import Deployment
from turnout.web.body import bad_request
from turnout.web.errors import RequestError
from turnout.web.tensors import InputTensor, decode

__all__ = ["rows_from_inputs"]


def rows_from_inputs(tensors: Sequence[InputTensor], deployment: Deployment | None) -> object:
    """Return the rows the tensors hold: a 2-D array, or a list of dicts keyed by feature.

    ``deployment`` (the pinned or active version, if any) says which names
    and layouts are right, and words errors; the serving version's own
    schema checks the rows again.
    """
    _check_unique(tensors)
    if deployment is None:
        if len(tensors) == 1 and len(tensors[0].shape) == 2:
            return decode(tensors[0])
        return _rows_by_feature(tensors, None)
    name = deployment.loaded.signature.input_name
    features = deployment.schema.feature_names
    if deployment.schema.columns is not None:
        # A model of typed columns (strings among them) has no 2-D input to send whole.
        return _rows_by_feature(tensors, features)
    whole = [
        tensor for tensor in tensors if tensor.name == name and not _is_column(tensor, features)
    ]
    if whole:
        if len(tensors) > 1:
            where = f"{whole[0].where}.name"
            raise bad_request(
                f"{where}: {name!r} holds every feature of a row, so it comes alone: send it"
                " without other tensors, or one tensor per feature",
                where,
                code="invalid_input",
            )
        tensor = whole[0]
        if len(tensor.shape) != 2:
            n = deployment.schema.n_features
            raise bad_request(
                f"{tensor.where}.shape must be [rows, {n}] for {name!r}, not {list(tensor.shape)}",
                f"{tensor.where}.shape",
                code="invalid_input",
            )
        return decode(tensor)
    if features is None:
        if len(tensors) == 1:
            raise _unknown_input(tensors[0], deployment)
        n = deployment.schema.n_features
        raise bad_request(
            f"this model has no feature names, so it cannot take one tensor per feature:"
            f" send one 2-D tensor named {name!r} of shape [rows, {n}]",
            "inputs",
            code="invalid_input",
        )
    if len(tensors) == 1 and tensors[0].name not in features:
        raise _unknown_input(tensors[0], deployment)
    return _rows_by_feature(tensors, features)


def _check_unique(tensors: Sequence[InputTensor]) -> None:
    seen: set[str] = set()
    for tensor in tensors:
        if tensor.name in seen:
            where = f"{tensor.where}.name"
            raise bad_request(
                f"{where}: input {tensor.name[:60]!r} is sent twice; every input needs a name"
                " of its own",
                where,
            )
        seen.add(tensor.name)


def _is_column(tensor: InputTensor, features: Sequence[str] | None) -> bool:
    """True if ``tensor`` is one feature's values: named after a feature, [rows] or [rows, 1]."""
    if features is None or tensor.name not in features:
        return False
    return len(tensor.shape) == 1 or (len(tensor.shape) == 2 and tensor.shape[1] == 1)


def _unknown_input(tensor: InputTensor, deployment: Deployment) -> RequestError:
    where = f"{tensor.where}.name"
    name = deployment.loaded.signature.input_name
    n = deployment.schema.n_features
    per_feature = (
        ", or one tensor per feature, named after it"
        if deployment.schema.feature_names is not None
        else ""
    )
    return bad_request(
        f"{where}: this model has no input {tensor.name[:60]!r}: send one 2-D tensor named"
        f" {name!r} of shape [rows, {n}], as the model's metadata"
        f" says{per_feature}",
        where,
        code="invalid_input",
    )


def _rows_by_feature(
    tensors: Sequence[InputTensor], features: Sequence[str] | None
) -> list[dict[str, Any]]:
    known = None if features is None else set(features)
    names: list[str] = []
    columns: list[list[Any]] = []
    seen: set[str] = set()
    for tensor in tensors:
        where = f"{tensor.where}.name"
        seen.add(tensor.name)
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
