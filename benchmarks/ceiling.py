"""The ceiling: a bare aiohttp server that parses each request and returns a fixed answer.

It reads the same requests turnout does (V2 JSON, V2 binary, V1 instances)
into a float32 array, and answers with a fixed body. The harness records
turnout's own answer to each request kind and hands it over
(``PUT /ceiling/answers/{kind}``), so the ceiling replays a body of exactly
the size and type turnout sends; without one it falls back to a built-in
body of the same shape. No validation beyond what parsing needs, no model,
no routing: what any aiohttp server could reach on this machine.

With ``--grpc-port`` it also serves ``ModelInfer`` of the Open Inference
Protocol over gRPC, on a bare ``grpc.aio`` server on the same loop: a
generic handler parses the ``ModelInferRequest`` (turnout's own message
class) and its ``raw_input_contents`` into a float32 array, and answers with
the serialized ``ModelInferResponse`` recorded from turnout for that kind
(``grpc-raw-1``, handed over the same way), or without one a built-in
answer of the same shape. What any grpc.aio server could reach.

Run: ``python -m benchmarks.ceiling --port 8000 [--grpc-port 8001] [--loop uvloop|asyncio]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np
from aiohttp import web

from benchmarks.eventloop import LOOPS, default_loop, use_loop

__all__ = ["create_app", "grpc_handler", "main"]

try:  # the fastest JSON at hand, as any server tuned for speed would use
    import orjson

    _loads: Callable[[bytes], Any] = orjson.loads
except ImportError:  # pragma: no cover - orjson is a turnout dependency
    _loads = json.loads

HEADER_LENGTH = "Inference-Header-Content-Length"
_answers: dict[tuple[str, int], bytes] = {}
# Recorded answers by request kind ("v2-json-32", "v1-1", ...): body and headers.
_recorded: dict[str, tuple[bytes, dict[str, str]]] = {}
_REPLAYED_HEADERS = ("Content-Type", HEADER_LENGTH)


def _v2_answer(rows: int) -> bytes:
    """Return the fixed V2 answer for ``rows`` rows, built once."""
    answer = _answers.get(("v2", rows))
    if answer is None:
        answer = json.dumps(
            {
                "model_name": "rf",
                "model_version": "v1",
                "id": "00000000000000000000000000000000",
                "parameters": {"request_id": "00000000000000000000000000000000"},
                "outputs": [
                    {"name": "label", "shape": [rows], "datatype": "INT64", "data": [1] * rows},
                    {
                        "name": "probabilities",
                        "shape": [rows, 2],
                        "datatype": "FP32",
                        "data": [0.25, 0.75] * rows,
                    },
                ],
            },
            separators=(",", ":"),
        ).encode()
        _answers[("v2", rows)] = answer
    return answer


def _v1_answer(rows: int) -> bytes:
    """Return the fixed V1 answer for ``rows`` rows, built once."""
    answer = _answers.get(("v1", rows))
    if answer is None:
        answer = json.dumps({"predictions": [0.75] * rows}, separators=(",", ":")).encode()
        _answers[("v1", rows)] = answer
    return answer


def _grpc_answer(rows: int) -> bytes:
    """Return the fixed ModelInferResponse for ``rows`` rows, serialized once."""
    answer = _answers.get(("grpc", rows))
    if answer is None:
        from turnout.web.rpc.messages import ModelInferResponse

        response = ModelInferResponse(model_name="rf", model_version="v1", id="0" * 32)
        response.parameters["request_id"].string_param = "0" * 32
        response.outputs.add(name="label", datatype="INT64", shape=[rows])
        response.outputs.add(name="probabilities", datatype="FP32", shape=[rows, 2])
        response.raw_output_contents.append(np.ones(rows, dtype="<i8").tobytes())
        response.raw_output_contents.append(np.full((rows, 2), 0.5, dtype="<f4").tobytes())
        answer = _answers[("grpc", rows)] = response.SerializeToString()
    return answer


def _respond(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="application/json")


def _replay(kind: str, fallback: Callable[[], bytes]) -> web.Response:
    recorded = _recorded.get(kind)
    if recorded is None:
        return _respond(fallback())
    body, headers = recorded
    return web.Response(body=body, headers=headers)


async def record(request: web.Request) -> web.Response:
    """PUT /ceiling/answers/{kind}: the answer to replay for that kind of request."""
    headers = {k: request.headers[k] for k in _REPLAYED_HEADERS if k in request.headers}
    _recorded[request.match_info["kind"]] = (await request.read(), headers)
    return _respond(b"{}")


async def infer(request: web.Request) -> web.Response:
    """POST /v2/models/{model}/infer: parse the tensor, answer with a fixed body."""
    data = await request.read()
    length = request.headers.get(HEADER_LENGTH)
    if length is None:
        tensor = _loads(data)["inputs"][0]
        array = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
    else:
        split = int(length)
        tensor = _loads(data[:split])["inputs"][0]
        array = np.frombuffer(data, dtype="<f4", offset=split).reshape(tensor["shape"])
    rows = len(array)
    kind = f"v2-{'json' if length is None else 'binary'}-{rows}"
    return _replay(kind, lambda: _v2_answer(rows))


async def predict(request: web.Request) -> web.Response:
    """POST /v1/models/{model}:predict: parse the instances, answer with a fixed body."""
    instances = _loads(await request.read())["instances"]
    rows = len(np.asarray(instances, dtype=np.float32))
    return _replay(f"v1-{rows}", lambda: _v1_answer(rows))


async def model_infer(request: Any, context: grpc.aio.ServicerContext) -> bytes:
    """ModelInfer: read the raw tensor, answer with fixed bytes (sent with no serializer)."""
    shape = request.inputs[0].shape
    array = np.frombuffer(request.raw_input_contents[0], dtype="<f4").reshape(shape)
    rows = len(array)
    recorded = _recorded.get(f"grpc-raw-{rows}")
    return _grpc_answer(rows) if recorded is None else recorded[0]


def grpc_handler() -> grpc.GenericRpcHandler:
    """Return the ceiling's gRPC service: ModelInfer only, its request parsed, its answer bytes."""
    from turnout.web.rpc.messages import SERVICE, ModelInferRequest

    infer = grpc.unary_unary_rpc_method_handler(
        model_infer, request_deserializer=ModelInferRequest.FromString
    )
    return grpc.method_handlers_generic_handler(SERVICE, {"ModelInfer": infer})


async def ready(request: web.Request) -> web.Response:
    """GET /v2/health/ready."""
    return _respond(b'{"ready":true}')


def create_app() -> web.Application:
    """Return the ceiling's aiohttp application."""
    app = web.Application()
    app.router.add_post("/v2/models/{model}/infer", infer)
    app.router.add_post("/v1/models/{model:[^{}/:]+}:predict", predict)
    app.router.add_get("/v2/health/ready", ready)
    app.router.add_put("/ceiling/answers/{kind}", record)
    return app


def main(argv: list[str] | None = None) -> None:
    """Serve the ceiling until killed."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ceiling")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, default=None, help="also serve ModelInfer here")
    parser.add_argument("--loop", choices=LOOPS, default=default_loop())
    args = parser.parse_args(argv)
    use_loop(args.loop)
    asyncio.run(_serve(args.host, args.port, args.grpc_port))


async def _serve(host: str, port: int, grpc_port: int | None) -> None:
    if grpc_port is not None:  # first, so that HTTP answering ready means both are up
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((grpc_handler(),))
        server.add_insecure_port(f"{host}:{grpc_port}")
        await server.start()
    runner = web.AppRunner(create_app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    main()
