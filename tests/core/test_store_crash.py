"""SIGKILL a real server process in the middle of deploys and routing changes, then restart.

The child process (this file run as a script) deploys new versions and
re-deploys old ones with ``replace=True``, changes active versions, routing
and fallbacks, and retires versions, against ``ModelServer(repository=DIR)``.
Before each operation it prints what it is about to do; after the operation
returned (every operation flushes the repository before it returns) it
prints the server's state, which is from then on acknowledged as durable.
The test kills it at a random moment, restarts from DIR in this process and
checks that the state is consistent, and that it is the last acknowledged
state but for what the operation in flight may have changed. The next child
starts from the same DIR, so recoveries follow recoveries.

A second child deploys a burst of new versions at once, each with
``set_active=True``, announcing every activation as it happens and every
deploy once it returned; killed in the middle of the burst, the restarted
server must hold every acknowledged version and an active version no older
than the last acknowledged one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pytest

import turnout
from turnout import Fallback, ModelServer, RoutingConfig, TurnoutError, hookimpl
from turnout.core.state.repository_records import fallback_to_dict

# Another seed explores other schedules: TURNOUT_CRASH_SEED=7 pytest tests/core/test_store_crash.py
SEED = int(os.environ.get("TURNOUT_CRASH_SEED", "20250605"))
ITERATIONS = 12
MODELS = ("alpha", "beta")
VERSIONS = ("v1", "v2", "v3")
MAX_OPERATIONS = 300
BURST = 40
# The kill comes right after this many deploys of the burst returned.
BURST_KILLS = (1, 3, 10, 25)

State = dict[str, dict[str, Any]]


def snapshot(server: ModelServer) -> State:
    """Per model: each version's generation (from its metadata), active, routing, fallback."""
    status = server.get_all_models_status()
    return {
        model_id: {
            "versions": {v: info["metadata"]["generation"] for v, info in versions.items()},
            "active": server.active_models.get(model_id),
            "routing": server.get_routing(model_id).to_dict(),
            "fallback": fallback_to_dict(server._fallbacks.get(model_id)),
        }
        for model_id, versions in sorted(status.items())
    }


# -- the child process ---------------------------------------------------------------------


def say(kind: str, body: object) -> None:
    print(json.dumps({"kind": kind, "body": body}), flush=True)


def choose(rng: random.Random, state: State, generation: int) -> dict[str, Any]:
    """An operation on the live state, as likely to be accepted as not."""
    model_id = rng.choice(MODELS)
    versions = sorted(state.get(model_id, {}).get("versions", {})) or list(VERSIONS)
    version, other = rng.choice(versions), rng.choice(VERSIONS)
    kind = rng.choices(
        ["deploy", "activate", "weighted", "canary", "active", "fallback", "retire"],
        weights=[8, 2, 2, 1, 1, 2, 3],
    )[0]
    op: dict[str, Any] = {"op": kind, "model": model_id, "version": version}
    if kind == "deploy":
        op.update(
            version=other,
            onnx=rng.randrange(2),
            generation=generation,
            set_active=rng.choice([None, True, False]),
        )
    elif kind in ("weighted", "canary"):
        op.update(other=other, weight=rng.choice([0.25, 0.5, 0.75]))
    elif kind == "fallback":
        op.update(fallback=rng.choice(["version", "value", None]))
    return op


async def perform(server: ModelServer, op: dict[str, Any], onnx: list[bytes]) -> None:
    model_id, version = op["model"], op["version"]
    kind = op["op"]
    if kind == "deploy":
        await server.deploy_model(
            model_id,
            version,
            onnx[op["onnx"]],
            metadata={"generation": op["generation"]},
            set_active=op["set_active"],
            replace=True,
        )
    elif kind == "activate":
        await server.set_active_version(model_id, version)
    elif kind == "weighted":
        params = {"versions": [version, op["other"]], "weights": [op["weight"], 1 - op["weight"]]}
        await server.set_routing(model_id, RoutingConfig("weighted", params))
    elif kind == "canary":
        await server.start_canary(model_id, op["other"], min_requests=10_000)
    elif kind == "active":
        await server.set_routing(model_id, RoutingConfig())
    elif kind == "fallback":
        fallback = {"version": Fallback(version=version), "value": Fallback(value=0.5)}
        await server.set_fallback(model_id, fallback.get(op["fallback"]))
    elif kind == "retire":
        await server.retire_model(model_id, version)


async def child(repository: str, onnx_dir: str, seed: int) -> None:
    rng = random.Random(seed)
    onnx = [(Path(onnx_dir) / f"{i}.onnx").read_bytes() for i in range(2)]
    async with ModelServer(repository=repository, entry_points=False, seed=seed) as server:
        state = snapshot(server)
        say("state", state)
        for number in range(MAX_OPERATIONS):
            op = choose(rng, state, generation=seed * 1000 + number)
            say("begin", op)
            with contextlib.suppress(TurnoutError):  # refused: nothing changed
                await perform(server, op, onnx)
            state = snapshot(server)
            say("state", state)


# -- the test ------------------------------------------------------------------------------


@dataclass
class Run:
    """What a killed child acknowledged: its last state, and the operation then in flight."""

    first: State | None
    acked: State | None
    in_flight: dict[str, Any] | None


def lines(stream: IO[str]) -> Iterator[dict[str, Any]]:
    for line in stream:
        yield json.loads(line)


def read_until_killed(
    process: subprocess.Popen[str], kill: float | int, rng: random.Random
) -> list[dict[str, Any]]:
    """Every message the child printed; it is killed after ``kill`` states or seconds."""
    assert process.stdout is not None
    if isinstance(kill, float):
        time.sleep(kill)  # anywhere, restore included
        process.send_signal(signal.SIGKILL)
    messages = []
    acked = 0
    for message in lines(process.stdout):
        messages.append(message)
        if message["kind"] == "state" and isinstance(kill, int):
            if acked == kill:
                time.sleep(rng.uniform(0, 0.03))
                process.send_signal(signal.SIGKILL)
            acked += 1
    process.wait()
    return messages


def run_child(repository: Path, onnx_dir: Path, seed: int, log: Path, kill: float | int) -> Run:
    """Start a child; kill it after ``kill`` acknowledged states (int) or seconds (float)."""
    env = {**os.environ, "PYTHONPATH": str(Path(turnout.__file__).parents[1])}
    with (
        log.open("ab") as errors,
        subprocess.Popen(
            [sys.executable, __file__, str(repository), str(onnx_dir), str(seed)],
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            env=env,
        ) as process,
    ):
        messages = read_until_killed(process, kill, random.Random(seed))
    assert process.returncode == -signal.SIGKILL, log.read_text()[-3000:]
    states = [m["body"] for m in messages if m["kind"] == "state"]
    last = max((i for i, m in enumerate(messages) if m["kind"] == "state"), default=-1)
    begun = [m["body"] for m in messages[last + 1 :] if m["kind"] == "begin"]
    return Run(
        first=states[0] if states else None,
        acked=states[-1] if states else None,
        in_flight=begun[0] if begun else None,
    )


def may_change(op: dict[str, Any] | None, model_id: str) -> set[str]:
    """What of a model the operation in flight could have changed when it was killed."""
    if op is None or op["model"] != model_id:
        return set()
    return {
        "deploy": {"active", "routing"},
        "activate": {"active", "routing"},
        "weighted": {"routing"},
        "canary": {"routing"},
        "active": {"routing"},
        "fallback": {"fallback"},
        "retire": {"active", "routing"},
    }[op["op"]]


EMPTY = {"versions": {}, "active": None, "routing": {"strategy": "active"}, "fallback": None}


def check_durable(restored: State, acked: State, op: dict[str, Any] | None) -> None:
    """What was acknowledged is there; what differs is what the operation in flight touched."""
    for model_id in sorted(set(restored) | set(acked)):
        before, after = acked.get(model_id, EMPTY), restored.get(model_id, EMPTY)
        for version in sorted(set(before["versions"]) | set(after["versions"])):
            old, new = before["versions"].get(version), after["versions"].get(version)
            if old == new:
                continue
            about_it = op is not None and (op["model"], op["version"]) == (model_id, version)
            assert about_it, (model_id, version, old, new, op)
            # A replaced version is the old one or the new one; never lost, never half.
            expected = None if op["op"] == "retire" else op.get("generation")
            assert new == expected, (model_id, version, old, new, op)
        if model_id not in restored:
            continue
        for part in ("active", "routing", "fallback"):
            if after[part] != before[part]:
                assert part in may_change(op, model_id), (model_id, part, before, after, op)


async def check_consistent(repository: Path, rows: np.ndarray[Any, Any]) -> State:
    """Restart from the repository: every version serves, every reference is to a version."""
    async with ModelServer(repository=repository, entry_points=False) as server:
        state = snapshot(server)
        for model_id, model in state.items():
            for version in model["versions"]:
                got = await server.predict(model_id, rows, version=version)
                assert got.shape == (len(rows),)
            versions = set(model["versions"])
            assert model["active"] is None or model["active"] in versions
            routed = server._router.traffic(model_id).strategy.versions()
            assert routed <= versions, (model_id, routed, versions)
            fallback = model["fallback"] or {}
            assert fallback.get("version") in (None, *versions)
            if model["active"] is not None:
                await server.predict(model_id, rows)
    return state


def test_a_killed_server_restarts_into_a_consistent_durable_state(
    tmp_path: Path, logistic_model: Any, forest_model: Any, binary_data: Any
) -> None:
    from turnout.core.execution.convert import load_model

    onnx_dir = tmp_path / "onnx"
    onnx_dir.mkdir()
    for index, model in enumerate((logistic_model, forest_model)):
        onnx_bytes = load_model(model).onnx_bytes
        assert onnx_bytes is not None
        (onnx_dir / f"{index}.onnx").write_bytes(onnx_bytes)
    repository, log = tmp_path / "repo", tmp_path / "children.log"
    rows = binary_data.X_test.to_numpy()[:4]
    rng = random.Random(SEED)
    state: State = {}
    mid_operation = 0
    for iteration in range(ITERATIONS):
        # Mostly during operations; now and then anywhere, restore included.
        kill: float | int = rng.randint(0, 14) if iteration % 4 else rng.uniform(0.2, 1.0)
        run = run_child(repository, onnx_dir, SEED + iteration, log, kill)
        if run.first is not None:
            assert run.first == state  # a restart restores exactly what the last one left
        acked = run.acked if run.acked is not None else state
        mid_operation += run.in_flight is not None
        state = asyncio.run(check_consistent(repository, rows))
        check_durable(state, acked, run.in_flight)
    assert mid_operation >= ITERATIONS // 2
    assert not leftovers(repository), "leftovers survived a restart"


def leftovers(repository: Path) -> list[Path]:
    """Hidden entries a write left; the server's lock file is meant to stay."""
    return [p for p in repository.rglob(".*") if p != repository / ".lock"]


# -- a burst of concurrent deploys, each activating its version ------------------------------


class Announcer:
    """Prints every activation the moment it happens, before anything is written."""

    @hookimpl
    def active_version_changed(self, model_id: str, old: str | None, new: str | None) -> None:
        say("activated", new)


async def burst_child(repository: str, onnx_dir: str, first: int) -> None:
    onnx = [(Path(onnx_dir) / f"{i}.onnx").read_bytes() for i in range(2)]
    server = ModelServer(repository=repository, entry_points=False, plugins=[Announcer()])
    async with server:
        say("ready", server.active_models.get("burst"))

        async def deploy(number: int) -> None:
            version = f"v{number}"
            await server.deploy_model("burst", version, onnx[number % 2], set_active=True)
            say("acked", version)

        await asyncio.gather(*(deploy(first + i) for i in range(BURST)))
        say("done", None)
        await asyncio.sleep(60)  # killed by then


@dataclass
class Burst:
    """What a killed burst child announced after its restore."""

    active_before: str | None
    activated: list[str]
    acked: list[str]


def run_burst(repository: Path, onnx_dir: Path, first: int, log: Path, kill: int) -> Burst:
    """Start a burst child; kill it soon after its ``kill``-th deploy returned."""
    env = {**os.environ, "PYTHONPATH": str(Path(turnout.__file__).parents[1])}
    args = [sys.executable, __file__, "burst", str(repository), str(onnx_dir), str(first)]
    rng = random.Random(SEED + first)
    with (
        log.open("ab") as errors,
        subprocess.Popen(args, stdout=subprocess.PIPE, stderr=errors, text=True, env=env) as child,
    ):
        assert child.stdout is not None
        messages = []
        for message in lines(child.stdout):
            messages.append(message)
            acked = [m for m in messages if m["kind"] == "acked"]
            if message["kind"] == "acked" and len(acked) == kill:
                time.sleep(rng.uniform(0, 0.01))
                child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL, log.read_text()[-3000:]
    ready = next(i for i, m in enumerate(messages) if m["kind"] == "ready")
    after = messages[ready + 1 :]  # the restore announces the activations it makes
    return Burst(
        active_before=messages[ready]["body"],
        activated=[m["body"] for m in after if m["kind"] == "activated"],
        acked=[m["body"] for m in after if m["kind"] == "acked"],
    )


async def restored_burst(repository: Path) -> tuple[set[str], str | None]:
    async with ModelServer(repository=repository, entry_points=False) as server:
        versions = set(server.get_all_models_status().get("burst", {}))
        return versions, server.active_models.get("burst")


def test_a_burst_of_activating_deploys_keeps_an_acknowledged_active_version(
    tmp_path: Path, logistic_model: Any, forest_model: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from turnout.core.execution.convert import load_model

    onnx_dir = tmp_path / "onnx"
    onnx_dir.mkdir()
    for index, model in enumerate((logistic_model, forest_model)):
        onnx_bytes = load_model(model).onnx_bytes
        assert onnx_bytes is not None
        (onnx_dir / f"{index}.onnx").write_bytes(onnx_bytes)
    repository, log = tmp_path / "repo", tmp_path / "children.log"
    acked_ever: set[str] = set()
    for iteration, kill in enumerate(BURST_KILLS):
        burst = run_burst(repository, onnx_dir, iteration * BURST, log, kill)
        versions, active = asyncio.run(restored_burst(repository))
        acked_ever |= set(burst.acked)
        assert acked_ever <= versions, sorted(acked_ever - versions)
        # Every acknowledged deploy made its version active; what is active after the
        # restart is the last of them or one activated after it, and it is there.
        order = [burst.active_before, *burst.activated]
        newest_acked = max((order.index(v) for v in burst.acked), default=0)
        assert active in order[newest_acked:], (active, burst, order[newest_acked:])
        assert active in versions, (active, sorted(versions))
        # Stored, not guessed: restore falls back to the highest version when the stored
        # active one is gone, which would hide a model.json naming a version not yet stored.
        assert "is gone" not in caplog.text
        assert len(burst.acked) < BURST, "killed after the burst"
    assert not leftovers(repository), "leftovers survived a restart"


if __name__ == "__main__":
    if sys.argv[1] == "burst":
        asyncio.run(burst_child(sys.argv[2], sys.argv[3], int(sys.argv[4])))
    else:
        asyncio.run(child(sys.argv[1], sys.argv[2], int(sys.argv[3])))
