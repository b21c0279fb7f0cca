"""The package's layers, as the import contracts in pyproject.toml state them.

``core`` imports nothing from the strategies, plugins, web or command line
that build on it; the rooms inside ``core`` depend one way; no package's
modules import each other in a cycle. ``lint-imports`` prints the same
report from the repository root.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# In a process of its own: import-linter configures logging, disabling every
# logger that exists, which would silence the loggers later tests read.
LINT = (
    "import sys; from importlinter import cli;"
    " sys.exit(cli.lint_imports(config_filename='pyproject.toml', no_cache=True))"
)


def test_import_contracts_are_kept() -> None:
    done = subprocess.run(
        [sys.executable, "-c", LINT], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout
