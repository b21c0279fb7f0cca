"""Real services the tests run against, found or installed: Redis, for now.

The README's test command installs what is missing: a service's Debian
package is installed with ``apt-get install -y`` when the tests run as root
and it is not on the PATH. Under ``CI=true`` a service that is still missing
fails the run; elsewhere its tests are skipped, with the command to run.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

__all__ = ["RedisServer", "free_port", "require_binary"]


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def require_binary(name: str, package: str) -> str:
    """Return the path of ``name``, installing Debian's ``package`` if it is missing."""
    found = shutil.which(name)
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", package]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        if subprocess.run(install, capture_output=True, env=env).returncode != 0:
            # A fresh machine's package lists may be empty or stale.
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env)
            subprocess.run(install, capture_output=True, env=env)
        found = shutil.which(name)
    if found is not None:
        return found
    message = f"{name} is missing: apt-get install -y {package}"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


class RedisServer:
    """A real redis-server on a free loopback port, with no persistence; stop and start it."""

    def __init__(self, directory: Path) -> None:
        self.binary = require_binary("redis-server", "redis-server")
        self.port = free_port()
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        command = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
        ]  # fmt: skip
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            if self.ping():
                return
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self._process.returncode}")
            time.sleep(0.02)
        raise RuntimeError("redis-server did not answer PING within 10 s")

    def ping(self) -> bool:
        """True if the server answers PING now."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the server (its data goes with it: nothing is persisted)."""
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            self._process = None
