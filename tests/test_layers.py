"""The package's layers, as the import contracts in pyproject.toml state them.

``core`` imports nothing from the strategies, plugins, web or command line
that build on it; the rooms inside ``core`` depend one way; no package's
modules import each other in a cycle. ``lint-imports`` prints the same
report from the repository root.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from importlinter import cli

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    assert (
        cli.lint_imports(config_filename="pyproject.toml", no_cache=True) == cli.EXIT_STATUS_SUCCESS
    )
