"""Every write of the repository, cut short at every step: the old state or the new survives.

A crash is simulated in-process: the n-th file-system mutation, and every one
after it (the process is dead), raises ``Crash``, which no cleanup handler
catches. The file write being cut short leaves half its bytes, as a torn
write would. Then a fresh ModelStore loads what is on disk.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from turnout.core.state import repository as store_module
from turnout.core.state.repository import ModelStore
from turnout.core.state.repository_records import ModelRecord, VersionRecord

MODEL = "games"


class Crash(BaseException):
    """The process died here."""


class CrashAt:
    """Counts the store's file-system mutations; the n-th and every later one raise Crash."""

    def __init__(self, n: int | None) -> None:
        self.n = n
        self.steps = 0
        self.crashed = False

    def wrap(self, function: Callable[..., Any]) -> Callable[..., Any]:
        def step(*args: Any, **kwargs: Any) -> Any:
            self._tick()
            return function(*args, **kwargs)

        return step

    def torn_write(self, path: Path, data: bytes) -> None:
        """A file write that leaves half the bytes behind when it is the one that crashes."""
        if self.crashed:
            raise Crash
        self.steps += 1
        if self.steps == self.n:
            self.crashed = True
            path.write_bytes(data[: len(data) // 2])
            raise Crash
        original_write_new(path, data)

    def _tick(self) -> None:
        if self.crashed:
            raise Crash
        self.steps += 1
        if self.steps == self.n:
            self.crashed = True
            raise Crash


original_write_new = store_module.write_new


def crash_at(monkeypatch: pytest.MonkeyPatch, n: int | None) -> CrashAt:
    crash = CrashAt(n)
    for name in ("rename", "replace", "mkdir", "fsync", "unlink", "rmdir"):
        monkeypatch.setattr(os, name, crash.wrap(getattr(os, name)))
    monkeypatch.setattr(shutil, "rmtree", crash.wrap(shutil.rmtree))
    monkeypatch.setattr(store_module, "write_new", crash.torn_write)
    return crash


def record(version: str, generation: int, size: int = 4096) -> VersionRecord:
    """A version whose bytes and metadata tell which write produced it."""
    payload = bytes([generation % 256]) * size
    return VersionRecord(
        model_id=MODEL,
        version=version,
        onnx_bytes=payload,
        sha256=hashlib.sha256(payload).hexdigest(),
        metadata={"generation": generation},
        features=None,
        output="auto",
        batching={},
        allow_nan=False,
        error_threshold=0.5,
        breaker={},
        deployed_at="2025-01-01T00:00:00+00:00",
        source="onnx",
    )


def model_state(active: str | None) -> ModelRecord:
    return ModelRecord(MODEL, active, {"strategy": "active"}, None)


def stored(root: Path) -> dict[str, tuple[int, bool]]:
    """Load the repository: version -> (generation, found without deployment.json)."""
    records = ModelStore(root).load()
    return {
        v.version: (v.metadata.get("generation", -1), v.found) for r in records for v in r.versions
    }


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob(".*"))


def run_until_crash(
    monkeypatch: pytest.MonkeyPatch, n: int | None, write: Callable[[], None]
) -> CrashAt:
    crash = crash_at(monkeypatch, n)
    try:
        write()
    except Crash:
        assert crash.crashed
    finally:
        monkeypatch.undo()
    return crash


def every_step(
    monkeypatch: pytest.MonkeyPatch, prepare: Callable[[], None], write: Callable[[], None]
) -> Iterator[int]:
    """Yield n for a crash at each step of ``write``, after preparing afresh each time."""
    prepare()
    total = run_until_crash(monkeypatch, None, write).steps
    assert total > 3
    for n in range(1, total + 2):  # total + 1: the write completes
        prepare()
        run_until_crash(monkeypatch, n, write)
        yield n


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "repo"


def fresh(root: Path, *versions: VersionRecord, active: str | None = None) -> ModelStore:
    shutil.rmtree(root, ignore_errors=True)
    store = ModelStore(root)
    for version in versions:
        store.save_version(version)
    store.save_model(model_state(active))
    return store


def test_a_replaced_version_is_the_old_or_the_new_after_a_crash_at_any_step(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = set()
    for n in every_step(
        monkeypatch,
        lambda: fresh(root, record("v1", 1), record("v2", 7), active="v1"),
        lambda: ModelStore(root).save_version(record("v1", 2)),
    ):
        after = stored(root)
        assert after["v1"] in ((1, False), (2, False)), n
        assert after["v2"] == (7, False), n
        assert leftovers(root) == [], n
        assert stored(root) == after, n  # recovery is done once, then it is a plain load
        seen.add(after["v1"][0])
    assert seen == {1, 2}


def test_a_crash_while_recovering_a_crash_still_leaves_the_old_or_the_new(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def prepare() -> None:
        fresh(root, record("v1", 1), active="v1")

    prepare()
    total = run_until_crash(
        monkeypatch, None, lambda: ModelStore(root).save_version(record("v1", 2))
    ).steps
    for first in range(1, total + 1):
        prepare()
        run_until_crash(monkeypatch, first, lambda: ModelStore(root).save_version(record("v1", 2)))
        snapshot = root.with_name("snapshot")
        shutil.rmtree(snapshot, ignore_errors=True)
        shutil.copytree(root, snapshot, symlinks=True)
        recovery = run_until_crash(monkeypatch, None, lambda: ModelStore(root).load()).steps
        for second in range(1, recovery + 1):
            shutil.rmtree(root)
            shutil.copytree(snapshot, root, symlinks=True)
            run_until_crash(monkeypatch, second, lambda: ModelStore(root).load())
            assert stored(root)["v1"] in ((1, False), (2, False)), (first, second)
            assert leftovers(root) == [], (first, second)


def test_a_first_deploy_is_absent_or_whole_after_a_crash_never_found_bare(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in every_step(
        monkeypatch,
        lambda: fresh(root, record("v1", 1), active="v1"),
        lambda: ModelStore(root).save_version(record("v2", 2)),
    ):
        after = stored(root)
        # A bare model.onnx would be taken for one put there by hand, with default options.
        assert after.get("v2", (2, False)) == (2, False), n
        assert after["v1"] == (1, False), n
        assert leftovers(root) == [], n


def test_a_retired_version_is_gone_or_intact_after_a_crash(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in every_step(
        monkeypatch,
        lambda: fresh(root, record("v1", 1), record("v2", 2), active="v1"),
        lambda: ModelStore(root).delete_version(MODEL, "v2"),
    ):
        after = stored(root)
        assert after.get("v2", (2, False)) == (2, False), n
        assert after["v1"] == (1, False), n
        assert leftovers(root) == [], n


def test_model_state_is_the_old_or_the_new_after_a_crash(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in every_step(
        monkeypatch,
        lambda: fresh(root, record("v1", 1), record("v2", 2), active="v1"),
        lambda: ModelStore(root).save_model(model_state("v2")),
    ):
        (model,) = ModelStore(root).load()
        assert model.active in ("v1", "v2"), n
        assert leftovers(root) == [], n


def test_a_failed_swap_puts_the_old_version_back(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh(root, record("v1", 1), active="v1")
    rename = os.rename

    def refuse_the_new_one(src: Any, dst: Any) -> None:
        if Path(src).name.endswith(".staged"):
            raise OSError("no space left on device")
        rename(src, dst)

    monkeypatch.setattr(os, "rename", refuse_the_new_one)
    with pytest.raises(OSError, match="no space"):
        ModelStore(root).save_version(record("v1", 2))
    monkeypatch.undo()
    assert leftovers(root) == []
    assert stored(root)["v1"] == (1, False)


def test_a_leftover_of_a_failed_write_cannot_bring_a_retired_version_back(root: Path) -> None:
    store = fresh(root, record("v1", 1), record("v2", 2), active="v1")
    # What a swap whose clean-up failed leaves: the old copy, parked.
    parked = root / MODEL / ".v2.0000000000000001abcd.replaced"
    shutil.copytree(root / MODEL / "v2", parked)
    store.delete_version(MODEL, "v2")
    assert "v2" not in stored(root)
