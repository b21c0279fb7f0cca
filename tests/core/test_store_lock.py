"""Two processes on one repository: a server locks it, status only reads it.

A real second process holds the repository (this file run as a script),
so the lock is tested across processes as it is used, not only within one.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import turnout
from turnout import ModelServer, StoreError
from turnout.commands.status import collect_status
from turnout.core.execution.convert import load_model
from turnout.core.state.repository_lock import check_unlocked


@pytest.fixture(scope="module")
def onnx_bytes(logistic_model: Any) -> bytes:
    data = load_model(logistic_model).onnx_bytes
    assert data is not None
    return data


@contextmanager
def held(repository: Path) -> Iterator[int]:
    """A server in another process holds ``repository`` until the block ends; yield its pid."""
    env = {**os.environ, "PYTHONPATH": str(Path(turnout.__file__).parents[1])}
    with subprocess.Popen(
        [sys.executable, __file__, str(repository)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    ) as holder:
        assert holder.stdout is not None
        assert holder.stdin is not None
        try:
            assert holder.stdout.readline() == "ready\n"
            yield holder.pid
        finally:
            holder.stdin.close()  # the holder leaves its server's block and exits
            assert holder.wait(30) == 0


def files(root: Path) -> dict[str, tuple[bytes | None, int]]:
    """Every entry under ``root``, hidden ones included: its bytes (None for a dir), mtime."""
    return {
        str(path.relative_to(root)): (
            path.read_bytes() if path.is_file() else None,
            path.stat().st_mtime_ns,
        )
        for path in sorted(root.rglob("*"))
    }


async def test_a_second_server_on_a_repository_in_use_is_refused(
    tmp_path: Path, onnx_bytes: bytes
) -> None:
    repository = tmp_path / "repo"
    async with ModelServer(repository=repository, entry_points=False) as server:
        await server.deploy_model("m", "v1", onnx_bytes)
    with held(repository) as pid:
        with pytest.raises(StoreError) as refused:
            async with ModelServer(repository=repository, entry_points=False):
                pass
        message = str(refused.value)
        assert f"in use by a running server (pid {pid})" in message
        assert "turnout deploy --server" in message
        with pytest.raises(StoreError, match="in use by a running server"):
            check_unlocked(repository)
    # Released when the holder's server closed.
    check_unlocked(repository)
    async with ModelServer(repository=repository, entry_points=False) as server:
        assert server.active_models == {"m": "v1"}
        # The lock is per open, so a second server in this process is refused too.
        with pytest.raises(StoreError, match="in use"):
            async with ModelServer(repository=repository, entry_points=False):
                pass
    async with ModelServer(repository=repository, entry_points=False) as server:
        assert server.active_models == {"m": "v1"}
    assert [p.name for p in repository.iterdir() if p.name.startswith(".")] == [".lock"]


async def test_status_reads_a_repository_in_use_and_writes_nothing(
    tmp_path: Path, onnx_bytes: bytes
) -> None:
    repository = tmp_path / "repo"
    async with ModelServer(repository=repository, entry_points=False) as server:
        await server.deploy_model("m", "v1", onnx_bytes)
        await server.deploy_model("m", "v2", onnx_bytes, set_active=True)
    with held(repository):
        # What the live server would write, repair or remove at its next start:
        # a model put there by hand, and a write of its own in progress.
        (repository / "hand" / "3").mkdir(parents=True)
        (repository / "hand" / "3" / "model.onnx").write_bytes(onnx_bytes)
        staged = repository / "m" / ".v3.0000000000000000cafe.staged"
        staged.mkdir()
        (staged / "model.onnx").write_bytes(onnx_bytes)
        before = files(repository)
        status = await collect_status(repository=repository)
        assert files(repository) == before
    assert status["models"]["m"]["active"] == "v2"
    assert sorted(status["models"]["m"]["versions"]) == ["v1", "v2"]
    assert status["models"]["hand"]["active"] == "3"


async def test_status_of_a_missing_repository_says_so_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(StoreError, match=f"model repository {missing} does not exist"):
        await collect_status(repository=missing)
    assert not missing.exists()
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreError, match="is not a directory"):
        await collect_status(repository=tmp_path / "file")


async def test_a_read_only_server_serves_but_refuses_every_change(
    tmp_path: Path, onnx_bytes: bytes
) -> None:
    repository = tmp_path / "repo"
    async with ModelServer(repository=repository, entry_points=False) as server:
        await server.deploy_model("m", "v1", onnx_bytes)
    before = files(repository)
    reader = ModelServer(repository=repository, repository_read_only=True, entry_points=False)
    async with reader:
        assert reader.active_models == {"m": "v1"}
        with pytest.raises(StoreError, match="open read-only"):
            await reader.deploy_model("m", "v2", onnx_bytes)
        with pytest.raises(StoreError, match="open read-only"):
            await reader.retire_model("m", "v1")
    assert files(repository) == before


async def hold(repository: str) -> None:
    async with ModelServer(repository=repository, entry_points=False):
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.read)  # until the test closes our stdin


if __name__ == "__main__":
    asyncio.run(hold(sys.argv[1]))
