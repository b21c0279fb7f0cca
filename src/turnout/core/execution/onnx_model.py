"""An ONNX-backed model with the scikit-learn face: predict, predict_proba, n_features_in_.

Code written for the original estimator (a health check, a smoke test) keeps
working when only the ONNX file was deployed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from turnout.core.execution.convert import ModelSignature, Task
from turnout.core.execution.runtime import ModelRuntime
from turnout.core.execution.schema import InputSchema

__all__ = ["OnnxClassifier", "OnnxModel", "wrap_onnx_model"]


class OnnxModel:
    """A deployed ONNX model, callable like a fitted scikit-learn estimator."""

    def __init__(self, runtime: ModelRuntime, signature: ModelSignature) -> None:
        self._runtime = runtime
        self._signature = signature
        self._schema = InputSchema(
            n_features=signature.n_features,
            dtype=signature.input_dtype,
            feature_names=signature.feature_names,
            allow_nan=True,
            max_rows=2**31 - 1,
            columns=signature.columns,
        )
        self.n_features_in_ = signature.n_features
        if signature.feature_names is not None:
            self.feature_names_in_ = np.asarray(signature.feature_names, dtype=object)
        if signature.classes is not None:
            self.classes_ = np.asarray(signature.classes)

    def predict(self, X: Any) -> np.ndarray[Any, Any]:
        """Return predicted labels (classifier) or values (regressor) for ``X``."""
        labels, scores = self._runtime.run(self._schema.encode(X))
        if self._signature.task is Task.CLASSIFIER and labels is not None:
            return labels
        assert scores is not None
        return scores[:, 0] if scores.ndim == 2 and scores.shape[1] == 1 else scores

    def __repr__(self) -> str:
        return f"OnnxModel(task={self._signature.task.value}, n_features={self.n_features_in_})"


class OnnxClassifier(OnnxModel):
    """A deployed ONNX classifier: an OnnxModel that also has ``predict_proba``."""

    def predict_proba(self, X: Any) -> np.ndarray[Any, Any]:
        """Return class probabilities of shape (rows, classes) for ``X``."""
        _, scores = self._runtime.run(self._schema.encode(X))
        assert scores is not None
        return scores


def wrap_onnx_model(runtime: ModelRuntime, signature: ModelSignature) -> OnnxModel:
    """Return the scikit-learn-like face of a deployed ONNX model.

    Only a classifier with probabilities gets ``predict_proba``, so
    ``hasattr(model, "predict_proba")`` answers as it would for the estimator.
    """
    if signature.task is Task.CLASSIFIER and signature.score_output is not None:
        return OnnxClassifier(runtime, signature)
    return OnnxModel(runtime, signature)
