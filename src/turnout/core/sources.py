"""Deployables named by an MLflow model URI: ``models:/name/3``, ``models:/name@alias``, ``runs:/``.

The URI is resolved against MLflow's own configuration (``MLFLOW_TRACKING_URI``,
``MLFLOW_REGISTRY_URI``) and its artifacts are downloaded to a temporary
directory. The ``onnx`` flavor is read as bytes and served as it is. The
``sklearn`` flavor is deserialized, which runs whatever code the registry
holds, so it is loaded only when the caller passes ``allow_pickle=True``.
MLflow's own errors are translated to :class:`ConversionError` here.
"""

from __future__ import annotations

import importlib.util
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from turnout.core.errors import ConversionError, InvalidConfigError

__all__ = ["MLFLOW_INSTALL_HINT", "MlflowModel", "is_mlflow_uri", "require_mlflow", "resolve"]

MLFLOW_INSTALL_HINT = "pip install 'turnout[mlflow]'"

# The schemes of MLflow's model URIs that name a model in a tracking server
# or registry (https://mlflow.org/docs/latest/python_api/mlflow.artifacts.html,
# download_artifacts). Local paths and cloud URIs are not accepted: a .onnx
# path already deploys without MLflow.
_SCHEMES = ("models:/", "runs:/")


@dataclass(frozen=True)
class MlflowModel:
    """What an MLflow model URI resolved to: a deployable and what MLflow knows of it."""

    uri: str
    flavor: str
    model: Any
    features: tuple[str, ...] | None


def is_mlflow_uri(value: object) -> TypeGuard[str]:
    """True if ``value`` is a string naming an MLflow model (``models:/`` or ``runs:/``)."""
    return isinstance(value, str) and value.startswith(_SCHEMES)


def require_mlflow(what: str) -> None:
    """Raise InvalidConfigError saying what to install, unless MLflow can be imported."""
    if importlib.util.find_spec("mlflow") is None:
        raise InvalidConfigError(f"{what} needs MLflow: {MLFLOW_INSTALL_HINT}")


def resolve(uri: str, *, allow_pickle: bool = False) -> MlflowModel:
    """Download the model ``uri`` names and return it as a deployable. Slow: call it in a thread.

    The onnx flavor is preferred when a model has both. Feature names come
    from the model's signature when it names its input columns.
    """
    require_mlflow(f"deploying {uri!r}")
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="turnout-mlflow-") as tmp:
        try:
            local = Path(_download(uri, tmp))
            flavors, features = _describe(local)
        except MlflowException as exc:
            raise ConversionError(f"cannot fetch {uri!r} from MLflow: {exc.message}") from exc
        except OSError as exc:
            raise ConversionError(f"cannot fetch {uri!r} from MLflow: {exc}") from exc
        if "onnx" in flavors:
            data = _inside(local, flavors["onnx"].get("data", "model.onnx"), uri)
            return MlflowModel(uri, "onnx", data.read_bytes(), features)
        if "sklearn" in flavors:
            return MlflowModel(uri, "sklearn", _load_sklearn(uri, local, allow_pickle), features)
    known = ", ".join(sorted(flavors)) or "none"
    raise ConversionError(
        f"{uri!r} has no onnx or sklearn flavor (its flavors: {known}); log it with"
        " mlflow.onnx.log_model or mlflow.sklearn.log_model"
    )


def _download(uri: str, destination: str) -> str:
    import mlflow.artifacts

    path: str = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=destination)
    return path


def _describe(local: Path) -> tuple[dict[str, dict[str, Any]], tuple[str, ...] | None]:
    """Return the model's flavors and the input column names of its signature, if any."""
    from mlflow.models import Model

    if not (local / "MLmodel").is_file():
        raise ConversionError(f"{local.name!r} is not an MLflow model: it has no MLmodel file")
    meta = Model.load(str(local))
    features = None
    signature = meta.signature
    # A tensor signature names no columns; a column signature does, in order.
    inputs = signature.inputs if signature is not None else None
    if inputs is not None and not inputs.is_tensor_spec() and inputs.has_input_names():
        features = tuple(str(name) for name in inputs.input_names())
    return dict(meta.flavors), features


def _inside(root: Path, relative: object, uri: str) -> Path:
    """Return ``root / relative`` if it stays inside ``root``: MLmodel is registry data."""
    if not isinstance(relative, str):
        raise ConversionError(f"{uri!r}: the onnx flavor names no model file")
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()) or not path.is_file():
        raise ConversionError(f"{uri!r}: the onnx flavor's file {relative!r} is not in the model")
    return path


def _load_sklearn(uri: str, local: Path, allow_pickle: bool) -> Any:
    if not allow_pickle:
        # MLflow gates every sklearn serialization format, skops included, for
        # the same reason (mlflow/sklearn/__init__.py, _load_model_from_local_file):
        # the trusted-types list of a skops file is read from the model itself.
        raise ConversionError(
            f"{uri!r} is a scikit-learn model; loading it deserializes it, which runs"
            " whatever code the registry holds. Pass allow_pickle=True if you trust the"
            " registry, or log the model with mlflow.onnx.log_model"
        )
    import mlflow.sklearn
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.sklearn.load_model(str(local))
    except MlflowException as exc:
        raise ConversionError(f"cannot load {uri!r}: {exc.message}") from exc
    except Exception as exc:  # unpickling can raise anything at all
        raise ConversionError(f"cannot load {uri!r}: {type(exc).__name__}: {exc}") from exc
