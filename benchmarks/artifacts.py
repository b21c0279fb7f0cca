"""The model every HTTP benchmark serves, and the files each server loads it from.

One RandomForest (100 trees, depth 12, 20 features), fitted once per run and
handed to every server in the form it reads: a turnout model repository per
turnout configuration (filled by an in-process ``ModelServer(repository=...)``,
exactly as a user would), and a joblib file for MLServer's sklearn runtime.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from turnout import BatchingConfig, ModelServer, RoutingConfig

__all__ = [
    "MODEL",
    "ROUTING_MODELS",
    "Artifacts",
    "build_artifacts",
    "fit_model",
    "model_text",
]

MODEL = "rf"
VERSION = "v1"  # the version of MODEL every turnout repository serves
N_FEATURES = 20

# Routing scenarios, each its own model (versions v1 and v2, the same forest) in one server.
ROUTING_MODELS: dict[str, RoutingConfig] = {
    "active": RoutingConfig("active"),
    "weighted": RoutingConfig("weighted", {"versions": ["v1", "v2"], "weights": [0.5, 0.5]}),
    "sticky": RoutingConfig("sticky", {"versions": ["v1", "v2"], "weights": [0.5, 0.5]}),
    "shadow": RoutingConfig("shadow", {"primary": "v1", "mirrors": {"v2": 1.0}}),
    "shadow_slow": RoutingConfig("shadow", {"primary": "v1", "mirrors": {"v2": 1.0}}),
    "shadow_fail": RoutingConfig("shadow", {"primary": "v1", "mirrors": {"v2": 1.0}}),
}


@dataclass(frozen=True)
class Artifacts:
    """Where each server finds the model, and rows to send it."""

    adaptive_repo: Path
    off_repo: Path
    threaded_repo: Path  # adaptive, every batch on the worker thread (no inline batches)
    routing_repo: Path
    joblib_path: Path
    rows: np.ndarray[Any, Any]  # float32, distinct request rows the clients cycle through

    @property
    def onnx_path(self) -> Path:
        """Return the model file turnout adaptive serves, where its repository keeps it."""
        return self.adaptive_repo / MODEL / VERSION / "model.onnx"


def model_text(trees: int, depth: int) -> str:
    """Describe the benchmark's model."""
    return (
        f"RandomForestClassifier(n_estimators={trees}, max_depth={depth}) on"
        f" make_classification(n_samples=5000, n_features={N_FEATURES}, random_state=0)"
    )


def fit_model(n_samples: int = 5000, trees: int = 100, depth: int = 12) -> tuple[Any, Any]:
    """Return the fitted forest and its float32 training rows."""
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    X, y = make_classification(n_samples=n_samples, n_features=N_FEATURES, random_state=0)
    model = RandomForestClassifier(n_estimators=trees, max_depth=depth, random_state=0)
    model.fit(X, y)
    return model, X.astype(np.float32)


def build_artifacts(workdir: Path, *, trees: int = 100, depth: int = 12) -> Artifacts:
    """Fit the model and write every server's copy of it under ``workdir``."""
    import joblib

    model, X = fit_model(trees=trees, depth=depth)
    workdir.mkdir(parents=True, exist_ok=True)
    artifacts = Artifacts(
        adaptive_repo=workdir / "turnout-adaptive",
        off_repo=workdir / "turnout-off",
        threaded_repo=workdir / "turnout-threaded",
        routing_repo=workdir / "turnout-routing",
        joblib_path=workdir / "mlserver" / "rf" / "model.joblib",
        rows=np.ascontiguousarray(X[:256]),
    )
    asyncio.run(_fill_repositories(model, artifacts))
    artifacts.joblib_path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, artifacts.joblib_path)
    return artifacts


async def _fill_repositories(model: Any, artifacts: Artifacts) -> None:
    """Deploy into fresh repositories: batching on, off, on without inline batches, and routing."""
    for repo, batching in (
        (artifacts.adaptive_repo, BatchingConfig()),
        (artifacts.off_repo, BatchingConfig(max_batch_rows=1)),
        (artifacts.threaded_repo, BatchingConfig(inline_batch_ms=0.0)),
    ):
        _empty(repo)
        async with ModelServer(repository=repo) as server:
            await server.deploy_model(MODEL, VERSION, model, batching=batching)
    _empty(artifacts.routing_repo)
    async with ModelServer(repository=artifacts.routing_repo) as server:
        for name, routing in ROUTING_MODELS.items():
            await server.deploy_model(name, "v1", model)
            await server.deploy_model(name, "v2", model, set_active=False)
            await server.set_routing(name, routing)


def _empty(path: Path) -> None:
    """Remove a previous run's repository, so the server serves exactly what this run deploys."""
    import shutil

    shutil.rmtree(path, ignore_errors=True)
