"""tritonclient's gRPC clients, imported so that they live beside the KServe SDK in one process.

Both packages register the Open Inference Protocol's messages under the same
names (package ``inference``, from .proto files of different names) in
protobuf's process-wide descriptor pool, and whichever is imported second
fails with "duplicate symbol". tritonclient's generated modules take the
pool from ``descriptor_pool.Default()`` as they are imported, so for the
length of that import it hands them a pool of their own. Nothing of the
clients' surface changes; turnout's own messages live in a private pool
for the same reason (:mod:`turnout.web.rpc.messages`).
"""

from __future__ import annotations

# Imported first, so that the well-known types stay in the process-wide pool.
import google.protobuf.json_format  # noqa: F401
from google.protobuf import descriptor_pool

__all__ = ["model_config_pb2", "service_pb2", "triton", "triton_aio"]

_OWN_POOL = descriptor_pool.DescriptorPool()
_default = descriptor_pool.Default
descriptor_pool.Default = lambda: _OWN_POOL
try:
    import tritonclient.grpc as triton
    import tritonclient.grpc.aio as triton_aio
    from tritonclient.grpc import model_config_pb2, service_pb2
finally:
    descriptor_pool.Default = _default
