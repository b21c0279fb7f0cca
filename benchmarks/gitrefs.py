"""Turnout's sources at a git ref, for before/after runs: check the ref, export its ``src/``.

``python -m benchmarks http --baseline REF`` and ``python -m benchmarks core
--baseline REF`` both run turnout from the sources of REF beside this tree's:
the ref's ``src/`` is exported with ``git archive`` and put first on the
``PYTHONPATH`` of the process that runs it, ahead of the installed (editable)
turnout. The benchmarks package itself always comes from this tree.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

__all__ = ["REPO", "describe", "export_sources", "known_ref"]

REPO = Path(__file__).resolve().parent.parent


def known_ref(ref: str) -> bool:
    """Say whether ``ref`` names a commit in this git repository."""
    check = ["git", "-C", str(REPO), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"]
    return subprocess.run(check, capture_output=True).returncode == 0


def describe(ref: str) -> str:
    """Return the short hash and subject of the commit ``ref`` names."""
    show = ["git", "-C", str(REPO), "log", "-1", "--format=%h %s", f"{ref}^{{commit}}"]
    return subprocess.run(show, capture_output=True, text=True, check=True).stdout.strip()


def export_sources(ref: str, root: Path) -> Path:
    """Export ``src/`` at ``ref`` into ``root`` (emptied first); return ``root / "src"``."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", ref, "src"],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
    return root / "src"
