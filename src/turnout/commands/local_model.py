"""Reading a model file on the user's own machine into ONNX bytes, for deploys from the CLI.

``.onnx`` files are read as they are. A ``.joblib`` or ``.pkl`` file is the
user's own trusted scikit-learn model: it is unpickled here, on their machine,
and converted to ONNX before anything is sent or stored, so a server never
unpickles.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from turnout.core.errors import ConversionError
from turnout.core.execution.convert import load_model

__all__ = ["PICKLE_SUFFIXES", "ModelFile", "find_model_file", "read_model_file"]

PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")


@dataclass(frozen=True)
class ModelFile:
    """A model ready to deploy: its ONNX bytes and, when it knows them, its feature names."""

    onnx_bytes: bytes
    features: tuple[str, ...] | None
    source: str


def read_model_file(path: Path) -> ModelFile:
    """Return the ONNX bytes of a ``.onnx`` file, or of a converted joblib/pickle estimator."""
    if not path.is_file():
        raise ConversionError(f"no model file at {path}")
    if path.suffix == ".onnx":
        # From its path, so tensors kept in external files beside it are read into the bytes.
        loaded = load_model(path)
    elif path.suffix in PICKLE_SUFFIXES:
        import joblib  # type: ignore[import-untyped]  # scikit-learn's own dependency

        try:
            estimator = joblib.load(path)
        except Exception as exc:
            raise ConversionError(f"cannot load {path.name}: {exc}") from exc
        loaded = load_model(estimator)
    else:
        raise ConversionError(
            f"{path.name}: expected a .onnx file, or a scikit-learn model saved with joblib"
            f" or pickle ({', '.join(PICKLE_SUFFIXES)})"
        )
    assert loaded.onnx_bytes is not None  # converted: not mock mode
    return ModelFile(loaded.onnx_bytes, loaded.signature.feature_names, loaded.source)


def find_model_file(path: Path, *, allow_pickle: bool) -> Path:
    """Return the model file at ``path``, or the one model file in the directory ``path``.

    A directory is what KServe's storage initializer fills (``/mnt/models``):
    its one ``.onnx`` file is the model, else its one joblib/pickle file. A
    pickle is refused unless ``allow_pickle``: unpickling runs the file's code.
    """
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        onnx = [p for p in files if p.suffix == ".onnx"]
        pickles = [p for p in files if p.suffix in PICKLE_SUFFIXES]
        candidates = onnx or pickles
        if len(candidates) != 1:
            found = ", ".join(p.name for p in candidates) or "none"
            raise ConversionError(
                f"{path} must hold exactly one .onnx file, or one joblib/pickle file"
                f" ({', '.join(PICKLE_SUFFIXES)}); found {found}"
            )
        path = candidates[0]
    elif not path.is_file():
        raise ConversionError(f"no model file or directory at {path}")
    if path.suffix in PICKLE_SUFFIXES and not allow_pickle:
        raise ConversionError(
            f"{path} is a pickle, and loading one runs the code inside it: serve it only"
            " with --allow-pickle (or $TURNOUT_ALLOW_PICKLE=1) if you trust who wrote it,"
            " or convert it to ONNX first"
        )
    return path
