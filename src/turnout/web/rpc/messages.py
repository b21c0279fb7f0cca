"""The Open Inference Protocol's gRPC messages, built from the committed descriptor.

The classes live in a descriptor pool of their own: tritonclient and the
KServe SDK register messages of the same names (package ``inference``) in
protobuf's process-wide pool, and a second registration there would fail.
On the wire only field numbers and the service path count, so a client
built from either copy talks to this one.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from turnout.web.rpc.descriptor import FILE_DESCRIPTOR

__all__ = [
    "METHODS",
    "SERVICE",
    "InferBatchStatistics",
    "InferParameter",
    "InferStatistics",
    "InferTensorContents",
    "ModelConfig",
    "ModelConfigRequest",
    "ModelConfigResponse",
    "ModelDynamicBatching",
    "ModelInferRequest",
    "ModelInferResponse",
    "ModelInput",
    "ModelMetadataRequest",
    "ModelMetadataResponse",
    "ModelOutput",
    "ModelParameter",
    "ModelReadyRequest",
    "ModelReadyResponse",
    "ModelStatistics",
    "ModelStatisticsRequest",
    "ModelStatisticsResponse",
    "RepositoryIndexRequest",
    "RepositoryIndexResponse",
    "RepositoryModelLoadRequest",
    "RepositoryModelLoadResponse",
    "RepositoryModelUnloadRequest",
    "RepositoryModelUnloadResponse",
    "ServerLiveRequest",
    "ServerLiveResponse",
    "ServerMetadataRequest",
    "ServerMetadataResponse",
    "ServerReadyRequest",
    "ServerReadyResponse",
    "StatisticDuration",
]

_FILE = descriptor_pb2.FileDescriptorProto.FromString(FILE_DESCRIPTOR)
_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_FILE)
_PACKAGE = _FILE.package


def _message(name: str) -> Any:
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{_PACKAGE}.{name}"))


SERVICE = f"{_PACKAGE}.GRPCInferenceService"
# RPC name -> (request class, response class), as the .proto declares them.
METHODS: dict[str, tuple[Any, Any]] = {
    method.name: (
        message_factory.GetMessageClass(method.input_type),
        message_factory.GetMessageClass(method.output_type),
    )
    for method in _POOL.FindServiceByName(SERVICE).methods
}

InferBatchStatistics = _message("InferBatchStatistics")
InferParameter = _message("InferParameter")
InferStatistics = _message("InferStatistics")
InferTensorContents = _message("InferTensorContents")
ModelConfig = _message("ModelConfig")
ModelConfigRequest = _message("ModelConfigRequest")
ModelConfigResponse = _message("ModelConfigResponse")
ModelDynamicBatching = _message("ModelDynamicBatching")
ModelInferRequest = _message("ModelInferRequest")
ModelInferResponse = _message("ModelInferResponse")
ModelInput = _message("ModelInput")
ModelMetadataRequest = _message("ModelMetadataRequest")
ModelMetadataResponse = _message("ModelMetadataResponse")
ModelOutput = _message("ModelOutput")
ModelParameter = _message("ModelParameter")
ModelReadyRequest = _message("ModelReadyRequest")
ModelReadyResponse = _message("ModelReadyResponse")
ModelStatistics = _message("ModelStatistics")
ModelStatisticsRequest = _message("ModelStatisticsRequest")
ModelStatisticsResponse = _message("ModelStatisticsResponse")
RepositoryIndexRequest = _message("RepositoryIndexRequest")
RepositoryIndexResponse = _message("RepositoryIndexResponse")
RepositoryModelLoadRequest = _message("RepositoryModelLoadRequest")
RepositoryModelLoadResponse = _message("RepositoryModelLoadResponse")
RepositoryModelUnloadRequest = _message("RepositoryModelUnloadRequest")
RepositoryModelUnloadResponse = _message("RepositoryModelUnloadResponse")
ServerLiveRequest = _message("ServerLiveRequest")
ServerLiveResponse = _message("ServerLiveResponse")
ServerMetadataRequest = _message("ServerMetadataRequest")
ServerMetadataResponse = _message("ServerMetadataResponse")
ServerReadyRequest = _message("ServerReadyRequest")
ServerReadyResponse = _message("ServerReadyResponse")
StatisticDuration = _message("StatisticDuration")
