"""Deployables named by an MLflow model URI: ``models:/name/3``, ``models:/name@alias``, ``runs:/``.

The URI is resolved against MLflow's own configuration (``MLFLOW_TRACKING_URI``,
``MLFLOW_REGISTRY_URI``) and its artifacts are downloaded to a temporary
directory. The ``onnx`` flavor is read as bytes and served as it is. The
``sklearn`` flavor is deserialized, which runs whatever code the registry
holds, so it is loaded only when the caller passes ``allow_pickle=True``.
MLflow's own errors are translated to :class:`ConversionError` here.

With ``registry_only=True`` (what the admin API deploys with) the URI is
resolved more strictly: only against a tracking server named explicitly,
only from the artifacts that server stores for a run or a logged model, and
only a model directory of at most :data:`MAX_MODEL_BYTES`, checked before
anything is downloaded.
"""

from __future__ import annotations

import importlib.util
import inspect
import posixpath
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard
from urllib.parse import unquote, urlsplit

from turnout.core.errors import ConversionError, InvalidConfigError

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = [
    "MAX_MODEL_BYTES",
    "MAX_MODEL_FILES",
    "MLFLOW_INSTALL_HINT",
    "MlflowModel",
    "MlflowSource",
    "as_source",
    "is_mlflow_uri",
    "require_mlflow",
    "resolve",
]

MLFLOW_INSTALL_HINT = "pip install 'turnout[mlflow]'"

# The schemes of MLflow's model URIs that name a model in a tracking server
# or registry (https://mlflow.org/docs/latest/python_api/mlflow.artifacts.html,
# download_artifacts). Local paths and cloud URIs are not accepted: a .onnx
# path already deploys without MLflow.
_SCHEMES = ("models:/", "runs:/")

# Bounds on what a registry_only resolve downloads, read from MLflow's listing
# first: a registry entry must not be able to fill the server's disk.
MAX_MODEL_BYTES = 1 << 30
MAX_MODEL_FILES = 10_000


@dataclass(frozen=True)
class MlflowSource:
    """An MLflow model URI and how to resolve it; ``deploy_model`` takes one in place of a model.

    A plain URI string is ``MlflowSource(uri)``: MLflow's own configuration
    and defaults. ``registry_only`` resolves it as :func:`resolve` says;
    ``tracking_uri`` names the tracking server, None for MLflow's configuration.
    """

    uri: str
    registry_only: bool = False
    tracking_uri: str | None = None


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


def as_source(value: object) -> MlflowSource | None:
    """Return ``value`` as an MlflowSource if it names an MLflow model, else None."""
    if isinstance(value, MlflowSource):
        return value
    return MlflowSource(value) if is_mlflow_uri(value) else None


def require_mlflow(what: str) -> None:
    """Raise InvalidConfigError saying what to install, unless MLflow can be imported."""
    if importlib.util.find_spec("mlflow") is None:
        raise InvalidConfigError(f"{what} needs MLflow: {MLFLOW_INSTALL_HINT}")


def resolve(
    uri: str,
    *,
    allow_pickle: bool = False,
    registry_only: bool = False,
    tracking_uri: str | None = None,
) -> MlflowModel:
    """Download the model ``uri`` names and return it as a deployable. Slow: call it in a thread.

    The onnx flavor is preferred when a model has both. Feature names come
    from the model's signature when it names its input columns.
    ``tracking_uri`` None means MLflow's configuration, and its defaults.

    ``registry_only`` is for URIs from outside the process (the admin API):
    the tracking server must be named (``tracking_uri`` or MLflow's
    configuration, never its default of a ./mlflow.db), and only artifacts
    it stores are read. A registered version's source must be a ``runs:/``
    or ``models:/`` URI or lie under the artifact URI of its own run; a
    ``runs:/`` path stays in its run; a model must list an MLmodel file and
    at most MAX_MODEL_BYTES in MAX_MODEL_FILES files before it is downloaded.
    """
    require_mlflow(f"deploying {uri!r}")
    from mlflow.exceptions import MlflowException

    # Checked before MLflow is asked anything: its default store is a file it creates.
    named = _named_tracking_uri(uri, tracking_uri) if registry_only else None
    with tempfile.TemporaryDirectory(prefix="turnout-mlflow-") as tmp:
        try:
            if named is not None:
                local = Path(_download_stored(uri, tmp, named))
            else:
                local = Path(_download(uri, tmp, tracking_uri))
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


def _download(uri: str, destination: str, tracking_uri: str | None) -> str:
    import mlflow.artifacts

    # Passed only when given: older MLflow 2 releases have no such parameter.
    where = {"tracking_uri": tracking_uri} if tracking_uri else {}
    path: str = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=destination, **where)
    return path


def _named_tracking_uri(uri: str, tracking_uri: str | None) -> str:
    """Return the tracking server for ``uri`` if one is configured, not implied (MLflow 3 only)."""
    import mlflow
    from mlflow.store.artifact import artifact_repository_registry

    # MLflow 2 knows no logged models, and its artifact repositories read the
    # tracking server from the process's configuration, not from the caller.
    registry = inspect.signature(artifact_repository_registry.get_artifact_repository)
    if "tracking_uri" not in registry.parameters:
        raise InvalidConfigError(
            f"cannot deploy {uri!r} this way: it needs MLflow 3 (pip install 'mlflow>=3')"
        )
    if tracking_uri:
        return tracking_uri
    if mlflow.tracking.is_tracking_uri_set():  # type: ignore[no-untyped-call]  # not annotated
        return str(mlflow.get_tracking_uri())
    raise InvalidConfigError(
        f"cannot deploy {uri!r}: no MLflow tracking server is configured. Set"
        " MLFLOW_TRACKING_URI (or the tracking_uri of the server's MLflow tracker);"
        " MLflow's default, a ./mlflow.db in the working directory, is not used"
    )


def _download_stored(uri: str, destination: str, tracking_uri: str) -> str:
    """Download the model ``uri`` names from the tracking server's own artifacts, bounded."""
    from mlflow import MlflowClient
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    client = MlflowClient(tracking_uri=tracking_uri)
    root, path = _locate(client, uri)
    repository: Any = get_artifact_repository(root, tracking_uri=tracking_uri)  # untyped methods
    _check_listing(repository, path, uri)
    local: str = repository.download_artifacts(path, dst_path=destination)
    return local


def _locate(client: MlflowClient, uri: str) -> tuple[str, str]:
    """Return the artifact root that holds ``uri``'s model and the model's path under it."""
    if uri.startswith("runs:/"):
        return _run_path(uri[len("runs:/") :], uri)
    name = uri[len("models:/") :]
    if "/" in name:
        name, number = name.split("/", 1)
        if not number.isdigit():
            # Stages are deprecated in MLflow; a version or an alias names one exactly.
            raise ConversionError(f"{uri!r}: name a version number or an alias, not {number!r}")
        version = client.get_model_version(name, number)
    elif "@" in name:
        name, alias = name.rsplit("@", 1)
        version = client.get_model_version_by_alias(name, alias)
    else:
        return _logged_model(client, name)
    return _version_path(client, version, uri)


def _version_path(client: MlflowClient, version: Any, uri: str) -> tuple[str, str]:
    """Where a registered version's model is, if that is among the tracking server's artifacts."""
    source = str(version.source)
    if source.startswith("runs:/"):
        return _run_path(source[len("runs:/") :], uri)
    if source.startswith("models:/"):
        model_id = source[len("models:/") :]
        if "/" in model_id or "@" in model_id:
            raise ConversionError(f"{uri!r}: its source {source!r} is another registered model")
        return _logged_model(client, model_id)
    if version.run_id:
        root = str(client.get_run(version.run_id).info.artifact_uri)
        path = _relative_to(source, root)
        if path is not None:
            return root, path
    raise ConversionError(
        f"{uri!r}: its source {source!r} is not among the artifacts of its run; only"
        " models the tracking server stores for a run or a logged model are deployed"
    )


def _run_path(rest: str, uri: str) -> tuple[str, str]:
    """A run's root as MLflow's ``runs:/`` repository, which also holds the run's logged models."""
    run_id, _, path = rest.partition("/")
    if not run_id.isalnum():
        raise ConversionError(f"{uri!r}: {run_id!r} is not a run id")
    return f"runs:/{run_id}", _clean_path(path, uri)


def _logged_model(client: MlflowClient, model_id: str) -> tuple[str, str]:
    # A logged model's artifact location is given by the server when it is created.
    return str(client.get_logged_model(model_id).artifact_location), ""


def _clean_path(path: str, uri: str) -> str:
    """Return an artifact path without empty or ``.`` parts; one with ``..`` is refused."""
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ConversionError(f"{uri!r}: the path {path!r} leaves the run's artifacts")
    return "/".join(parts)


def _relative_to(source: str, root: str) -> str | None:
    """Return ``source``'s path under the artifact URI ``root``, or None if it is not under it."""
    src, base = _split_uri(source), _split_uri(root)
    if src is None or base is None or src[:2] != base[:2]:
        return None
    if src[2] != base[2] and not src[2].startswith(base[2].rstrip("/") + "/"):
        return None
    return src[2][len(base[2]) :].strip("/")


def _split_uri(uri: str) -> tuple[str, str, str] | None:
    """Scheme, authority and normalized path of an artifact URI; a bare absolute path is a file."""
    parts = urlsplit(uri)
    if parts.query or parts.fragment:
        return None
    scheme = parts.scheme or "file"
    authority = "" if scheme == "file" and parts.netloc == "localhost" else parts.netloc
    path = unquote(parts.path)
    if not path.startswith("/"):
        return None  # relative to some working directory: not comparable
    return scheme, authority, posixpath.normpath(path)


def _check_listing(repository: Any, path: str, uri: str) -> None:
    """Refuse a model without an MLmodel file, or one too large, from MLflow's listing."""
    entries = list(repository.list_artifacts(path or None))
    if not any(posixpath.basename(entry.path) == "MLmodel" for entry in entries):
        raise ConversionError(f"{uri!r} is not an MLflow model: it lists no MLmodel file")
    total = count = 0
    while entries:
        entry = entries.pop()
        count += 1
        if count > MAX_MODEL_FILES:
            raise ConversionError(f"{uri!r} has more than {MAX_MODEL_FILES} files")
        if entry.is_dir:
            entries.extend(repository.list_artifacts(entry.path))
            continue
        # A store that does not say a file's size cannot bound it here.
        total += entry.file_size or 0
        if total > MAX_MODEL_BYTES:
            raise ConversionError(
                f"{uri!r} is larger than {MAX_MODEL_BYTES} bytes; models that large are"
                " deployed through the Python API"
            )


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
