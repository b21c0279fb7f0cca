"""Reading a batch's outputs as the caller asked for them at deploy time."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from turnout.core.errors import InvalidConfigError
from turnout.core.execution.convert import ModelSignature, Task
from turnout.core.execution.runtime import RawOutput
from turnout.core.names import check_choice

__all__ = ["BatchOutput", "OutputDecoder", "OutputMode", "parse_output_mode"]


class OutputMode(StrEnum):
    """What ``predict`` returns for a deployment.

    ``AUTO``: the positive-class probability per row for a binary classifier,
    the (rows, classes) probability matrix for a multiclass one, the values
    for a regressor. ``LABEL``: predicted labels. ``PROBABILITIES``: the
    probability matrix, even for a binary classifier.
    """

    AUTO = "auto"
    LABEL = "label"
    PROBABILITIES = "probabilities"


def parse_output_mode(value: OutputMode | str | None) -> OutputMode:
    """Return ``value`` as an OutputMode (None means AUTO); raise InvalidConfigError if unknown."""
    return OutputMode.AUTO if value is None else check_choice("output", value, OutputMode)


@dataclass(frozen=True, slots=True)
class BatchOutput:
    """One batch's outputs: what ``predict`` returns, plus labels and scores for ``infer``."""

    primary: np.ndarray[Any, Any]
    labels: np.ndarray[Any, Any] | None
    scores: np.ndarray[Any, Any] | None


class OutputDecoder:
    """Turns a runtime's raw output into a deployment's BatchOutput, once per batch."""

    def __init__(self, signature: ModelSignature, mode: OutputMode | str | None) -> None:
        self.mode = parse_output_mode(mode)
        self.task = signature.task
        has_labels = signature.label_output is not None or signature.score_output is None
        has_scores = signature.score_output is not None
        if self.task is Task.REGRESSOR and self.mode is not OutputMode.AUTO:
            raise InvalidConfigError(f"output={self.mode.value!r} needs a classifier")
        if self.mode is OutputMode.LABEL and not has_labels:
            raise InvalidConfigError("output='label': this model has no label output")
        if self.mode is OutputMode.PROBABILITIES and not has_scores:
            raise InvalidConfigError("output='probabilities': this model has no probabilities")

    def decode(self, raw: RawOutput) -> BatchOutput:
        """Return the BatchOutput for ``raw``."""
        labels, scores = raw
        if self.task is Task.REGRESSOR:
            assert scores is not None
            values = scores[:, 0] if scores.ndim == 2 and scores.shape[1] == 1 else scores
            return BatchOutput(values, None, None)
        if self.mode is OutputMode.LABEL or scores is None:
            assert labels is not None
            return BatchOutput(labels, labels, scores)
        if self.mode is OutputMode.AUTO and scores.ndim == 2 and scores.shape[1] == 2:
            return BatchOutput(scores[:, 1], labels, scores)
        return BatchOutput(scores, labels, scores)
