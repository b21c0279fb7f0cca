"""``turnout serve --model NAME=PATH``: model files a server deploys at start, as KServe runs one.

KServe's storage initializer downloads an InferenceService's ``storageUri``
into ``/mnt/models`` and starts the runtime with the service's name; the
runtime serves that one model. A file served this way is deployed once per
control state: a server that finds the version already there with the same
bytes (restored from its repository, or deployed by another server sharing
its state) leaves it alone, and replaces it when the file has changed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from turnout.core.errors import InvalidNameError, ModelNotFoundError
from turnout.core.names import check_name

if TYPE_CHECKING:  # the command line parses --model without loading ONNX Runtime
    from turnout.core.service.server import ModelServer

__all__ = ["DEFAULT_VERSION", "ServedModel", "deploy_served_models", "parse_served_model"]

# The version a file is served as when its --model names none: KServe's V2 paths carry none.
DEFAULT_VERSION = "1"

logger = logging.getLogger("turnout")


@dataclass(frozen=True)
class ServedModel:
    """A model file to deploy at start: served as ``version`` of ``name``."""

    name: str
    path: Path
    version: str = DEFAULT_VERSION

    def __post_init__(self) -> None:
        check_name("model name", self.name)
        check_name("version", self.version)


def parse_served_model(text: str) -> ServedModel:
    """Parse ``NAME=PATH`` or ``NAME:VERSION=PATH``; InvalidNameError for anything else."""
    target, sep, path = text.partition("=")
    if not sep or not target or not path:
        raise InvalidNameError(f"expected NAME=PATH or NAME:VERSION=PATH, got {text!r}")
    name, colon, version = target.partition(":")
    if colon and not version:
        raise InvalidNameError(f"{text!r} names no version after ':'")
    return ServedModel(name, Path(path), version or DEFAULT_VERSION)


async def deploy_served_models(
    server: ModelServer, models: Sequence[ServedModel], *, allow_pickle: bool = False
) -> None:
    """Deploy each of ``models`` unless the server already has that version with those bytes.

    Raises ConversionError for a file that cannot be read or converted, a
    pickle without ``allow_pickle`` among them.
    """
    from turnout.commands.local_model import find_model_file, read_model_file

    for model in models:
        file = read_model_file(find_model_file(model.path, allow_pickle=allow_pickle))
        if _serves(server, model, file.onnx_bytes):
            continue
        # Two servers starting at once may both get here: they write the same bytes.
        await server.deploy_model(
            model.name, model.version, file.onnx_bytes, features=file.features, replace=True
        )
        logger.info("serving %s as %s:%s", model.path, model.name, model.version)


def _serves(server: ModelServer, model: ServedModel, onnx_bytes: bytes) -> bool:
    try:
        deployment = server.get_deployment(model.name, model.version)
    except ModelNotFoundError:
        return False
    return deployment.loaded.onnx_bytes == onnx_bytes
