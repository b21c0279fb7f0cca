"""What the MLflow plugin records about a deployment: run params, tags and metric values.

Pure functions of turnout's own objects, read on the event loop; nothing
here talks to MLflow, so the worker thread gets plain strings and floats.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from turnout.core.deployments.registry import Deployment
from turnout.core.execution.metrics import MetricsSnapshot
from turnout.core.routing.outcomes import ABComparison

__all__ = [
    "MAX_PARAM_LENGTH",
    "RunRecord",
    "comparison_metrics",
    "metric_values",
    "run_record",
    "tag_key",
]

# MLflow's limit on a param value since 2.x (mlflow/utils/validation.py,
# MAX_PARAM_VAL_LENGTH); tags allow 8000. Longer values are cut here rather
# than refused by the server, so a long feature list never loses a run.
MAX_PARAM_LENGTH = 6000
MAX_TAG_LENGTH = 8000

# Libraries whose versions decide what a deployment computes.
_LIBRARIES = ("turnout", "scikit-learn", "skl2onnx", "onnx", "onnxruntime", "numpy")

# MLflow accepts alphanumerics, '_', '-', '.', ' ', '/' (and ':' in newer
# releases) in keys; anything else in a metadata key is replaced.
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. /]")


@dataclass(frozen=True)
class RunRecord:
    """The params and tags a deployment's run starts with, and its ONNX model."""

    name: str
    params: Mapping[str, str]
    tags: Mapping[str, str]
    onnx_bytes: bytes | None
    features: tuple[str, ...] | None


def run_record(deployment: Deployment, *, active: bool) -> RunRecord:
    """Describe ``deployment`` as the params and tags of a new run."""
    loaded = deployment.loaded
    signature = loaded.signature
    estimator = loaded.estimator
    features = signature.feature_names
    params: dict[str, str] = {
        "model_id": deployment.model_id,
        "version": deployment.version,
        "source": loaded.source,
        "estimator_class": "onnx" if estimator is None else _class_name(estimator),
        "task": signature.task.value,
        "n_features": str(signature.n_features),
        "feature_names": _json(list(features) if features is not None else None),
        "classes": _json(list(signature.classes) if signature.classes is not None else None),
        "output_mode": deployment.decoder.mode.value,
        "runtime": "onnxruntime" if loaded.onnx_bytes is not None else "python (mock mode)",
        "error_threshold": str(deployment.error_threshold),
        "max_batch_rows": str(deployment.batcher.config.max_batch_rows),
    }
    for library in _LIBRARIES:
        params[f"{library}_version"] = _version(library)
    tags = {
        tag_key(key): _text(value, MAX_TAG_LENGTH) for key, value in deployment.metadata.items()
    }
    tags.update(
        {
            "turnout.model_id": deployment.model_id,
            "turnout.version": deployment.version,
            "turnout.status": "serving",
            "turnout.active": "true" if active else "false",
            "turnout.deployed_at": deployment.deployed_at.isoformat(),
        }
    )
    return RunRecord(
        name=f"{deployment.model_id}:{deployment.version}",
        params={key: _cut(value, MAX_PARAM_LENGTH) for key, value in params.items()},
        tags=tags,
        onnx_bytes=loaded.onnx_bytes,
        features=features,
    )


def metric_values(snapshot: MetricsSnapshot) -> dict[str, float]:
    """Return the serving metrics logged for a version at each sample."""
    return {
        "request_count": float(snapshot.request_count),
        "error_count": float(snapshot.error_count),
        "error_rate": snapshot.error_rate,
        "timeout_count": float(snapshot.timeout_count),
        "shed_count": float(snapshot.shed_count),
        "avg_latency_ms": snapshot.avg_latency_ms,
        "p50_latency_ms": snapshot.p50_latency_ms,
        "p95_latency_ms": snapshot.p95_latency_ms,
        "p99_latency_ms": snapshot.p99_latency_ms,
        "batches": float(snapshot.batches),
        "mean_batch_size": snapshot.mean_batch_size,
        "queue_depth": float(snapshot.queue_depth),
    }


def comparison_metrics(comparison: ABComparison) -> tuple[str, dict[str, float], dict[str, str]]:
    """Return the metric prefix, metrics and tags of an A/B comparison of versions a and b."""
    a, b = comparison.a, comparison.b
    prefix = f"ab.{a.version}_vs_{b.version}"
    values = {
        f"{prefix}.difference": comparison.difference,
        f"{prefix}.significant": 1.0 if comparison.significant else 0.0,
        f"{prefix}.{a.version}.count": float(a.count),
        f"{prefix}.{a.version}.mean": a.mean,
        f"{prefix}.{b.version}.count": float(b.count),
        f"{prefix}.{b.version}.mean": b.mean,
    }
    if comparison.p_value is not None:
        values[f"{prefix}.p_value"] = comparison.p_value
    if comparison.needed_per_version is not None:
        values[f"{prefix}.needed_per_version"] = float(comparison.needed_per_version)
    tags = {
        f"{prefix}.verdict": _cut(comparison.verdict, MAX_TAG_LENGTH),
        f"{prefix}.test": comparison.test,
    }
    return prefix, values, tags


def tag_key(key: str) -> str:
    """Return a metadata key as a valid MLflow tag key; ``mlflow.`` is MLflow's own namespace."""
    safe = _KEY_UNSAFE.sub("_", key) or "_"
    return f"metadata.{safe}" if safe.startswith("mlflow.") else safe


def _class_name(value: object) -> str:
    kind = type(value)
    return f"{kind.__module__}.{kind.__qualname__}"


@functools.cache
def _version(distribution: str) -> str:
    # Cached: a metadata lookup scans sys.path, and this runs on the event loop.
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def _json(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False)


def _text(value: Any, limit: int) -> str:
    return _cut(value if isinstance(value, str) else _json(value), limit)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 4] + " ..."
