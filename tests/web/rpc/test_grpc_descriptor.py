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
        assert request.DESCRIPTOR.full_name == method.input_type.full_name, name
        assert response.DESCRIPTOR.full_name == method.output_type.full_name, name
        # A request is read whole: a field a client sets and turnout lacks would be lost.
        assert _wire(request.DESCRIPTOR) == _wire(method.input_type), name
        # A response may declare fewer fields (ModelConfig is 8 of Triton's 25): those it
        # declares must be the client's, number, type and label, all the way down.
        _assert_within(response.DESCRIPTOR, method.output_type, name)


def test_the_trimmed_responses_are_trimmed_on_purpose() -> None:
    """Which responses leave out fields of Triton's, so a new omission is a decision."""
    theirs = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    trimmed: dict[str, int] = {}
    for name, (_, response) in messages.METHODS.items():
        trimmed.update(_missing(response.DESCRIPTOR, theirs.methods_by_name[name].output_type))
    assert trimmed == {
        "inference.ModelConfig": 17,
        "inference.ModelInput": 6,
        "inference.ModelOutput": 4,
        "inference.ModelDynamicBatching": 6,
        "inference.ModelStatistics": 2,  # memory_usage and response_stats
    }


def _wire(message: object) -> dict[str, object]:
    """A message's fields as the wire sees them: number, type and label, nested types too."""
    fields = {}
    for field in message.fields:  # type: ignore[attr-defined]
        nested = _wire(field.message_type) if field.message_type is not None else None
        enum = _values(field.enum_type) if field.enum_type is not None else None
        fields[field.name] = (field.number, field.type, field.label, nested, enum)
    return fields


def _values(enum: object) -> dict[str, int]:
    return {value.name: value.number for value in enum.values}  # type: ignore[attr-defined]


def _assert_within(ours: object, theirs: object, where: str) -> None:
    """Every field of ``ours`` is in ``theirs`` under the same name, number, type and label."""
    their_fields = theirs.fields_by_name  # type: ignore[attr-defined]
    for field in ours.fields:  # type: ignore[attr-defined]
        at = f"{where}: {field.full_name}"
        assert field.name in their_fields, at
        their = their_fields[field.name]
        assert (field.number, field.type, field.label) == (
            their.number,
            their.type,
            their.label,
        ), at
        assert (field.containing_oneof is None) == (their.containing_oneof is None), at
        if field.enum_type is not None:
            assert _values(field.enum_type) == _values(their.enum_type), at
        if field.message_type is not None:
            assert field.message_type.full_name == their.message_type.full_name, at
            _assert_within(field.message_type, their.message_type, where)


def _missing(ours: object, theirs: object) -> dict[str, int]:
    """Message name -> how many of the client's fields ``ours`` leaves out, nested too."""
    found = {}
    left_out = len(theirs.fields) - len(ours.fields)  # type: ignore[attr-defined]
    if left_out:
        found[ours.full_name] = left_out  # type: ignore[attr-defined]
    for field in ours.fields:  # type: ignore[attr-defined]
        if field.message_type is not None:
            their = theirs.fields_by_name[field.name]  # type: ignore[attr-defined]
            found.update(_missing(field.message_type, their.message_type))
    return found
