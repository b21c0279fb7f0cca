"""The seam between a batcher and a model: run one batch, close.

Two implementations: :class:`OnnxRuntime` (ONNX Runtime, the real one) and
:class:`PythonRuntime` (the model's own methods, ``runtime="python"``).
``turnout.core.deployments.faults`` wraps either to inject failures. Runtime errors are
translated into :class:`InferenceError` here, so nothing above this seam sees
an onnxruntime, numpy or scikit-learn exception.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import numpy as np

from turnout.core.errors import ConversionError, InferenceError
from turnout.core.execution.convert import ModelSignature, Task

__all__ = ["ModelRuntime", "OnnxRuntime", "PythonRuntime", "RawOutput"]


class RawOutput(NamedTuple):
    """What a runtime returns for a batch: labels and scores, one row per input row.

    ``scores`` are class probabilities of shape (rows, classes) for a
    classifier and predicted values for a regressor.
    """

    labels: np.ndarray[Any, Any] | None
    scores: np.ndarray[Any, Any] | None


class ModelRuntime(Protocol):
    """Runs batches of encoded rows through one model."""

    def run(self, batch: np.ndarray[Any, Any]) -> RawOutput:
        """Return the outputs for ``batch``; raise InferenceError if the model fails."""
        ...

    def close(self) -> None:
        """Release the model's resources; called once, after the last batch."""
        ...


class OnnxRuntime:
    """Runs an ONNX model on an ONNX Runtime CPU session."""

    def __init__(self, onnx_bytes: bytes, signature: ModelSignature, *, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        self.threads = threads
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        # Spinning worker threads would burn the core the event loop needs
        # between batches; the batcher keeps the session busy instead.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(
                onnx_bytes, options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise ConversionError(f"ONNX Runtime cannot load the model: {exc}") from exc
        self._input = signature.input_name
        self._columns = signature.columns
        self._names = [name for name in (signature.label_output, signature.score_output) if name]
        self._has_labels = signature.label_output is not None
        self._has_scores = signature.score_output is not None
        # One set of run options for the runs stop() may end, reused: making
        # one per batch would cost more than the flag it carries.
        self._stoppable = ort.RunOptions()
        # A stopped run is turnout's doing, not the model's: no error in the log.
        self._stoppable.log_severity_level = 4

    def run(self, batch: np.ndarray[Any, Any]) -> RawOutput:
        """Run ``batch`` through the session."""
        return self._run(batch, None)

    def run_stoppable(self, batch: np.ndarray[Any, Any]) -> RawOutput:
        """Run ``batch`` so that :meth:`stop`, called from another thread, ends it early.

        One such run at a time: the event loop's thread is the only caller.
        """
        self._stoppable.terminate = False
        return self._run(batch, self._stoppable)

    def stop(self) -> None:
        """Make the running :meth:`run_stoppable` raise InferenceError soon, from any thread."""
        self._stoppable.terminate = True

    def _feeds(self, batch: np.ndarray[Any, Any]) -> dict[str, np.ndarray[Any, Any]]:
        if self._columns is None:
            return {self._input: batch}
        # Records: each field goes to its own [rows, 1] input.
        return {
            column.name: np.ascontiguousarray(batch[column.name]).reshape(-1, 1)
            for column in self._columns
        }

    def _run(self, batch: np.ndarray[Any, Any], options: Any) -> RawOutput:
        try:
            outputs = self._session.run(self._names, self._feeds(batch), options)
        except Exception as exc:
            raise InferenceError(
                f"ONNX Runtime failed on a batch of {len(batch)} rows: {exc}"
            ) from exc
        labels = outputs[0] if self._has_labels else None
        scores = outputs[-1] if self._has_scores else None
        return RawOutput(labels, scores)

    def close(self) -> None:
        """Drop the session; ONNX Runtime frees it with the last reference."""
        self._session = None


class PythonRuntime:
    """Runs a model through its own ``predict``/``predict_proba``: the python runtime."""

    def __init__(self, estimator: Any, signature: ModelSignature) -> None:
        self._estimator = estimator
        self._classifier = signature.task is Task.CLASSIFIER
        self._proba = self._classifier and hasattr(estimator, "predict_proba")
        self._classes = None if signature.classes is None else np.asarray(signature.classes)
        # An estimator fitted on a DataFrame warns on (and, with a
        # ColumnTransformer, misreads) a bare array: give it the frame it knows.
        self._columns = getattr(estimator, "feature_names_in_", None)

    def run(self, batch: Any) -> RawOutput:
        """Run ``batch`` through the estimator."""
        if batch.dtype.names is not None:
            import pandas as pd

            # Records of typed columns (strings among them): a frame of those columns.
            batch = pd.DataFrame({name: batch[name] for name in batch.dtype.names})
        elif self._columns is not None:
            import pandas as pd

            # copy=False: a copied frame stores its values column by column, and
            # BLAS then sums in another order than for the row-major batch, so
            # results would differ from the estimator's own in the last bits.
            batch = pd.DataFrame(batch, columns=self._columns, copy=False)
        estimator = self._estimator
        try:
            scores = np.asarray(estimator.predict_proba(batch)) if self._proba else None
            values = None
            if scores is None or self._classes is None:
                values = np.asarray(estimator.predict(batch))
        except Exception as exc:
            raise InferenceError(f"{type(estimator).__name__} failed: {exc}") from exc
        # ONNX Runtime checks the shapes of its outputs; a Python model's are taken on
        # trust, and a short one would hand the batch's requests each other's rows.
        for output in (scores, values):
            if output is not None and (output.ndim == 0 or len(output) != len(batch)):
                got = "a scalar" if output.ndim == 0 else f"{len(output)} rows"
                raise InferenceError(
                    f"{type(estimator).__name__} returned {got} for a batch of {len(batch)}"
                )
        if scores is None:
            return RawOutput(values, None) if self._classifier else RawOutput(None, values)
        if values is None and self._classes is not None:
            values = self._classes[scores.argmax(axis=1)]
        return RawOutput(values, scores)

    def close(self) -> None:
        """Nothing to release: the estimator belongs to the caller."""
