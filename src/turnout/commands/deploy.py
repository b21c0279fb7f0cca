"""``turnout deploy``: convert a model file locally, then upload it or store it in a repository."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from turnout.admin_client import AdminClient
from turnout.commands.local_model import ModelFile, read_model_file
from turnout.core.service.server import ModelServer
from turnout.core.state.repository_lock import check_unlocked

__all__ = ["run_deploy"]


class Progress:
    """One line per long step, finished with how long it took: 'converting... done (1.2 s)'."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._started = 0.0

    def start(self, what: str) -> None:
        """Say that a step began."""
        self._started = time.perf_counter()
        print(f"{what} ...", end="", file=self.stream, flush=True)

    @property
    def stream(self) -> TextIO:
        """Where the lines go: the stream given, else the current sys.stderr."""
        return self._stream or sys.stderr

    def done(self, note: str = "done") -> None:
        """Finish the step's line."""
        seconds = time.perf_counter() - self._started
        print(f" {note} ({seconds:.1f} s)", file=self.stream, flush=True)


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


async def run_deploy(
    path: Path,
    model_id: str,
    version: str,
    options: Mapping[str, Any],
    *,
    server_url: str | None = None,
    token: str | None = None,
    repository: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Deploy the model file at ``path`` to a running server or into a repository directory.

    Returns the deployed version's status. The file is read and converted
    here; only ONNX bytes are sent or stored. A repository that a running
    server holds is refused (StoreError), before the file is converted.
    """
    progress = progress or Progress()
    if repository is not None:
        check_unlocked(repository)
    progress.start(f"reading {path.name}")
    model = read_model_file(path)
    progress.done(f"{_size(len(model.onnx_bytes))} of ONNX from {model.source}")
    options = _with_features(options, model)
    if server_url is not None:
        progress.start(f"uploading to {server_url}")
        async with AdminClient(server_url, token) as client:
            answer = await client.deploy(model_id, version, model.onnx_bytes, **options)
        progress.done()
        status: dict[str, Any] = answer["status"]
        return status
    assert repository is not None
    progress.start(f"deploying into {repository}")
    async with ModelServer(repository=repository) as server:
        await server.deploy_model(model_id, version, model.onnx_bytes, **options)
        status = server.get_all_models_status()[model_id][version]
    progress.done()
    return status


def _with_features(options: Mapping[str, Any], model: ModelFile) -> dict[str, Any]:
    """The options, with the feature names the model was fitted with unless given."""
    merged = dict(options)
    if merged.get("features") is None and model.features is not None:
        merged["features"] = list(model.features)
    return {key: value for key, value in merged.items() if value is not None}
