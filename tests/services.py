"""Real services the tests run against, found or installed: Redis, nginx and Chromium.

The README's test command installs what is missing: a service's Debian
package is installed with ``apt-get install -y`` when the tests run as root
and it is not on the PATH. Under ``CI=true`` a service that is still missing
fails the run; elsewhere its tests are skipped, with the command to run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from benchmarks.daemons import RedisServer as RedisProcess
from benchmarks.daemons import find_binary
from benchmarks.servers import free_port

__all__ = [
    "RedisServer",
    "chromium_binaries",
    "free_port",
    "nginx_binary",
    "redis_binary",
    "require_binary",
]


def require_binary(name: str, package: str) -> str:
    """Return the path of ``name``, installing Debian's ``package`` if it is missing."""
    found = find_binary(name)
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", package]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        if subprocess.run(install, capture_output=True, env=env).returncode != 0:
            # A fresh machine's package lists may be empty or stale.
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env)
            subprocess.run(install, capture_output=True, env=env)
        found = find_binary(name)
    if found is not None:
        return found
    message = f"{name} is missing: apt-get install -y {package}"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def redis_binary() -> str:
    """Return the redis-server binary, installing Debian's package if it is missing."""
    return require_binary("redis-server", "redis-server")


class RedisServer(RedisProcess):
    """A real redis-server on a free loopback port, with no persistence; stop and start it."""

    def __init__(self, directory: Path) -> None:
        super().__init__(redis_binary(), directory)


def nginx_binary() -> str:
    """Return the nginx binary, installing Debian's package if it is missing."""
    return require_binary("nginx", "nginx")


def chromium_binaries() -> tuple[str, str]:
    """Return (chromium, chromedriver), installing Debian's packages if they are missing."""
    driver = require_binary("chromedriver", "chromium-driver")  # it brings chromium
    return require_binary("chromium", "chromium"), driver
