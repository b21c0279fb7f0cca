"""Real services a benchmark runs beside turnout: a redis-server, and nginx in front of a fleet.

Each is started from a given binary (the Debian package's), in a directory
of its own, on a free loopback port, with nothing persisted; the test suite
finds or installs the binaries (``tests/services.py``).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks.servers import free_port

__all__ = ["UPSTREAM_HEADER", "Nginx", "RedisServer", "find_binary"]

# The header nginx adds to each answer: every upstream it tried, in order ("a, b").
UPSTREAM_HEADER = "X-Upstream"


def find_binary(name: str) -> str | None:
    """The path of the program ``name``: on the PATH, or in the sbin directories a PATH may lack."""
    search = os.pathsep.join([os.environ.get("PATH", os.defpath), "/usr/sbin", "/sbin"])
    return shutil.which(name, path=search)


def _wait_for(answers: Callable[[], bool], process: subprocess.Popen[bytes], name: str) -> None:
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        if answers():
            return
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}")
        time.sleep(0.02)
    raise RuntimeError(f"{name} did not answer within 10 s")


class RedisServer:
    """A real redis-server on a free loopback port, with no persistence; stop and start it."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
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
        _wait_for(self.ping, self._process, "redis-server")

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


class Nginx:
    """nginx on free loopback ports, balancing inference over ``upstreams`` (host:port each).

    Its health checks are open-source nginx's passive ones: an upstream that
    fails a connection or answers 502/503 is passed over for ``fail_timeout``
    and the request is sent to the next one (``proxy_next_upstream``, also
    for POSTs: inference is idempotent, so a retried request does no harm).
    Besides :attr:`url`, over all of them, it listens on one more port per
    upstream that balances over all the others (:meth:`url_without`), as if
    that one were drained, with no reload that would cut connections.
    """

    def __init__(
        self, binary: str, directory: Path, upstreams: Sequence[str], fail_timeout: float = 1.0
    ) -> None:
        self.binary = binary
        self.directory = directory
        self.upstreams = list(upstreams)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._without = {u: free_port() for u in self.upstreams}
        self.fail_timeout = fail_timeout
        self._process: subprocess.Popen[bytes] | None = None

    def url_without(self, upstream: str) -> str:
        """The address that balances over every upstream but ``upstream``."""
        return f"http://127.0.0.1:{self._without[upstream]}"

    def config(self) -> str:
        """Return nginx.conf's text."""
        d = self.directory
        # Run as root, nginx's workers would drop to "nobody", who cannot write its temp dirs.
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
        temp = "\n".join(
            f"  {kind}_temp_path {d / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        balances = [("all", self.port, self.upstreams)] + [
            (f"without{i}", port, [u for u in self.upstreams if u != excluded])
            for i, (excluded, port) in enumerate(self._without.items())
        ]
        blocks = "\n".join(self._balance(*balance) for balance in balances)
        return f"""{user}
worker_processes 1;
pid {d / "nginx.pid"};
error_log {d / "error.log"} warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
{temp}
{blocks}
}}
"""

    def _balance(self, name: str, port: int, upstreams: Sequence[str]) -> str:
        servers = "\n".join(
            f"    server {u} max_fails=1 fail_timeout={self.fail_timeout:g}s;" for u in upstreams
        )
        return f"""  upstream {name} {{
{servers}
    keepalive 64;
  }}
  server {{
    listen 127.0.0.1:{port};
    client_max_body_size 1m;
    location / {{
      proxy_pass http://{name};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_next_upstream error timeout http_502 http_503 non_idempotent;
      proxy_next_upstream_tries {len(upstreams)};
      proxy_next_upstream_timeout 5s;
      proxy_connect_timeout 250ms;
      proxy_read_timeout 10s;
      add_header {UPSTREAM_HEADER} $upstream_addr always;
    }}
  }}"""

    def start(self) -> None:
        """Write the configuration, check it, start nginx and wait until it accepts."""
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "nginx.conf"
        conf.write_text(self.config())
        base = [self.binary, "-p", str(self.directory), "-c", str(conf)]
        checked = subprocess.run([*base, "-t", "-q"], capture_output=True, text=True)
        if checked.returncode != 0:
            raise RuntimeError(f"nginx refused its configuration: {checked.stderr}")
        self._process = subprocess.Popen(
            [*base, "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_for(self._accepts, self._process, "nginx")

    def _accepts(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def error_log(self) -> str:
        """Return what nginx logged (upstreams it marked failed, among others)."""
        path = self.directory / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Stop nginx (SIGTERM: its fast stop; the load is over by then)."""
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            self._process = None
