"""Model ids and versions name directories: none of them reaches outside the repository."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from turnout import InvalidNameError, ModelServer, StoreError
from turnout.core.execution.convert import load_model
from turnout.core.names import MAX_NAME_LENGTH
from turnout.core.state.repository import ModelStore, check_path_name

MODEL = "games"

HOSTILE = [
    "..",
    ".",
    "../outside",
    "a/../../outside",
    "a/b",
    "a\\b",
    "..\\outside",
    "/etc/passwd",
    "/",
    "C:\\Windows",
    "C:",
    "a\x00b",
    "\x00",
    ".hidden",
    ".v1.0123456789abcdef01234567.staged",
    "",
    " v1",
    "v1\n",
    "~root",
    "%2e%2e",
    "x" * (MAX_NAME_LENGTH + 1),
]


def server(repository: Path) -> ModelServer:
    return ModelServer(repository=repository, entry_points=False, seed=0)


@pytest.fixture(scope="module")
def onnx(logistic_model: Any) -> bytes:
    onnx_bytes = load_model(logistic_model).onnx_bytes
    assert onnx_bytes is not None
    return onnx_bytes


def everything_under(path: Path) -> set[Path]:
    return set(path.rglob("*"))


@pytest.mark.parametrize("name", HOSTILE)
async def test_a_hostile_name_is_refused_before_anything_is_written(
    tmp_path: Path, onnx: bytes, name: str
) -> None:
    repository = tmp_path / "repo"
    async with server(repository) as first:
        before = everything_under(tmp_path)
        with pytest.raises(InvalidNameError):
            await first.deploy_model(name, "v1", onnx)
        with pytest.raises(InvalidNameError):
            await first.deploy_model(MODEL, name, onnx)
        assert everything_under(tmp_path) == before
        assert not first.get_all_models_status()


@pytest.mark.parametrize("name", ["model.json", "MODEL.JSON", "Model.Json"])
async def test_a_version_cannot_take_the_name_of_the_models_state_file(
    tmp_path: Path, onnx: bytes, name: str
) -> None:
    async with server(tmp_path) as first:
        await first.deploy_model(MODEL, "v1", onnx)
        with pytest.raises(InvalidNameError, match="reserved"):
            await first.deploy_model(MODEL, name, onnx)
        # A model may have that name: model ids sit beside no file of that name.
        await first.deploy_model("model.json", "v1", onnx)
    async with server(tmp_path) as second:
        assert set(second.get_all_models_status()) == {MODEL, "model.json"}


async def test_the_longest_names_round_trip(tmp_path: Path, onnx: bytes) -> None:
    model_id, version = "m" * MAX_NAME_LENGTH, "v" * MAX_NAME_LENGTH
    async with server(tmp_path) as first:
        await first.deploy_model(model_id, version, onnx)
        await first.deploy_model(model_id, version, onnx, replace=True)
    async with server(tmp_path) as second:
        assert dict(second.active_models) == {model_id: version}


@given(model_id=st.text(max_size=140), version=st.text(max_size=140))
def test_a_name_is_refused_or_is_one_plain_directory_level(
    tmp_path_factory: pytest.TempPathFactory, model_id: str, version: str
) -> None:
    store = ModelStore(tmp_path_factory.getbasetemp() / "names")
    try:
        path = store.path(model_id, version)
    except InvalidNameError:
        assert refused("model_id", model_id) or refused("version", version)
        return
    assert path.parent.parent == store.root
    assert (path.parent.name, path.name) == (model_id, version)
    assert path.resolve() == path
    for name in (model_id, version):
        assert not name.startswith(".")
        assert not {"/", "\\", "\x00", ":"} & set(name)


def refused(kind: str, name: str) -> bool:
    try:
        check_path_name(kind, name)
    except InvalidNameError:
        return True
    return False


# -- what load() meets on disk ----------------------------------------------------------------


async def stored_model(tmp_path: Path, onnx: bytes, model_id: str = MODEL) -> Path:
    """A model stored elsewhere by a real server: something worth not loading."""
    async with server(tmp_path) as first:
        await first.deploy_model(model_id, "v1", onnx)
    return tmp_path / model_id


async def test_a_symlinked_model_directory_is_not_followed(
    tmp_path: Path, onnx: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    outside = await stored_model(tmp_path / "outside", onnx)
    repository = tmp_path / "repo"
    repository.mkdir()
    (repository / "escape").symlink_to(outside, target_is_directory=True)
    (repository / "alias").symlink_to(repository / "escape", target_is_directory=True)
    before = {p: p.stat().st_mtime_ns for p in everything_under(outside)}
    caplog.set_level(logging.WARNING, logger="turnout")
    async with server(repository) as second:
        assert not second.get_all_models_status()
        # Writing there is refused too: the write would land outside.
        with pytest.raises(StoreError, match="outside"):
            await second.deploy_model("escape", "v2", onnx)
    assert "escape" in caplog.text
    assert "symlink" in caplog.text
    assert {p: p.stat().st_mtime_ns for p in everything_under(outside)} == before


async def test_a_symlinked_version_directory_is_not_followed(
    tmp_path: Path, onnx: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    outside = await stored_model(tmp_path / "outside", onnx)
    repository = tmp_path / "repo"
    await stored_model(repository, onnx)
    (repository / MODEL / "v2").symlink_to(outside / "v1", target_is_directory=True)
    caplog.set_level(logging.WARNING, logger="turnout")
    async with server(repository) as second:
        assert list(second.get_all_models_status()[MODEL]) == ["v1"]
    assert "symlink" in caplog.text


@pytest.mark.parametrize("file", ["model.onnx", "deployment.json"])
async def test_a_symlinked_file_in_a_version_is_not_read(
    tmp_path: Path, onnx: bytes, file: str, caplog: pytest.LogCaptureFixture
) -> None:
    outside = await stored_model(tmp_path / "outside", onnx)
    repository = tmp_path / "repo"
    await stored_model(repository, onnx)
    await stored_model(repository, onnx, "other")
    target = repository / "other" / "v1" / file
    target.unlink()
    target.symlink_to(outside / "v1" / file)
    caplog.set_level(logging.WARNING, logger="turnout")
    async with server(repository) as second:
        assert list(second.get_all_models_status()) == [MODEL]
    assert "symlink" in caplog.text


async def test_hidden_entries_are_never_models_or_versions(tmp_path: Path, onnx: bytes) -> None:
    await stored_model(tmp_path, onnx)
    for hidden in (tmp_path / ".secret" / "v1", tmp_path / MODEL / ".v9"):
        hidden.mkdir(parents=True)
        (hidden / "model.onnx").write_bytes(onnx)
    async with server(tmp_path) as second:
        assert {m: list(vs) for m, vs in second.get_all_models_status().items()} == {MODEL: ["v1"]}
    # Not ours to clean up: only the names this store makes are removed.
    assert (tmp_path / ".secret" / "v1" / "model.onnx").is_file()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
async def test_a_pipe_named_model_onnx_does_not_hang_the_start(
    tmp_path: Path, onnx: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    await stored_model(tmp_path, onnx)
    (tmp_path / "pipe" / "v1").mkdir(parents=True)
    os.mkfifo(tmp_path / "pipe" / "v1" / "model.onnx")
    caplog.set_level(logging.WARNING, logger="turnout")
    async with server(tmp_path) as second:
        assert list(second.get_all_models_status()) == [MODEL]
    assert "regular file" in caplog.text
