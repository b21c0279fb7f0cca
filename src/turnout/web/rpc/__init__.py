"""The Open Inference Protocol over gRPC: ``turnout serve --grpc-port`` (docs/grpc.md).

:mod:`~turnout.web.rpc.service` answers the RPCs through the HTTP side's own
functions, :mod:`~turnout.web.rpc.server` runs it on ``grpc.aio`` beside the
HTTP listeners, :mod:`~turnout.web.rpc.messages` builds the messages from
the committed descriptor.
"""
