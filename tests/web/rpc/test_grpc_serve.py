"""``turnout serve --grpc-port``: the gRPC service of a real server process, one worker or two."""

from __future__ import annotations

import asyncio
import re
import signal

import grpc
import numpy as np
import pytest
from triton_grpc import triton_aio

from support import read_banner, turnout_serve

GRPC_LINE = re.compile(r"Open Inference Protocol over gRPC on (\S+)")


async def grpc_address(process: asyncio.subprocess.Process) -> str:
    """Read the banner up to the gRPC line; return the address it names."""
    lines = await read_banner(process, "over gRPC on")
    found = GRPC_LINE.search(lines[-1])
    assert found is not None, lines
    return found.group(1)


async def demo_infer(address: str) -> tuple[str, float]:
    """One demo row over a fresh channel: the version that served it and its probability."""
    client = triton_aio.InferenceServerClient(url=address)
    try:
        assert await client.is_server_ready()
        metadata = await client.get_model_metadata("breast_cancer", as_json=True)
        width = int(metadata["inputs"][0]["shape"][1])
        tensor = triton_aio.InferInput(metadata["inputs"][0]["name"], [1, width], "FP32")
        tensor.set_data_from_numpy(np.ones((1, width), np.float32))
        result = await client.infer("breast_cancer", [tensor])
        return result.get_response().model_version, float(result.as_numpy("probabilities")[0, 1])
    finally:
        await client.close()


async def test_serve_grpc_port_serves_the_demo_and_drains_on_sigterm() -> None:
    async with turnout_serve("--demo", "--grpc-port", "0") as process:
        address = await grpc_address(process)
        version, probability = await demo_infer(address)
        assert version in ("v1", "v2")
        assert 0.0 <= probability <= 1.0
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 15) == 0
        assert process.stderr is not None
        assert "Traceback" not in (await process.stderr.read()).decode()
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ServerLive")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call(b"", timeout=1)
    assert refused.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


async def test_every_worker_serves_the_grpc_port() -> None:
    async with turnout_serve("--demo", "--workers", "2", "--grpc-port", "0") as process:
        address = await grpc_address(process)
        # The second worker starts once the first serves: wait for the supervisor to say so.
        assert process.stderr is not None
        errors = ""
        while "workers started" not in errors:
            line = await asyncio.wait_for(process.stderr.readline(), 60)
            assert line, errors
            errors += line.decode()
        # Fresh channels: the kernel spreads connections over both workers' sockets.
        answers = [await demo_infer(address) for _ in range(6)]
        assert all(version in ("v1", "v2") for version, _ in answers)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
        errors += (await process.stderr.read()).decode()
    assert "2 workers started" in errors
    # A worker that could not bind the gRPC port would have died and been restarted.
    assert "restarted" not in errors
    assert "Traceback" not in errors
