"""Fixtures for the MLflow tests: a real tracking store on SQLite, and a local artifact dir."""

from __future__ import annotations

import importlib
import re
import socket
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# One database for the session: creating MLflow's tables costs about two
# seconds, while an experiment per test costs milliseconds and isolates as well.


@dataclass(frozen=True)
class Tracking:
    """A tracking store, an experiment of the test's own in it, and a client to read it back."""

    uri: str
    experiment: str
    experiment_id: str
    artifacts: Path
    client: Any

    def runs(self) -> dict[str, Any]:
        """Return the experiment's runs by run name."""
        found = self.client.search_runs([self.experiment_id])
        return {run.info.run_name: run for run in found}


@pytest.fixture(scope="session")
def mlflow_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory of the session's tracking database and artifacts."""
    # Some MLflow modules warn while they are imported (mlflow.pyfunc infers
    # schemas from its own type hints); under filterwarnings=error that would
    # fail whichever test imports them first, half-importing them. Imported
    # once here, with those warnings ignored; every later warning still fails.
    # Likewise MLflow's SQLite store, the first time one is made in a process:
    # it configures its mappers with a loader that SQLAlchemy 2.1 deprecates.
    root = tmp_path_factory.mktemp("mlflow")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        importlib.import_module("mlflow.pyfunc")
        importlib.import_module("mlflow.onnx")
        importlib.import_module("mlflow.sklearn")
        from mlflow import MlflowClient

        MlflowClient(tracking_uri=_store_uri(root)).search_experiments()
    return root


def _store_uri(root: Path) -> str:
    return f"sqlite:///{root / 'mlflow.db'}"


@pytest.fixture
def tracking(
    mlflow_root: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Tracking:
    """MLFLOW_TRACKING_URI pointed at the session's SQLite store, and a fresh experiment."""
    from mlflow import MlflowClient

    uri = _store_uri(mlflow_root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    # Anything MLflow would write beside the process lands in the test's directory.
    monkeypatch.chdir(mlflow_root)
    name = re.sub(r"[^A-Za-z0-9_]", "_", request.node.name)[:60] + "_" + uuid.uuid4().hex[:6]
    artifacts = mlflow_root / "artifacts" / name
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment(name, artifact_location=artifacts.as_uri())
    return Tracking(uri, name, experiment_id, artifacts, client)


@pytest.fixture
def closed_port() -> int:
    """A loopback port that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _eventually(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Return ``check()`` once it is truthy, polling; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {check}")
        time.sleep(0.05)


@pytest.fixture
def eventually() -> Callable[..., Any]:
    """Poll a check until it is truthy: MLflow is written by a worker thread."""
    return _eventually
