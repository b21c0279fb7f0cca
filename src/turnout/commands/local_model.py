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

__all__ = ["PICKLE_SUFFIXES", "ModelFile", "read_model_file"]

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
