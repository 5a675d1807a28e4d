"""Generated stubs of the ``datasentinel.scoring.v1`` API (see the .proto next to them)."""

from ds_serving.proto.datasentinel.scoring.v1 import scoring_pb2, scoring_pb2_grpc

SERVICE_NAME: str = scoring_pb2.DESCRIPTOR.services_by_name["Scorer"].full_name

__all__ = ["SERVICE_NAME", "scoring_pb2", "scoring_pb2_grpc"]
