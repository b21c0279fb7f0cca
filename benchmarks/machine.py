"""What the numbers depend on: the machine, the software versions, the code measured; and saving.

Every report names these at its top, so a result can be told apart from one
measured on other hardware or other code.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import platform
import subprocess
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import turnout

__all__ = ["PACKAGES", "RESULTS_DIR", "load_average", "machine_info", "stamp", "write_atomic"]

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PACKAGES = ("onnxruntime", "numpy", "scikit-learn", "skl2onnx", "turnout")


def load_average() -> str:
    """Return the 1, 5 and 15 minute load averages, formatted."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def machine_info(
    load_at_start: str, packages: Sequence[str] = PACKAGES, usable: int | None = None
) -> list[tuple[str, str]]:
    """Return the facts about this machine and its software that the numbers depend on.

    ``usable``: the cores this process could use, counted before it pinned itself
    to one (counted now if not given).
    """
    if usable is None:
        usable = (
            len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        )
    return [
        ("CPU", _cpu_model()),
        ("Cores", f"{os.cpu_count()} logical, {usable} usable by this process"),
        ("Load average (1, 5, 15 min) at start / at end", f"{load_at_start} / {load_average()}"),
        ("OS", platform.platform()),
        ("Python", f"{platform.python_version()} ({platform.python_implementation()})"),
        *((name, package_version(name)) for name in packages),
        ("turnout source", _source_state()),
    ]


def _source_state() -> str:
    """Identify the turnout code measured: git commit, dirty flag and a hash of its sources."""
    package = Path(turnout.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    git = ["git", "-C", str(package)]
    try:
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", "."], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return f"sources sha256 {digest.hexdigest()[:12]}"
    state = " + uncommitted changes" if dirty else ""
    return f"commit {head}{state}; sources sha256 {digest.hexdigest()[:12]}"


def _cpu_model() -> str:
    """Return the CPU model name from /proc/cpuinfo, or what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def package_version(package: str) -> str:
    """Return an installed package's version, or "not installed"."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def stamp() -> str:
    """Return a filesystem-safe local timestamp."""
    return dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, so no half report is left."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if isinstance(data, bytes):
        tmp.write_bytes(data)
    else:
        tmp.write_text(data)
    tmp.replace(path)
