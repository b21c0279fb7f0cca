"""What the model repository stores, as records: a version's ONNX and options, a model's state.

The server maps its live objects to records to store them, and records back
to ``deploy_model`` options when it restores; deployment.json is a version
record's JSON form.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any

import numpy as np

from turnout.core.deployments.registry import Deployment
from turnout.core.errors import StoreError, TurnoutError
from turnout.core.execution.batching import BatchingConfig
from turnout.core.execution.onnx_inputs import servable_onnx
from turnout.core.resilience.breaker import BreakerConfig
from turnout.core.resilience.fallback import Fallback
from turnout.core.state.repository_files import dump_json

__all__ = [
    "ModelRecord",
    "VersionRecord",
    "breaker_to_dict",
    "deploy_keywords",
    "deployment_json",
    "deployment_options",
    "fallback_from_dict",
    "fallback_to_dict",
    "restore_fallback",
    "stored_version",
    "version_record",
]

logger = logging.getLogger("turnout")


@dataclass(frozen=True)
class VersionRecord:
    """One stored version: its ONNX bytes and the options it was deployed with.

    ``onnx_bytes`` is what to deploy; ``sha256`` is the checksum of the
    stored file (they differ only for a model found with one input per
    feature, which is served through one merged input). A version ``found``
    without deployment.json has None for the options that the server's
    defaults fill in.
    """

    model_id: str
    version: str
    onnx_bytes: bytes
    sha256: str
    metadata: Mapping[str, Any]
    features: tuple[str, ...] | None
    output: str
    batching: Mapping[str, Any] | None
    allow_nan: bool
    error_threshold: float | None
    breaker: Mapping[str, Any] | None
    deployed_at: str | None
    source: str | None
    found: bool = False

    @classmethod
    def found_on_disk(cls, model_id: str, version: str, onnx_file: bytes) -> VersionRecord:
        """Return the record of a model.onnx put in the repository by hand, with defaults.

        Its features are the input names when the model has one input per
        feature, else none; the output mode is inferred as for any ONNX deploy.
        """
        onnx_bytes, features = servable_onnx(onnx_file)
        return cls(
            model_id=model_id,
            version=version,
            onnx_bytes=onnx_bytes,
            sha256=hashlib.sha256(onnx_file).hexdigest(),
            metadata={},
            features=features,
            output="auto",
            batching=None,
            allow_nan=False,
            error_threshold=None,
            breaker=None,
            deployed_at=None,
            source=None,
            found=True,
        )

    def restore_identity(self, deployment: Deployment) -> None:
        """Give a redeployed version its original source and deployment time."""
        if self.source is not None:
            deployment.loaded = replace(deployment.loaded, source=self.source)
        if self.deployed_at is not None:
            with contextlib.suppress(ValueError):
                deployment.deployed_at = datetime.fromisoformat(self.deployed_at)

    def options(self) -> dict[str, Any]:
        """Return the ``deploy_model`` keyword arguments that redeploy this version."""
        return deploy_keywords(
            self.metadata,
            {
                "features": list(self.features) if self.features is not None else None,
                "output": self.output,
                "batching": self.batching,
                "allow_nan": self.allow_nan,
                "error_threshold": self.error_threshold,
                "breaker": self.breaker,
            },
        )


@dataclass(frozen=True)
class ModelRecord:
    """One stored model: active version, routing and fallback (as plain data), versions.

    ``stored`` is False when the model has no model.json (it was put in the
    repository by hand, or a crash came before its first state was written).
    ``named`` is every version the state refers to (active, routed to,
    fallback): model.json is written only once each of them is stored.
    """

    model_id: str
    active: str | None
    routing: Mapping[str, Any]
    fallback: Mapping[str, Any] | None
    versions: tuple[VersionRecord, ...] = ()
    stored: bool = True
    named: frozenset[str] = frozenset()


# -- mapping between live objects and records --------------------------------------------


def deployment_options(deployment: Deployment) -> dict[str, Any]:
    """Return the options a version was deployed with, as plain data (features, output, ...)."""
    names = deployment.schema.feature_names
    return {
        "features": list(names) if names is not None else None,
        "output": deployment.decoder.mode.value,
        "batching": batching_to_dict(deployment.batcher.config),
        "allow_nan": deployment.schema.allow_nan,
        "error_threshold": deployment.error_threshold,
        "breaker": breaker_to_dict(deployment.breaker.config),
    }


def deploy_keywords(metadata: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
    """Return the ``deploy_model`` keywords that redeploy a version from its plain-data options."""
    batching, breaker = options.get("batching"), options.get("breaker")
    return {
        "metadata": dict(metadata),
        "features": options.get("features"),
        "output": options.get("output"),
        "batching": None if batching is None else BatchingConfig(**batching),
        "allow_nan": bool(options.get("allow_nan", False)),
        "error_threshold": options.get("error_threshold"),
        "breaker": None if breaker is None else BreakerConfig(**breaker),
    }


def version_record(deployment: Deployment) -> VersionRecord:
    """Return the record that stores ``deployment``; raise StoreError if it has no ONNX."""
    onnx_bytes = deployment.loaded.onnx_bytes
    if onnx_bytes is None:
        raise StoreError(f"{deployment.model_id}:{deployment.version} has no ONNX form to store")
    options = deployment_options(deployment)
    features = options["features"]
    return VersionRecord(
        model_id=deployment.model_id,
        version=deployment.version,
        onnx_bytes=onnx_bytes,
        sha256=hashlib.sha256(onnx_bytes).hexdigest(),
        metadata=dict(deployment.metadata),
        features=tuple(features) if features is not None else None,
        output=options["output"],
        batching=options["batching"],
        allow_nan=options["allow_nan"],
        error_threshold=options["error_threshold"],
        breaker=options["breaker"],
        deployed_at=deployment.deployed_at.isoformat(),
        source=deployment.loaded.source,
    )


def batching_to_dict(config: BatchingConfig) -> dict[str, Any]:
    """Return a BatchingConfig as plain data: the fields set away from their defaults.

    A field added in a later release, left at its default, is then never
    written, so the release before it still restores the repository.
    """
    return {
        f.name: getattr(config, f.name)
        for f in fields(config)
        if getattr(config, f.name) != f.default
    }


def breaker_to_dict(config: BreakerConfig) -> dict[str, Any]:
    """Return a BreakerConfig as plain data (``asdict`` cannot copy its read-only params)."""
    data = {f.name: getattr(config, f.name) for f in fields(config)}
    data["params"] = dict(config.params)
    return data


def fallback_to_dict(fallback: Fallback | None) -> dict[str, Any] | None:
    """Return a Fallback as plain data, or None."""
    if fallback is None:
        return None
    if fallback.version is not None:
        return {"version": fallback.version}
    return {"value": np.asarray(fallback.value, dtype=np.float64).tolist()}


def fallback_from_dict(data: Mapping[str, Any] | None) -> Fallback | None:
    """Build a Fallback from :func:`fallback_to_dict` output."""
    if data is None:
        return None
    return Fallback(version=data.get("version"), value=data.get("value"))


def restore_fallback(record: ModelRecord, versions: Mapping[str, object]) -> Fallback | None:
    """Return the stored fallback if it still fits the model's versions, else log and drop it."""
    try:
        fallback = fallback_from_dict(record.fallback)
    except (TurnoutError, AttributeError, TypeError) as exc:
        logger.warning("stored fallback of %s is refused (%s); dropped", record.model_id, exc)
        return None
    if fallback is not None and fallback.version is not None and fallback.version not in versions:
        logger.warning(
            "stored fallback %s of %s is gone; dropped", fallback.version, record.model_id
        )
        return None
    return fallback


def deployment_json(record: VersionRecord, sha256: str) -> bytes:
    """Return the deployment.json of a version record whose model.onnx has ``sha256``."""
    return dump_json(
        {
            "metadata": dict(record.metadata),
            "features": list(record.features) if record.features is not None else None,
            "output": record.output,
            "batching": dict(record.batching or {}),
            "allow_nan": record.allow_nan,
            "error_threshold": record.error_threshold,
            "breaker": dict(record.breaker or {}),
            "deployed_at": record.deployed_at,
            "source": record.source,
            "sha256": sha256,
        }
    )


def stored_version(
    model_id: str, version: str, onnx_file: bytes, sha256: str, data: Mapping[str, Any]
) -> VersionRecord:
    """Return the record of a stored version from its model.onnx and deployment.json data."""
    features = data["features"]
    # A version found with one input per feature is stored as found: merge again.
    onnx_bytes, _ = servable_onnx(onnx_file) if features is not None else (onnx_file, None)
    deployed_at = data["deployed_at"]
    return VersionRecord(
        model_id=model_id,
        version=version,
        onnx_bytes=onnx_bytes,
        sha256=sha256,
        metadata=dict(data["metadata"]),
        features=tuple(features) if features is not None else None,
        output=str(data["output"]),
        batching=dict(data["batching"]),
        allow_nan=bool(data["allow_nan"]),
        error_threshold=float(data["error_threshold"]),
        breaker=dict(data["breaker"]),
        deployed_at=None if deployed_at is None else str(deployed_at),
        source=None if data["source"] is None else str(data["source"]),
    )
