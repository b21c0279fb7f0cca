"""Peer servers measured beside turnout: MLServer 1.x, in a virtualenv of its own.

``python -m benchmarks peers --setup`` creates ``benchmarks/.peers/mlserver``
and installs MLServer and its scikit-learn runtime there, never into
turnout's environment. uvloop is pinned below 0.22 in it: MLServer 1.7.1's
inference workers die at start under uvloop 0.23. ``peers`` alone says what
is set up. The HTTP benchmark serves the same forest (saved with joblib)
through MLServer's stock sklearn runtime, adaptive batching on and off.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import venv
from collections.abc import Sequence
from pathlib import Path

from benchmarks.servers import ServerSpec

__all__ = ["MLSERVER_VENV", "main", "mlserver_specs", "mlserver_version"]

PEERS_DIR = Path(__file__).resolve().parent / ".peers"
MLSERVER_VENV = PEERS_DIR / "mlserver"
MLSERVER_REQUIREMENTS = (
    "mlserver>=1.6,<2",
    "mlserver-sklearn>=1.6,<2",
    "uvloop<0.22",
    "joblib",
)
# MLServer's adaptive batching, at turnout's own batch bound; the wait is its knob.
MLSERVER_MAX_BATCH_SIZE = 64
MLSERVER_MAX_BATCH_TIME = 0.002


def _bin(name: str) -> Path:
    return MLSERVER_VENV / "bin" / name


def mlserver_version() -> str | None:
    """Return the MLServer version installed in its virtualenv, or None if not set up."""
    if not _bin("mlserver").exists():
        return None
    try:
        out = subprocess.run(
            [str(_bin("python")), "-c", "import mlserver; print(mlserver.__version__)"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def setup_mlserver() -> None:
    """Create the virtualenv and install MLServer with the scikit-learn turnout's models use."""
    from importlib import metadata

    print(f"creating {MLSERVER_VENV}", file=sys.stderr)
    venv.create(MLSERVER_VENV, with_pip=True, clear=True)
    # The same scikit-learn as here, so the joblib file written here loads there unchanged.
    sklearn = f"scikit-learn=={metadata.version('scikit-learn')}"
    command = [str(_bin("python")), "-m", "pip", "install", *MLSERVER_REQUIREMENTS, sklearn]
    print(" ".join(command), file=sys.stderr)
    subprocess.run(command, check=True)


def mlserver_specs(joblib_path: Path, workdir: Path) -> list[ServerSpec]:
    """Return MLServer with adaptive batching on and off, serving ``joblib_path`` as "rf"."""
    specs = []
    for name, batching in (("MLServer adaptive", True), ("MLServer batching off", False)):
        root = workdir / ("mlserver-adaptive" if batching else "mlserver-off")
        model_dir = root / "rf"
        model_dir.mkdir(parents=True, exist_ok=True)
        settings: dict[str, object] = {
            "name": "rf",
            "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": str(joblib_path)},
        }
        if batching:
            settings["max_batch_size"] = MLSERVER_MAX_BATCH_SIZE
            settings["max_batch_time"] = MLSERVER_MAX_BATCH_TIME
        (model_dir / "model-settings.json").write_text(json.dumps(settings, indent=2))
        # Ports are filled in at start; the server settings come from the environment.
        specs.append(
            ServerSpec(
                name=name,
                argv=(str(_bin("mlserver")), "start", str(root)),
                flavour="mlserver",
                ready_path="/v2/health/ready",
                env={
                    "MLSERVER_HTTP_PORT": "{port0}",
                    "MLSERVER_GRPC_PORT": "{port1}",
                    "MLSERVER_METRICS_PORT": "{port2}",
                    "MLSERVER_HOST": "127.0.0.1",
                    "PYTHONPATH": "",
                },
                ports=3,
                cwd=root,
            )
        )
    return specs


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks peers [--setup]``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks peers", description=__doc__)
    parser.add_argument("--setup", action="store_true", help="install MLServer in its virtualenv")
    args = parser.parse_args(argv)
    if args.setup:
        setup_mlserver()
    version = mlserver_version()
    if version is None:
        print(
            f"MLServer: not set up (run `python -m benchmarks peers --setup` to install it into"
            f" {MLSERVER_VENV})"
        )
        return 0 if not args.setup else 1
    print(f"MLServer {version}: {MLSERVER_VENV}")
    return 0
