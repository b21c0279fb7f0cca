"""The committed descriptor is inference.proto's, and speaks the protocol clients speak."""

from __future__ import annotations

from google.protobuf import descriptor_pb2
from triton_grpc import service_pb2

from turnout.web.rpc import messages
from turnout.web.rpc.descriptor import FILE_DESCRIPTOR
from turnout.web.rpc.generate import compile_proto


def test_the_committed_descriptor_is_the_protos() -> None:
    committed = descriptor_pb2.FileDescriptorProto.FromString(FILE_DESCRIPTOR)
    fresh = descriptor_pb2.FileDescriptorProto.FromString(compile_proto())
    assert committed == fresh, "run: python -m turnout.web.rpc.generate"


def test_every_message_and_rpc_matches_tritonclients_on_the_wire() -> None:
    theirs = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    for name, (request, response) in messages.METHODS.items():
        method = theirs.methods_by_name[name]
        for ours, their in ((request, method.input_type), (response, method.output_type)):
            assert _wire(ours.DESCRIPTOR) == _wire(their), (name, their.full_name)


def _wire(message: object) -> dict[str, object]:
    """A message's fields as the wire sees them: number, type and label, nested types too."""
    fields = {}
    for field in message.fields:  # type: ignore[attr-defined]
        nested = _wire(field.message_type) if field.message_type is not None else None
        fields[field.name] = (field.number, field.type, field.label, nested)
    return fields
