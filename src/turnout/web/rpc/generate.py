"""Regenerate ``descriptor.py`` from ``inference.proto``: ``python -m turnout.web.rpc.generate``.

protoc (grpcio-tools' copy) compiles the .proto to a serialized
``FileDescriptorProto``, written as a bytes literal. turnout builds its
message classes from that at import time, in a descriptor pool of its own
(:mod:`turnout.web.rpc.messages`), rather than committing protoc's Python output:
that output checks it runs on a protobuf at least as new as the protoc that
wrote it, and registers its messages in the process-wide pool, where
tritonclient's and the KServe SDK's copies of the same ``inference``
messages already live. A descriptor works with any protobuf 4.21 or newer,
beside either. ``tests/web/rpc/test_grpc_descriptor.py`` checks the committed
descriptor is the .proto's.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

__all__ = ["PROTO", "compile_proto", "main"]

PROTO = Path(__file__).with_name("inference.proto")
_TARGET = Path(__file__).with_name("descriptor.py")

_HEADER = '''"""The Open Inference Protocol's gRPC service, as a serialized FileDescriptorProto.

Generated from inference.proto by ``python -m turnout.web.rpc.generate``; do not edit.
"""

FILE_DESCRIPTOR = (
'''


def compile_proto(proto: Path = PROTO) -> bytes:
    """Return ``proto`` compiled to a serialized FileDescriptorProto (needs grpcio-tools)."""
    from google.protobuf import descriptor_pb2
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.binpb"
        status = protoc.main(
            ["protoc", f"-I{proto.parent}", f"--descriptor_set_out={out}", proto.name]
        )
        if status != 0:
            raise RuntimeError(f"protoc failed on {proto.name} (exit status {status})")
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    (file,) = files
    return bytes(file.SerializeToString(deterministic=True))


def main() -> int:
    """Write descriptor.py next to this module."""
    data = compile_proto()
    # Cut at byte boundaries: a repr() wrapped as text could split an escape.
    chunks = [data[i : i + 40] for i in range(0, len(data), 40)]
    body = "".join(f"    {chunk!r}\n" for chunk in chunks)
    _TARGET.write_text(_HEADER + body + ")\n", encoding="utf-8")
    print(f"wrote {_TARGET} ({len(data)} bytes of descriptor)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
