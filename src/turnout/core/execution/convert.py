"""Turn what a user deploys into a servable ONNX model and the signature that describes it.

A deployable is a fitted scikit-learn estimator or Pipeline (converted with
skl2onnx; XGBoost and LightGBM estimators in it with onnxmltools' converters,
see boosting.py), an ``onnx.ModelProto``, ONNX bytes, or a path to a ``.onnx`` file.
Failures from skl2onnx and onnx are translated into :class:`ConversionError`
here, at the seam, so callers handle one error type.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from turnout.core.errors import ConversionError
from turnout.core.execution.boosting import prepare_boosters
from turnout.core.execution.columns import (
    ONNX_NUMBER_TYPES,
    InputColumn,
    estimator_columns,
    graph_columns,
    parts_of,
    record_dtype,
    string_columns,
    text_vectorizers,
)

__all__ = ["LoadedModel", "ModelSignature", "Runtime", "Task", "load_model"]

# skl2onnx and onnx import slowly (about a second together); only deployments need them.


class Task(StrEnum):
    """What a model predicts, which decides how its outputs are read."""

    CLASSIFIER = "classifier"
    REGRESSOR = "regressor"


class Runtime(StrEnum):
    """What runs a version's batches: ONNX Runtime, or the model's own Python methods.

    ``PYTHON`` is for models no converter handles; ONNX models (a proto,
    bytes, a path) run on ONNX Runtime whichever is asked for.
    """

    ONNX = "onnx"
    PYTHON = "python"


@dataclass(frozen=True)
class ModelSignature:
    """The shape of a servable model: its input and the outputs turnout reads.

    A model takes one 2-D input named ``input_name``, or, when ``columns``
    is set, one ``[rows, 1]`` input per column (some of them strings); its
    rows are then records of ``input_dtype``, a field per column, and
    ``input_name`` is empty.
    """

    input_name: str
    n_features: int
    input_dtype: np.dtype[Any]
    task: Task
    feature_names: tuple[str, ...] | None = None
    classes: tuple[Any, ...] | None = None
    label_output: str | None = None
    score_output: str | None = None
    columns: tuple[InputColumn, ...] | None = None

    def probe(self) -> np.ndarray[Any, Any]:
        """Return one row the model must take: zeros, and a known category in string columns."""
        if self.columns is None:
            return np.zeros((1, self.n_features), dtype=self.input_dtype)
        row = np.empty(1, dtype=self.input_dtype)
        for column in self.columns:
            row[column.name] = column.example()
        return row


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to serve: ONNX bytes (None on the python runtime), signature, original."""

    signature: ModelSignature
    onnx_bytes: bytes | None
    estimator: Any
    source: str

    @property
    def runtime(self) -> Runtime:
        """The runtime its batches run on."""
        return Runtime.PYTHON if self.onnx_bytes is None else Runtime.ONNX


def load_model(
    model_instance: object,
    *,
    features: Sequence[str] | None = None,
    runtime: Runtime = Runtime.ONNX,
) -> LoadedModel:
    """Return ``model_instance`` as a LoadedModel, converting scikit-learn models to ONNX.

    On the python runtime an estimator, or any object with a ``predict``
    method (a test double, a hand-written model), is kept as it is and run
    through its own Python methods.
    """
    feature_names = _feature_names(features)
    if runtime is Runtime.PYTHON and (
        _is_estimator(model_instance) or _has_predict(model_instance)
    ):
        return _python_model(model_instance, feature_names)
    if _is_estimator(model_instance):
        return _sklearn_model(model_instance, feature_names)
    proto = _read_onnx(model_instance)
    # Read the class labels before the ZipMap goes: it may be the only node holding them.
    classes = _onnx_classes(proto)
    proto = _without_zipmap(proto)
    signature = replace(_onnx_signature(proto, feature_names), classes=classes)
    return LoadedModel(
        signature=signature,
        onnx_bytes=proto.SerializeToString(),
        estimator=None,
        source="onnx",
    )


def _feature_names(features: Sequence[str] | None) -> tuple[str, ...] | None:
    if features is None:
        return None
    if isinstance(features, str) or not all(isinstance(name, str) for name in features):
        raise ConversionError("features must be a list of feature-name strings")
    # str(): NumPy's str_ (scikit-learn's feature_names) would show as np.str_('x') in messages.
    return tuple(str(name) for name in features)


def _is_estimator(value: object) -> bool:
    return hasattr(value, "fit") and (hasattr(value, "predict") or hasattr(value, "transform"))


def _has_predict(value: object) -> bool:
    return callable(getattr(value, "predict", None))


def _describe(estimator: object) -> str:
    steps = getattr(estimator, "steps", None)
    if steps:
        inner = ", ".join(type(step).__name__ for _, step in steps)
        return f"{type(estimator).__name__}({inner})"
    return type(estimator).__name__


def _check_fitted(estimator: Any) -> int:
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    try:
        check_is_fitted(estimator)
    except NotFittedError as exc:
        raise ConversionError(f"{_describe(estimator)} is not fitted: call fit() first") from exc
    except TypeError as exc:
        raise ConversionError(f"{_describe(estimator)} is not a scikit-learn estimator") from exc
    n_features = getattr(estimator, "n_features_in_", None)
    if not isinstance(n_features, int | np.integer) or n_features < 1:
        raise ConversionError(
            f"{_describe(estimator)} does not say how many features it takes (n_features_in_)"
        )
    return int(n_features)


def _estimator_names(
    estimator: Any, n_features: int, features: tuple[str, ...] | None
) -> tuple[str, ...] | None:
    if features is not None:
        if len(features) != n_features:
            raise ConversionError(
                f"{len(features)} feature names given, but {_describe(estimator)}"
                f" takes {n_features} features"
            )
        return features
    names = getattr(estimator, "feature_names_in_", None)
    if names is None:
        return None
    return tuple(str(name) for name in names)


def _classes(estimator: Any) -> tuple[Any, ...] | None:
    classes = getattr(estimator, "classes_", None)
    return None if classes is None else tuple(np.asarray(classes).tolist())


def _python_model(estimator: Any, features: tuple[str, ...] | None) -> LoadedModel:
    from sklearn.base import BaseEstimator, is_classifier

    columns = None
    if isinstance(estimator, BaseEstimator):
        n_features = _check_fitted(estimator)
        names = _estimator_names(estimator, n_features, features)
        classifier = is_classifier(estimator) or hasattr(estimator, "predict_proba")
        if string_columns(estimator, n_features):
            if names is None:
                raise _unnamed_strings(estimator)
            columns = estimator_columns(estimator, names)
    else:
        # Not scikit-learn's: no fitted state to check, and its tags mean nothing.
        n_features, names = _declared_features(estimator, features)
        classifier = hasattr(estimator, "predict_proba") or hasattr(estimator, "classes_")
    # There is no graph, but OutputDecoder checks output modes against these
    # names: they say what PythonRuntime returns (labels and probabilities, or values).
    label_output, score_output = (
        ("label", "probabilities" if hasattr(estimator, "predict_proba") else None)
        if classifier
        else (None, "variable")
    )
    signature = ModelSignature(
        input_name="input",
        n_features=n_features,
        input_dtype=np.dtype(np.float64) if columns is None else record_dtype(columns),
        task=Task.CLASSIFIER if classifier else Task.REGRESSOR,
        feature_names=names,
        classes=_classes(estimator),
        label_output=label_output,
        score_output=score_output,
        columns=columns,
    )
    return LoadedModel(signature, None, estimator, f"python:{_describe(estimator)}")


def _unnamed_strings(estimator: Any) -> ConversionError:
    return ConversionError(
        f"{_describe(estimator)} reads string columns, which are sent by name: fit it on"
        " a DataFrame, or pass features=[...] naming its columns in order"
    )


def _declared_features(
    model: Any, features: tuple[str, ...] | None
) -> tuple[int, tuple[str, ...] | None]:
    """The feature count and names of a model that is not scikit-learn's: given, or its own."""
    own = getattr(model, "feature_names_in_", None)
    names = features if features is not None else None if own is None else tuple(map(str, own))
    count = getattr(model, "n_features_in_", None)
    if count is None and names is not None:
        count = len(names)
    if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 1:
        raise ConversionError(
            f"{_describe(model)} does not say how many features it takes: pass"
            " features=[...] to deploy_model, or give it an n_features_in_ attribute"
        )
    if names is not None and len(names) != count:
        raise ConversionError(
            f"{len(names)} feature names given, but {_describe(model)} takes {count} features"
        )
    return int(count), names


def _sklearn_model(estimator: Any, features: tuple[str, ...] | None) -> LoadedModel:
    n_features = _check_fitted(estimator)
    names = _estimator_names(estimator, n_features, features)
    try:
        from skl2onnx import convert_sklearn

        proto = convert_sklearn(
            estimator,
            initial_types=_initial_types(estimator, n_features, names),
            options=_conversion_options(estimator),
            target_opset=prepare_boosters(estimator),
        )
    except ConversionError:
        raise
    except Exception as exc:
        detail = str(exc)
        if len(detail) > 500:
            # skl2onnx can dump the whole graph; the first lines name the problem.
            detail = detail[:500] + " ..."
        raise ConversionError(
            f"skl2onnx cannot convert {_describe(estimator)}: {detail}".strip()
        ) from exc
    signature = _onnx_signature(proto, names)
    classes = _classes(estimator)
    if classes is not None:
        signature = replace(signature, classes=classes)
    return LoadedModel(
        signature=signature,
        onnx_bytes=proto.SerializeToString(),
        estimator=estimator,
        source=f"sklearn:{_describe(estimator)}",
    )


def _conversion_options(estimator: Any) -> dict[Any, Any] | None:
    """skl2onnx's options: probabilities as a plain tensor, and text lowercased in the C locale.

    zipmap=False keeps probabilities a plain tensor instead of a list of
    dicts, which is far cheaper to read. A text vectorizer's graph lowercases
    in en_US.UTF-8 unless told otherwise, and ONNX Runtime then fails to
    load it where that locale is not installed (slim container images); the
    C locale exists everywhere and lowercases ASCII, all such a graph takes.
    """
    vectorizers = text_vectorizers(estimator)
    if not vectorizers:
        return {"zipmap": False} if hasattr(estimator, "predict_proba") else None
    # Options keyed by object, as skl2onnx takes them when they differ by step.
    options: dict[Any, Any] = {id(v): {"locale": "C"} for v in vectorizers}
    for step in _leaves(estimator):
        if hasattr(step, "predict_proba"):
            options[id(step)] = {"zipmap": False}
    return options


def _leaves(estimator: Any) -> list[Any]:
    """The estimators at the bottom of a composite one (itself, if it is not composite)."""
    parts = parts_of(estimator)
    return [leaf for part in parts for leaf in _leaves(part)] if parts else [estimator]


def _initial_types(
    estimator: Any, n_features: int, names: tuple[str, ...] | None
) -> list[tuple[str, Any]]:
    """The graph inputs to convert to: one 2-D float input, or one per column with strings.

    Requests are encoded into exactly these, whatever the model was trained on.
    """
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    strings = string_columns(estimator, n_features)
    if not strings:
        return [("input", FloatTensorType([None, n_features]))]
    if names is None:
        raise _unnamed_strings(estimator)
    return [
        (name, StringTensorType([None, 1]) if j in strings else FloatTensorType([None, 1]))
        for j, name in enumerate(names)
    ]


def _read_onnx(source: object) -> Any:
    import onnx

    if isinstance(source, onnx.ModelProto):
        proto = source
    elif isinstance(source, bytes | bytearray | memoryview):
        try:
            proto = onnx.load_model_from_string(bytes(source))
        except Exception as exc:
            raise ConversionError(f"the bytes given are not an ONNX model: {exc}") from exc
    elif isinstance(source, str | os.PathLike):
        path = Path(source)
        if path.suffix != ".onnx":
            raise ConversionError(f"expected a path to a .onnx file, got {path.name!r}")
        try:
            proto = onnx.load_model(str(path))
        except FileNotFoundError as exc:
            raise ConversionError(f"no ONNX file at {path}") from exc
        except Exception as exc:
            raise ConversionError(f"{path.name} is not a readable ONNX model: {exc}") from exc
    else:
        raise ConversionError(
            "model_instance must be a fitted scikit-learn estimator or Pipeline, an"
            f" onnx.ModelProto, ONNX bytes or a .onnx path, not {type(source).__name__}"
            " (runtime='python' serves any object with a predict method)"
        )
    if not isinstance(source, str | os.PathLike) and _uses_external_data(proto):
        # Without a file of its own, such a model would make ONNX Runtime read paths
        # relative to the working directory: files the caller never named.
        raise ConversionError(
            "the ONNX model keeps tensors in external data files; from bytes or a ModelProto"
            " only self-contained models are accepted (pass the .onnx path instead)"
        )
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise ConversionError(f"the ONNX model is invalid: {exc}") from exc
    return proto


def _uses_external_data(proto: Any) -> bool:
    """True if any tensor of the model lives in an external file.

    Every place a tensor can be: initializers (dense and sparse), node
    attributes, subgraphs, and the nodes of model-local functions.
    """
    import onnx

    def tensors_of(attribute: Any) -> list[Any]:
        sparse = [attribute.sparse_tensor, *attribute.sparse_tensors]
        return [
            attribute.t,
            *attribute.tensors,
            *(t.values for t in sparse),
            *(t.indices for t in sparse),
        ]

    def nodes_use(nodes: Any) -> bool:
        for node in nodes:
            for attribute in node.attribute:
                if any(t.data_location == onnx.TensorProto.EXTERNAL for t in tensors_of(attribute)):
                    return True
                subgraphs = [attribute.g, *attribute.graphs]
                if any(graph_uses(sub) for sub in subgraphs if sub.ByteSize()):
                    return True
        return False

    def graph_uses(graph: Any) -> bool:
        sparse = list(graph.sparse_initializer)
        tensors = [*graph.initializer, *(t.values for t in sparse), *(t.indices for t in sparse)]
        if any(t.data_location == onnx.TensorProto.EXTERNAL for t in tensors):
            return True
        return nodes_use(graph.node)

    return graph_uses(proto.graph) or any(nodes_use(f.node) for f in proto.functions)


def _without_zipmap(proto: Any) -> Any:
    """Return ``proto`` with a trailing ZipMap removed, so probabilities stay a tensor."""
    import onnx

    zipmaps = [node for node in proto.graph.node if node.op_type == "ZipMap"]
    if not zipmaps:
        return proto
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    for node in zipmaps:
        outputs = {output.name: output for output in proto.graph.output}
        if node.output[0] not in outputs:
            continue
        n_classes = None
        for attribute in node.attribute:
            if attribute.name in ("classlabels_int64s", "classlabels_strings"):
                n_classes = len(attribute.ints) or len(attribute.strings)
        old = outputs[node.output[0]]
        position = list(proto.graph.output).index(old)
        # The map's value type is the probabilities' type: double for a model
        # converted with a DoubleTensorType input.
        value_type = old.type.sequence_type.elem_type.map_type.value_type.tensor_type
        tensor = onnx.helper.make_tensor_value_info(
            node.input[0], value_type.elem_type or onnx.TensorProto.FLOAT, [None, n_classes]
        )
        proto.graph.output.remove(old)
        proto.graph.output.insert(position, tensor)
        proto.graph.node.remove(node)
    return proto


def _onnx_signature(proto: Any, features: tuple[str, ...] | None) -> ModelSignature:
    columns = graph_columns(proto)
    if columns is not None:
        return _columns_signature(proto, columns, features)
    initializers = {init.name for init in proto.graph.initializer}
    inputs = [value for value in proto.graph.input if value.name not in initializers]
    if len(inputs) != 1:
        raise ConversionError(
            f"the ONNX model has {len(inputs)} inputs; turnout serves models with one"
            " 2-D input (convert with a single FloatTensorType([None, n_features]))"
        )
    (graph_input,) = inputs
    tensor_type = graph_input.type.tensor_type
    dtype = ONNX_NUMBER_TYPES.get(tensor_type.elem_type)
    if dtype is None:
        raise ConversionError(
            f"input {graph_input.name!r} has an element type turnout does not encode"
            " (float, double, int32 and int64 are supported)"
        )
    dims = list(tensor_type.shape.dim)
    if len(dims) != 2:
        raise ConversionError(f"input {graph_input.name!r} is {len(dims)}-D; expected 2-D")
    n_features = dims[1].dim_value or (len(features) if features is not None else 0)
    if n_features < 1:
        raise ConversionError(
            f"input {graph_input.name!r} does not fix its feature count;"
            " pass features=[...] at deploy"
        )
    if features is not None and len(features) != n_features:
        raise ConversionError(
            f"{len(features)} feature names given for a model of {n_features} features"
        )
    label_output, score_output = _pick_outputs(proto)
    return ModelSignature(
        input_name=graph_input.name,
        n_features=n_features,
        input_dtype=np.dtype(dtype),
        task=Task.CLASSIFIER if label_output is not None else Task.REGRESSOR,
        feature_names=features,
        classes=_onnx_classes(proto),
        label_output=label_output,
        score_output=score_output,
    )


def _columns_signature(
    proto: Any, columns: tuple[InputColumn, ...], features: tuple[str, ...] | None
) -> ModelSignature:
    """The signature of a model with one input per column: its features are the input names."""
    names = tuple(column.name for column in columns)
    if features is not None:
        if sorted(features) != sorted(names):
            raise ConversionError(
                f"the features given ({', '.join(features[:10])}) are not the model's inputs"
                f" ({', '.join(names[:10])})"
            )
        by_name = {column.name: column for column in columns}
        columns = tuple(by_name[name] for name in features)
        names = features
    label_output, score_output = _pick_outputs(proto)
    return ModelSignature(
        input_name="",
        n_features=len(columns),
        input_dtype=record_dtype(columns),
        task=Task.CLASSIFIER if label_output is not None else Task.REGRESSOR,
        feature_names=names,
        classes=_onnx_classes(proto),
        label_output=label_output,
        score_output=score_output,
        columns=columns,
    )


def _pick_outputs(proto: Any) -> tuple[str | None, str | None]:
    """Return (label output, score output): a 1-D integer/string tensor and a float tensor."""
    import onnx

    label = score = None
    for output in proto.graph.output:
        if not output.type.HasField("tensor_type"):
            continue
        elem = output.type.tensor_type.elem_type
        rank = len(output.type.tensor_type.shape.dim)
        if elem in (onnx.TensorProto.INT64, onnx.TensorProto.STRING) and rank <= 1:
            label = label or output.name
        elif elem in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE):
            score = score or output.name
    if label is None and score is None:
        raise ConversionError("the ONNX model has no tensor output turnout can read")
    return label, score


def _onnx_classes(proto: Any) -> tuple[Any, ...] | None:
    for node in proto.graph.node:
        for attribute in node.attribute:
            # int64s: ZipMap and tree ensembles; ints: LinearClassifier, SVMClassifier.
            if attribute.name in ("classlabels_int64s", "classlabels_ints") and attribute.ints:
                return tuple(attribute.ints)
            if attribute.name == "classlabels_strings" and attribute.strings:
                return tuple(label.decode() for label in attribute.strings)
    return None
